//! Events: each is a series (one UID: master plus overrides) stored as iCalendar, read and written as
//! JSON or as iCalendar (`text/calendar`), and the window query over the occurrence index.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use calbridge_model::stored::{OccurrenceFields, SeriesFields, calendar_with};
use calbridge_store::{
    CalendarId, NewSeries, OccurrenceCursor, OccurrenceQuery, Series, SeriesId, SeriesUpdate,
    StoreError,
};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{CommonErrors, audit, etag, if_match, parse_id, store_error};
use crate::AppState;
use crate::auth::{Authorized, EventsRead, EventsWrite, Principal};
use crate::error::ApiError;
use crate::extract::QueryParams;
use crate::series::{self, EventInput};

const TEXT_CALENDAR: &str = "text/calendar; charset=utf-8";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_occurrences, create_event))
        .routes(routes!(get_event, update_event, delete_event))
}

/// An event (series) with its identity and version.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    pub id: String,
    pub calendar_id: String,
    #[serde(flatten)]
    pub fields: SeriesFields,
    /// Increases on every change; the `ETag` is this number in quotes.
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// One occurrence in a window listing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OccurrenceView {
    /// The event (series) id: `GET /v1/calendar/events/{id}` reads the whole series.
    pub id: String,
    pub calendar_id: String,
    pub uid: String,
    /// The original start of this occurrence (RFC 3339 UTC, or a date for all-day series); absent for
    /// events that do not recur.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recurrence_id: Option<String>,
    pub summary: Option<String>,
    /// RFC 3339 in the requested `tz` (UTC by default); a date for all-day events.
    pub start: String,
    pub end: String,
    pub all_day: bool,
    /// The zone the event is written in (absent for floating and all-day events).
    pub time_zone: Option<String>,
    pub status: Option<String>,
    pub location: Option<String>,
    pub transparency: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OccurrencePage {
    pub items: Vec<OccurrenceView>,
    /// Pass as `cursor` (with the same window) for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WindowQuery {
    /// Window start: RFC 3339 (`2026-03-01T00:00:00Z`), or a date / local date-time read in `tz`.
    pub start: String,
    /// Window end (exclusive), same forms.
    pub end: String,
    /// Only this calendar.
    pub calendar_id: Option<String>,
    /// IANA (or Windows) zone to express times in; UTC by default.
    pub tz: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// The calendar for an iCalendar body (JSON bodies carry `calendar_id`).
    pub calendar_id: Option<String>,
}

enum Format {
    Json,
    Ical,
}

fn wants(headers: &HeaderMap) -> Result<Format, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(Format::Json);
    };
    let accept = accept.to_ascii_lowercase();
    if accept.contains("text/calendar") && !accept.contains("application/json") {
        return Ok(Format::Ical);
    }
    if accept.is_empty()
        || accept.contains("json")
        || accept.contains("*/*")
        || accept.contains("application/*")
    {
        return Ok(Format::Json);
    }
    if accept.contains("text/*") {
        return Ok(Format::Ical);
    }
    Err(ApiError::NotAcceptable(
        "events are available as application/json or text/calendar; ask for one in Accept".into(),
    ))
}

fn body_format(headers: &HeaderMap) -> Result<Format, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") || content_type.contains("+json") {
        Ok(Format::Json)
    } else if content_type.starts_with("text/calendar") {
        Ok(Format::Ical)
    } else {
        Err(ApiError::UnsupportedMediaType(
            "send an event as application/json or as text/calendar".into(),
        ))
    }
}

fn view(series: Series) -> Result<EventView, ApiError> {
    let fields: SeriesFields =
        serde_json::from_str(&series.model_json).map_err(ApiError::internal)?;
    Ok(EventView {
        id: series.id.to_string(),
        calendar_id: series.calendar_id.to_string(),
        fields,
        version: series.version,
        created_at: series.created_at.to_string(),
        updated_at: series.updated_at.to_string(),
    })
}

