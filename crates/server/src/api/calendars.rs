//! Local calendars: the application's own calendars, which connections later keep in step with providers.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use calbridge_store::{Calendar, CalendarId, NewCalendar};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{CommonErrors, audit, etag, if_match, parse_id, store_error};
use crate::AppState;
use crate::auth::{Authorized, EventsRead, EventsWrite};
use crate::error::ApiError;
use crate::extract::JsonBody;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_calendars, create_calendar))
        .routes(routes!(get_calendar, update_calendar, delete_calendar))
}

/// A local calendar.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CalendarView {
    pub id: String,
    pub name: String,
    /// IANA zone floating and all-day events of this calendar are shown in.
    pub time_zone: String,
    pub owner: Option<String>,
    /// Increases on every change; the `ETag` is this number in quotes.
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Calendar> for CalendarView {
    fn from(c: Calendar) -> Self {
        Self {
            id: c.id.to_string(),
            name: c.name,
            time_zone: c.time_zone,
            owner: c.owner,
            version: c.version,
            created_at: c.created_at.to_string(),
            updated_at: c.updated_at.to_string(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CalendarList {
    pub items: Vec<CalendarView>,
}

/// The writable fields of a calendar.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CalendarInput {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// IANA time zone id; defaults to `UTC`.
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
}

impl CalendarInput {
    fn validate(self) -> Result<NewCalendar, ApiError> {
        let name = self.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(ApiError::unprocessable(
                "invalid_name",
                "name must be 1 to 200 characters",
            ));
        }
        let time_zone = self.time_zone.unwrap_or_else(|| "UTC".to_owned());
        if jiff::tz::TimeZone::get(&time_zone).is_err() {
            return Err(ApiError::unprocessable(
                "unknown_time_zone",
                format!("`{time_zone}` is not an IANA time zone (e.g. Europe/Berlin)"),
            ));
        }
        if self.owner.as_ref().is_some_and(|o| o.chars().count() > 320) {
            return Err(ApiError::unprocessable(
                "invalid_owner",
                "owner must be at most 320 characters",
            ));
        }
        Ok(NewCalendar {
            name,
            time_zone,
            owner: self.owner,
        })
    }
}

fn with_etag(status: StatusCode, calendar: Calendar) -> Response {
    let tag = etag(calendar.version);
    (
        status,
        [(header::ETAG, tag)],
        Json(CalendarView::from(calendar)),
    )
        .into_response()
}

/// List the calendars of the key's tenant.
#[utoipa::path(get, path = "/v1/calendar/calendars", tag = "calendars",
    security(("api_key" = [])),
    responses((status = 200, body = CalendarList), CommonErrors))]
pub async fn list_calendars(
    auth: Authorized<EventsRead>,
    State(state): State<AppState>,
) -> Result<Json<CalendarList>, ApiError> {
    let calendars = state
        .store
        .list_calendars(auth.principal().tenant)
        .await
        .map_err(|e| store_error("calendar", e))?;
    Ok(Json(CalendarList {
        items: calendars.into_iter().map(CalendarView::from).collect(),
    }))
}

/// Create a calendar.
#[utoipa::path(post, path = "/v1/calendar/calendars", tag = "calendars",
    security(("api_key" = [])),
    request_body = CalendarInput,
    responses((status = 201, body = CalendarView, headers(("ETag" = String))), CommonErrors))]
pub async fn create_calendar(
    auth: Authorized<EventsWrite>,
    State(state): State<AppState>,
    JsonBody(input): JsonBody<CalendarInput>,
) -> Result<Response, ApiError> {
    let principal = auth.principal();
    let calendar = state
        .store
        .create_calendar(principal.tenant, input.validate()?)
        .await
        .map_err(|e| store_error("calendar", e))?;
    audit(
        &state,
        principal,
        "calendar.created",
        calendar.id,
        serde_json::json!({"name": calendar.name, "time_zone": calendar.time_zone}),
    )
    .await?;
    Ok(with_etag(StatusCode::CREATED, calendar))
}

/// Read a calendar.
#[utoipa::path(get, path = "/v1/calendar/calendars/{id}", tag = "calendars",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Calendar id")),
    responses((status = 200, body = CalendarView, headers(("ETag" = String))), CommonErrors))]
pub async fn get_calendar(
    auth: Authorized<EventsRead>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: CalendarId = parse_id(&id, "calendar")?;
    let calendar = state
        .store
        .get_calendar(auth.principal().tenant, id)
        .await
        .map_err(|e| store_error("calendar", e))?;
    Ok(with_etag(StatusCode::OK, calendar))
}

/// Replace a calendar's name, zone and owner; send `If-Match` to avoid overwriting someone else's change.
#[utoipa::path(put, path = "/v1/calendar/calendars/{id}", tag = "calendars",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Calendar id"),
           ("If-Match" = Option<String>, Header, description = "ETag of the version being replaced")),
    request_body = CalendarInput,
    responses((status = 200, body = CalendarView, headers(("ETag" = String))), CommonErrors))]
pub async fn update_calendar(
    auth: Authorized<EventsWrite>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(input): JsonBody<CalendarInput>,
) -> Result<Response, ApiError> {
    let principal = auth.principal();
    let id: CalendarId = parse_id(&id, "calendar")?;
    let expected = if_match(&headers)?;
    let update = input.validate()?;
    let expected = match expected {
        Some(v) => v,
        None => {
            state
                .store
                .get_calendar(principal.tenant, id)
                .await
                .map_err(|e| store_error("calendar", e))?
                .version
        }
    };
    let calendar = state
        .store
        .update_calendar(principal.tenant, id, expected, update)
        .await
        .map_err(|e| store_error("calendar", e))?;
    audit(
        &state,
        principal,
        "calendar.updated",
        calendar.id,
        serde_json::json!({"version": calendar.version}),
    )
    .await?;
    Ok(with_etag(StatusCode::OK, calendar))
}

/// Delete a calendar with its events (refused while a connection uses it).
#[utoipa::path(delete, path = "/v1/calendar/calendars/{id}", tag = "calendars",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Calendar id"),
           ("If-Match" = Option<String>, Header, description = "ETag of the version being deleted")),
    responses((status = 204, description = "Deleted"), CommonErrors))]
pub async fn delete_calendar(
    auth: Authorized<EventsWrite>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let principal = auth.principal();
    let id: CalendarId = parse_id(&id, "calendar")?;
    let expected = if_match(&headers)?;
    state
        .store
        .delete_calendar(principal.tenant, id, expected)
        .await
        .map_err(|e| store_error("calendar", e))?;
    audit(
        &state,
        principal,
        "calendar.deleted",
        id,
        serde_json::json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