fn respond(status: StatusCode, series: Series, format: &Format) -> Result<Response, ApiError> {
    let tag = etag(series.version);
    let location = HeaderValue::from_str(&format!("/v1/calendar/events/{}", series.id))
        .map_err(ApiError::internal)?;
    let mut response = match format {
        Format::Ical => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(TEXT_CALENDAR),
            )],
            series.ical,
        )
            .into_response(),
        Format::Json => (status, axum::Json(view(series)?)).into_response(),
    };
    response.headers_mut().insert(header::ETAG, tag);
    if status == StatusCode::CREATED {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn calendar_zone(
    state: &AppState,
    principal: &Principal,
    calendar: CalendarId,
) -> Result<jiff::tz::TimeZone, ApiError> {
    let calendar = state
        .store
        .get_calendar(principal.tenant, calendar)
        .await
        .map_err(|e| store_error("calendar", e))?;
    Ok(jiff::tz::TimeZone::get(&calendar.time_zone).unwrap_or(jiff::tz::TimeZone::UTC))
}

fn parse_json(body: &Bytes) -> Result<EventInput, ApiError> {
    serde_json::from_slice::<EventInput>(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
        } else {
            ApiError::unprocessable("invalid_body", format!("the event is not valid: {e}"))
        }
    })
}

/// Create an event from JSON or iCalendar.
#[utoipa::path(post, path = "/v1/calendar/events", tag = "events",
    security(("api_key" = [])),
    params(CreateQuery),
    request_body(content(
        (EventInput = "application/json"),
        (String = "text/calendar", example = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//example//EN\r\nBEGIN:VEVENT\r\nUID:demo-1\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260301T090000Z\r\nDTEND:20260301T100000Z\r\nSUMMARY:Demo\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    )),
    responses((status = 201, body = EventView, headers(("ETag" = String), ("Location" = String))), CommonErrors))]
pub async fn create_event(
    auth: Authorized<EventsWrite>,
    State(state): State<AppState>,
    QueryParams(query): QueryParams<CreateQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let principal = auth.principal();
    let answer_as = wants(&headers)?;
    let max = state.config.limits.max_body_bytes;
    let (calendar_text, calendar) = match body_format(&headers)? {
        Format::Json => {
            let input = parse_json(&body)?;
            let calendar_text =
                input
                    .calendar_id
                    .clone()
                    .or(query.calendar_id)
                    .ok_or_else(|| {
                        ApiError::unprocessable(
                            "missing_calendar_id",
                            "give the event's calendar_id",
                        )
                    })?;
            let uid = match &input.uid {
                Some(uid) if !uid.trim().is_empty() => uid.trim().to_owned(),
                Some(_) => {
                    return Err(ApiError::unprocessable(
                        "invalid_uid",
                        "uid must not be empty",
                    ));
                }
                None => format!("{}@calbridge", uuid::Uuid::now_v7()),
            };
            let series = series::series_from_json(&input, None, uid)?;
            (calendar_text, calendar_with(series, &[]))
        }
        Format::Ical => {
            let calendar_text = query.calendar_id.ok_or_else(|| {
                ApiError::unprocessable(
                    "missing_calendar_id",
                    "give the calendar as ?calendar_id=… with an iCalendar body",
                )
            })?;
            (calendar_text, series::calendar_from_ical(&body, max)?)
        }
    };
    let calendar_id: CalendarId = parse_id(&calendar_text, "calendar")?;
    let zone = calendar_zone(&state, principal, calendar_id).await?;
    let prepared = series::prepare(&calendar, &zone)?;
    let created = state
        .store
        .create_series(
            principal.tenant,
            NewSeries {
                calendar_id,
                uid: prepared.uid.clone(),
                ical: prepared.ical,
                model_json: prepared.model_json,
                hash: prepared.hash,
                occurrences: prepared.occurrences,
            },
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::Conflict(format!(
                "an event with UID `{}` already exists in this calendar; update it instead",
                prepared.uid
            )),
            other => store_error("calendar", other),
        })?;
    audit(
        &state,
        principal,
        "event.created",
        created.id,
        serde_json::json!({"uid": created.uid, "calendar_id": created.calendar_id, "version": created.version}),
    )
    .await?;
    respond(StatusCode::CREATED, created, &answer_as)
}

async fn live_series(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<Series, ApiError> {
    let id: SeriesId = parse_id(id, "event")?;
    let series = state
        .store
        .get_series(principal.tenant, id)
        .await
        .map_err(|e| store_error("event", e))?;
    if series.deleted_at.is_some() {
        return Err(ApiError::NotFound("event".into()));
    }
    Ok(series)
}

/// Read an event as JSON or (with `Accept: text/calendar`) as iCalendar.
#[utoipa::path(get, path = "/v1/calendar/events/{id}", tag = "events",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Event id")),
    responses((status = 200, headers(("ETag" = String)), content((EventView = "application/json"), (String = "text/calendar"))), CommonErrors))]
pub async fn get_event(
    auth: Authorized<EventsRead>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = wants(&headers)?;
    let series = live_series(&state, auth.principal(), &id).await?;
    respond(StatusCode::OK, series, &format)
}

/// Replace an event (JSON updates the master's fields and keeps the rest; iCalendar replaces the series).
/// Send `If-Match` with the ETag you read: a stale one gets 412 and changes nothing.
#[utoipa::path(put, path = "/v1/calendar/events/{id}", tag = "events",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Event id"),
           ("If-Match" = Option<String>, Header, description = "ETag of the version being replaced")),
    request_body(content((EventInput = "application/json"), (String = "text/calendar"))),
    responses((status = 200, body = EventView, headers(("ETag" = String))), CommonErrors))]
pub async fn update_event(
    auth: Authorized<EventsWrite>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let principal = auth.principal();
    let answer_as = wants(&headers)?;
    let expected = if_match(&headers)?;
    let format = body_format(&headers)?;
    let max = state.config.limits.max_body_bytes;
    let json_input = match format {
        Format::Json => Some(parse_json(&body)?),
        Format::Ical => None,
    };
    let incoming_ical = match format {
        Format::Ical => Some(series::calendar_from_ical(&body, max)?),
        Format::Json => None,
    };
    let current = live_series(&state, principal, &id).await?;
    if let Some(expected) = expected
        && expected != current.version
    {
        return Err(ApiError::PreconditionFailed {
            current: format!("\"{}\"", current.version),
        });
    }
    let calendar = match (json_input, incoming_ical) {
        (Some(input), _) => {
            if input
                .calendar_id
                .as_deref()
                .is_some_and(|c| c != current.calendar_id.to_string())
            {
                return Err(ApiError::unprocessable(
                    "calendar_mismatch",
                    "an event cannot move between calendars; delete and create it",
                ));
            }
            if input.uid.as_deref().is_some_and(|u| u != current.uid) {
                return Err(ApiError::unprocessable(
                    "uid_mismatch",
                    format!("this event's UID is `{}`; a UID cannot change", current.uid),
                ));
            }
            let stored = series::calendar_from_ical(current.ical.as_bytes(), usize::MAX)
                .map_err(ApiError::internal)?;
            let base = stored.series().first().cloned();
            calendar_with(
                series::series_from_json(&input, base, current.uid.clone())?,
                &[],
            )
        }
        (None, Some(calendar)) => calendar,
        (None, None) => return Err(ApiError::internal("no body format")),
    };
    let zone = calendar_zone(&state, principal, current.calendar_id).await?;
    let prepared = series::prepare(&calendar, &zone)?;
    if prepared.uid != current.uid {
        return Err(ApiError::unprocessable(
            "uid_mismatch",
            format!("this event's UID is `{}`; a UID cannot change", current.uid),
        ));
    }
    let updated = state
        .store
        .update_series(
            principal.tenant,
            current.id,
            expected.unwrap_or(current.version),
            SeriesUpdate {
                ical: prepared.ical,
                model_json: prepared.model_json,
                hash: prepared.hash,
                occurrences: prepared.occurrences,
            },
        )
        .await
        .map_err(|e| store_error("event", e))?;
    audit(
        &state,
        principal,
        "event.updated",
        updated.id,
        serde_json::json!({"uid": updated.uid, "version": updated.version}),
    )
    .await?;
    respond(StatusCode::OK, updated, &answer_as)
}

/// Delete an event (the whole series).
#[utoipa::path(delete, path = "/v1/calendar/events/{id}", tag = "events",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Event id"),
           ("If-Match" = Option<String>, Header, description = "ETag of the version being deleted")),
    responses((status = 204, description = "Deleted"), CommonErrors))]
pub async fn delete_event(
    auth: Authorized<EventsWrite>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let principal = auth.principal();
    let expected = if_match(&headers)?;
    let current = live_series(&state, principal, &id).await?;
    let deleted = state
        .store
        .delete_series(
            principal.tenant,
            current.id,
            expected.unwrap_or(current.version),
        )
        .await
        .map_err(|e| store_error("event", e))?;
    audit(
        &state,
        principal,
        "event.deleted",
        deleted.id,
        serde_json::json!({"uid": deleted.uid, "version": deleted.version}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Occurrences overlapping a window, recurring series expanded, in start order, with cursor pagination.
#[utoipa::path(get, path = "/v1/calendar/events", tag = "events",
    security(("api_key" = [])),
    params(WindowQuery),
    responses((status = 200, body = OccurrencePage), CommonErrors))]
pub async fn list_occurrences(
    auth: Authorized<EventsRead>,
    State(state): State<AppState>,
    QueryParams(query): QueryParams<WindowQuery>,
) -> Result<axum::Json<OccurrencePage>, ApiError> {
    let principal = auth.principal();
    let (zone, _) = match query.tz.as_deref() {
        Some(name) => series::resolve_zone(name).map_err(|_| {
            ApiError::bad_request(
                "unknown_time_zone",
                format!(
                    "tz `{name}` is not a known time zone; use an IANA name such as Europe/Berlin"
                ),
            )
        })?,
        None => (jiff::tz::TimeZone::UTC, "UTC".to_owned()),
    };
    let bound = |raw: &str, which: &str| {
        calbridge_model::occurrences::parse_bound(raw.trim(), &zone).map_err(|_| {
            ApiError::bad_request(
                "invalid_window",
                format!("{which} `{raw}` is not a time; use RFC 3339 such as 2026-03-01T00:00:00Z, or a date"),
            )
        })
    };
    let start: Timestamp = bound(&query.start, "start")?;
    let end: Timestamp = bound(&query.end, "end")?;
    if end <= start {
        return Err(ApiError::bad_request(
            "invalid_window",
            "end must be after start",
        ));
    }
    let max_days = i64::from(state.config.limits.max_window_days);
    if end.duration_since(start) > jiff::SignedDuration::from_hours(24 * max_days) {
        return Err(ApiError::bad_request(
            "invalid_window",
            format!(
                "the window is wider than {max_days} days; query a narrower window and page through it"
            ),
        ));
    }
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > state.config.limits.max_page_size.min(1000) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!(
                "limit must be between 1 and {}",
                state.config.limits.max_page_size.min(1000)
            ),
        ));
    }
    let calendar_id = match query.calendar_id.as_deref() {
        Some(text) => {
            let id: CalendarId = parse_id(text, "calendar")?;
            state
                .store
                .get_calendar(principal.tenant, id)
                .await
                .map_err(|e| store_error("calendar", e))?;
            Some(id)
        }
        None => None,
    };
    let after = match query.cursor.as_deref() {
        Some(token) => Some(OccurrenceCursor::parse(token).map_err(|_| {
            ApiError::bad_request(
                "invalid_cursor",
                "cursor must be a next_cursor this endpoint returned",
            )
        })?),
        None => None,
    };
    let page = state
        .store
        .list_occurrences(
            principal.tenant,
            &OccurrenceQuery {
                start,
                end,
                calendar_id,
                after,
                limit,
            },
        )
        .await
        .map_err(|e| store_error("occurrences", e))?;
    let items = page
        .items
        .into_iter()
        .map(|o| {
            // Written by `calbridge_model::stored::prepare`; a row that does not read shows what the index
            // itself knows.
            let data: OccurrenceFields = o
                .data
                .as_deref()
                .and_then(|d| serde_json::from_str(d).ok())
                .unwrap_or_default();
            let (start, end) = if o.all_day {
                (
                    data.start_date
                        .unwrap_or_else(|| o.start.to_zoned(zone.clone()).date().to_string()),
                    data.end_date
                        .unwrap_or_else(|| o.end.to_zoned(zone.clone()).date().to_string()),
                )
            } else {
                (rfc3339_in(o.start, &zone), rfc3339_in(o.end, &zone))
            };
            OccurrenceView {
                id: o.series_id.to_string(),
                calendar_id: o.calendar_id.to_string(),
                uid: data.uid.unwrap_or_default(),
                recurrence_id: o.recurrence_id,
                summary: data.summary,
                start,
                end,
                all_day: o.all_day,
                time_zone: data.time_zone,
                status: data.status,
                location: data.location,
                transparency: data.transparency,
            }
        })
        .collect();
    Ok(axum::Json(OccurrencePage {
        items,
        next_cursor: page.next.map(|c| c.to_token()),
    }))
}

fn rfc3339_in(ts: Timestamp, zone: &jiff::tz::TimeZone) -> String {
    let zoned = ts.to_zoned(zone.clone());
    if zoned.offset().seconds() == 0 {
        zoned.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}
