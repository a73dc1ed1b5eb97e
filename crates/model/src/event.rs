//! One VEVENT as typed fields, with everything the types do not cover kept verbatim.

use crate::component::{Component, Param, Property};
use crate::datetime::{CalDateTime, DateOrPeriod, IcalDuration, ValueType, parse_date_list};
use crate::ical::{ParseError, ParseErrorKind, escape_text, split_text_list, unescape_text};

/// A typed property value with the parameters the type does not carry itself (e.g. `LANGUAGE` on a
/// SUMMARY, `X-` parameters anywhere), in the order they were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prop<T> {
    /// The typed value.
    pub value: T,
    /// Every other parameter, kept as read.
    pub params: Vec<Param>,
}

impl<T> Prop<T> {
    /// A value without parameters.
    pub fn new(value: T) -> Prop<T> {
        Prop {
            value,
            params: Vec::new(),
        }
    }
}

/// `DTEND` or `DURATION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventEnd {
    /// `DTEND` (exclusive end).
    End(Prop<CalDateTime>),
    /// `DURATION` from DTSTART.
    Duration(Prop<IcalDuration>),
}

/// `RECURRENCE-ID` of an override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecurrenceId {
    /// The original start of the instance this override replaces.
    pub value: CalDateTime,
    /// `RANGE=THISANDFUTURE`: the override also applies to every later instance.
    pub this_and_future: bool,
    /// Other parameters.
    pub params: Vec<Param>,
}

macro_rules! keyword_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $(
                #[doc = concat!("`", $text, "`")]
                $variant,
            )+
            /// An `X-` or IANA value this version does not know, upper-cased.
            Other(String),
        }

        impl $name {
            /// Reads the keyword, case-insensitively.
            pub fn parse(raw: &str) -> $name {
                let upper = raw.trim().to_ascii_uppercase();
                match upper.as_str() {
                    $($text => $name::$variant,)+
                    _ => $name::Other(upper),
                }
            }

            /// The keyword as written on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Other(other) => other,
                }
            }
        }
    };
}

keyword_enum!(
    /// `STATUS` of a VEVENT.
    EventStatus { Tentative = "TENTATIVE", Confirmed = "CONFIRMED", Cancelled = "CANCELLED" }
);
keyword_enum!(
    /// `TRANSP`: whether the event blocks time.
    Transparency { Opaque = "OPAQUE", Transparent = "TRANSPARENT" }
);
keyword_enum!(
    /// `CLASS`: access classification.
    Classification { Public = "PUBLIC", Private = "PRIVATE", Confidential = "CONFIDENTIAL" }
);
keyword_enum!(
    /// `PARTSTAT` of an attendee.
    PartStat {
        NeedsAction = "NEEDS-ACTION",
        Accepted = "ACCEPTED",
        Declined = "DECLINED",
        Tentative = "TENTATIVE",
        Delegated = "DELEGATED",
    }
);
keyword_enum!(
    /// `ROLE` of an attendee.
    Role {
        Chair = "CHAIR",
        ReqParticipant = "REQ-PARTICIPANT",
        OptParticipant = "OPT-PARTICIPANT",
        NonParticipant = "NON-PARTICIPANT",
    }
);

/// `ORGANIZER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organizer {
    /// The calendar address as written, usually `mailto:…`.
    pub address: String,
    /// `CN`: display name.
    pub cn: Option<String>,
    /// Other parameters (`SENT-BY`, `EMAIL`, `X-…`).
    pub params: Vec<Param>,
}

/// `ATTENDEE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attendee {
    /// The calendar address as written, usually `mailto:…`.
    pub address: String,
    /// `CN`: display name.
    pub cn: Option<String>,
    /// `PARTSTAT`: the answer to the invitation (absent means NEEDS-ACTION).
    pub partstat: Option<PartStat>,
    /// `ROLE` (absent means REQ-PARTICIPANT).
    pub role: Option<Role>,
    /// `RSVP`: whether a reply is expected.
    pub rsvp: Option<bool>,
    /// Other parameters (`CUTYPE`, `DELEGATED-FROM`, `X-NUM-GUESTS`, ...).
    pub params: Vec<Param>,
}

/// One VEVENT: a series master, an override (with [`Event::recurrence_id`]) or a single event.
///
/// Single-valued properties that appear twice keep the first in the typed field and the rest in
/// [`Event::other`], so nothing read is lost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// `UID`.
    pub uid: String,
    /// `DTSTAMP`.
    pub dtstamp: Option<Prop<CalDateTime>>,
    /// `DTSTART`.
    pub dtstart: Option<Prop<CalDateTime>>,
    /// `DTEND` or `DURATION`.
    pub end: Option<EventEnd>,
    /// `RECURRENCE-ID`: set on overrides only.
    pub recurrence_id: Option<RecurrenceId>,
    /// `SUMMARY` (unescaped).
    pub summary: Option<Prop<String>>,
    /// `DESCRIPTION` (unescaped).
    pub description: Option<Prop<String>>,
    /// `LOCATION` (unescaped).
    pub location: Option<Prop<String>>,
    /// `STATUS`.
    pub status: Option<Prop<EventStatus>>,
    /// `TRANSP`.
    pub transparency: Option<Prop<Transparency>>,
    /// `SEQUENCE`.
    pub sequence: Option<Prop<u32>>,
    /// `CATEGORIES`, one entry per property, each with its (unescaped) values.
    pub categories: Vec<Prop<Vec<String>>>,
    /// `CLASS`.
    pub class: Option<Prop<Classification>>,
    /// `ORGANIZER`.
    pub organizer: Option<Organizer>,
    /// `ATTENDEE`s in the order written.
    pub attendees: Vec<Attendee>,
    /// `RRULE` value text as written (parsed by the recurrence module).
    pub rrule: Option<Prop<String>>,
    /// `RDATE` properties, each with its values.
    pub rdates: Vec<Prop<Vec<DateOrPeriod>>>,
    /// `EXDATE` properties, each with its values.
    pub exdates: Vec<Prop<Vec<DateOrPeriod>>>,
    /// `URL` as written.
    pub url: Option<Prop<String>>,
    /// `CREATED`.
    pub created: Option<Prop<CalDateTime>>,
    /// `LAST-MODIFIED`.
    pub last_modified: Option<Prop<CalDateTime>>,
    /// Every other property (X-, IANA, and repeated single-valued ones), in the order written.
    pub other: Vec<Property>,
    /// `VALARM` components.
    pub alarms: Vec<Component>,
    /// Any other sub-component.
    pub other_components: Vec<Component>,
}

fn shorten(s: &str) -> String {
    let mut cut = s.len().min(40);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s[..cut].to_owned()
}

fn invalid(property: &Property, expected: impl Into<String>) -> ParseError {
    ParseError::new(
        property.line,
        ParseErrorKind::InvalidValue {
            property: property.name.clone(),
            expected: expected.into(),
            found: shorten(&property.value),
        },
    )
}

fn params_without(params: Vec<Param>, known: &[&str]) -> Vec<Param> {
    if params.is_empty() {
        return params;
    }
    params
        .into_iter()
        .filter(|p| !known.contains(&p.name.as_str()))
        .collect()
}

fn value_type(property: &Property) -> Result<Option<ValueType>, ParseError> {
    match property.param_value("VALUE") {
        None => Ok(None),
        Some(raw) => ValueType::parse(raw)
            .map(Some)
            .map_err(|_| invalid(property, "VALUE=DATE, DATE-TIME or PERIOD")),
    }
}

fn read_datetime(property: Property) -> Result<Prop<CalDateTime>, ParseError> {
    let value = CalDateTime::parse(
        &property.value,
        property.param_value("TZID"),
        value_type(&property)?,
    )
    .map_err(|e| invalid(&property, format!("a DATE or DATE-TIME ({e})")))?;
    Ok(Prop {
        value,
        params: params_without(property.params, &["TZID", "VALUE"]),
    })
}

fn read_date_list(property: Property) -> Result<Prop<Vec<DateOrPeriod>>, ParseError> {
    let values = parse_date_list(
        &property.value,
        property.param_value("TZID"),
        value_type(&property)?,
    )
    .map_err(|e| {
        invalid(
            &property,
            format!("a list of dates, date-times or periods ({e})"),
        )
    })?;
    // One property carries one TZID and one VALUE type; a list mixing kinds cannot be written back as
    // one property, so it is refused rather than silently split.
    if let Some(head) = values.first() {
        let kind = list_kind(head);
        if values.iter().any(|v| list_kind(v) != kind) {
            return Err(invalid(
                &property,
                "values of one kind (all DATE, all DATE-TIME with the same zone, or all PERIOD)",
            ));
        }
    }
    Ok(Prop {
        value: values,
        params: params_without(property.params, &["TZID", "VALUE"]),
    })
}

fn read_text(property: Property) -> Prop<String> {
    let value = if property.value.contains('\\') {
        unescape_text(&property.value)
    } else {
        property.value
    };
    Prop {
        value,
        params: property.params,
    }
}

fn read_raw(property: Property) -> Prop<String> {
    Prop {
        value: property.value,
        params: property.params,
    }
}

fn read_keyword<T>(property: Property, parse: fn(&str) -> T) -> Prop<T> {
    Prop {
        value: parse(&property.value),
        params: property.params,
    }
}

fn read_organizer(property: Property) -> Organizer {
    Organizer {
        cn: property.param_value("CN").map(str::to_owned),
        address: property.value,
        params: params_without(property.params, &["CN"]),
    }
}

fn read_attendee(property: Property) -> Attendee {
    let rsvp = match property.param_value("RSVP") {
        Some(v) if v.eq_ignore_ascii_case("TRUE") => Some(true),
        Some(v) if v.eq_ignore_ascii_case("FALSE") => Some(false),
        _ => None,
    };
    // An RSVP value that is neither TRUE nor FALSE stays among the other parameters, so it is not lost.
    let known: &[&str] = if rsvp.is_some() {
        &["CN", "PARTSTAT", "ROLE", "RSVP"]
    } else {
        &["CN", "PARTSTAT", "ROLE"]
    };
    Attendee {
        cn: property.param_value("CN").map(str::to_owned),
        partstat: property.param_value("PARTSTAT").map(PartStat::parse),
        role: property.param_value("ROLE").map(Role::parse),
        rsvp,
        address: property.value,
        params: params_without(property.params, known),
    }
}

/// Reads `property` into `slot` unless the slot is taken (a repeated single-valued property), in which
/// case the property goes to `other` unread, as written.
fn fill<T>(
    slot: &mut Option<T>,
    property: Property,
    other: &mut Vec<Property>,
    read: impl FnOnce(Property) -> Result<T, ParseError>,
) -> Result<(), ParseError> {
    if slot.is_some() {
        other.push(property);
    } else {
        *slot = Some(read(property)?);
    }
    Ok(())
}

fn infallible<T>(read: fn(Property) -> T) -> impl FnOnce(Property) -> Result<T, ParseError> {
    move |property| Ok(read(property))
}

impl Event {
    /// An event with only a UID.
    pub fn new(uid: impl Into<String>) -> Event {
        Event {
            uid: uid.into(),
            ..Event::default()
        }
    }

    /// Builds the typed event from a VEVENT component.
    pub fn from_component(component: &Component) -> Result<Event, ParseError> {
        Event::from_owned_component(component.clone())
    }

    /// Builds the typed event from a VEVENT component it may take apart (no copies of the strings).
    pub fn from_owned_component(component: Component) -> Result<Event, ParseError> {
        let mut event = Event::default();
        let mut uid = None;
        let mut other = Vec::new();
        let e = &mut event;
        for property in component.properties {
            match property.name.as_str() {
                "UID" => fill(&mut uid, property, &mut other, |p| Ok(p.value))?,
                "DTSTAMP" => fill(&mut e.dtstamp, property, &mut other, read_datetime)?,
                "DTSTART" => fill(&mut e.dtstart, property, &mut other, read_datetime)?,
                "DTEND" => fill(&mut e.end, property, &mut other, |p| {
                    read_datetime(p).map(EventEnd::End)
                })?,
                "DURATION" => fill(&mut e.end, property, &mut other, |p| {
                    let value = IcalDuration::parse(&p.value)
                        .map_err(|_| invalid(&p, "a DURATION such as PT1H, P1D or -PT15M"))?;
                    Ok(EventEnd::Duration(Prop {
                        value,
                        params: p.params,
                    }))
                })?,
                "RECURRENCE-ID" => fill(&mut e.recurrence_id, property, &mut other, |p| {
                    let this_and_future = p
                        .param_value("RANGE")
                        .is_some_and(|r| r.eq_ignore_ascii_case("THISANDFUTURE"));
                    let at = read_datetime(p)?;
                    let mut params = at.params;
                    if this_and_future {
                        params.retain(|p| p.name != "RANGE");
                    }
                    Ok(RecurrenceId {
                        value: at.value,
                        this_and_future,
                        params,
                    })
                })?,
                "SUMMARY" => fill(&mut e.summary, property, &mut other, infallible(read_text))?,
                "DESCRIPTION" => fill(
                    &mut e.description,
                    property,
                    &mut other,
                    infallible(read_text),
                )?,
                "LOCATION" => fill(&mut e.location, property, &mut other, infallible(read_text))?,
                "STATUS" => fill(&mut e.status, property, &mut other, |p| {
                    Ok(read_keyword(p, EventStatus::parse))
                })?,
                "TRANSP" => fill(&mut e.transparency, property, &mut other, |p| {
                    Ok(read_keyword(p, Transparency::parse))
                })?,
                "CLASS" => fill(&mut e.class, property, &mut other, |p| {
                    Ok(read_keyword(p, Classification::parse))
                })?,
                "SEQUENCE" => fill(&mut e.sequence, property, &mut other, |p| {
                    let value = p
                        .value
                        .trim()
                        .parse::<u32>()
                        .map_err(|_| invalid(&p, "a non-negative INTEGER"))?;
                    Ok(Prop {
                        value,
                        params: p.params,
                    })
                })?,
                "CATEGORIES" => e.categories.push(Prop {
                    value: split_text_list(&property.value),
                    params: property.params,
                }),
                "ORGANIZER" => fill(
                    &mut e.organizer,
                    property,
                    &mut other,
                    infallible(read_organizer),
                )?,
                "ATTENDEE" => e.attendees.push(read_attendee(property)),
                "RRULE" => fill(&mut e.rrule, property, &mut other, infallible(read_raw))?,
                "RDATE" => e.rdates.push(read_date_list(property)?),
                "EXDATE" => e.exdates.push(read_date_list(property)?),
                "URL" => fill(&mut e.url, property, &mut other, infallible(read_raw))?,
                "CREATED" => fill(&mut e.created, property, &mut other, read_datetime)?,
                "LAST-MODIFIED" => fill(&mut e.last_modified, property, &mut other, read_datetime)?,
                _ => other.push(property),
            }
        }
        let Some(uid) = uid else {
            return Err(ParseError::new(
                component.line,
                ParseErrorKind::MissingProperty {
                    component: component.name,
                    property: "UID".to_owned(),
                },
            ));
        };
        event.uid = uid;
        event.other = other;
        for child in component.components {
            if child.name == "VALARM" {
                event.alarms.push(child);
            } else {
                event.other_components.push(child);
            }
        }
        Ok(event)
    }

    /// The VEVENT component for this event, in a fixed property order (typed fields first, then
    /// [`Event::other`] in its order).
    pub fn to_component(&self) -> Component {
        let mut c = Component::new("VEVENT");
        let props = &mut c.properties;
        props.push(Property::new("UID", self.uid.clone()));
        if let Some(p) = &self.dtstamp {
            props.push(datetime_property("DTSTAMP", p));
        }
        if let Some(p) = &self.dtstart {
            props.push(datetime_property("DTSTART", p));
        }
        match &self.end {
            Some(EventEnd::End(p)) => props.push(datetime_property("DTEND", p)),
            Some(EventEnd::Duration(p)) => props.push(with_params(
                Property::new("DURATION", p.value.to_ical()),
                &p.params,
            )),
            None => {}
        }
        if let Some(rid) = &self.recurrence_id {
            let mut property = datetime_property(
                "RECURRENCE-ID",
                &Prop {
                    value: rid.value.clone(),
                    params: Vec::new(),
                },
            );
            if rid.this_and_future {
                property.params.push(Param::new("RANGE", "THISANDFUTURE"));
            }
            props.push(with_params(property, &rid.params));
        }
        for (name, text) in [
            ("SUMMARY", &self.summary),
            ("DESCRIPTION", &self.description),
            ("LOCATION", &self.location),
        ] {
            if let Some(p) = text {
                props.push(with_params(
                    Property::new(name, escape_text(&p.value)),
                    &p.params,
                ));
            }
        }
        if let Some(p) = &self.status {
            props.push(with_params(
                Property::new("STATUS", p.value.as_str()),
                &p.params,
            ));
        }
        if let Some(p) = &self.transparency {
            props.push(with_params(
                Property::new("TRANSP", p.value.as_str()),
                &p.params,
            ));
        }
        if let Some(p) = &self.sequence {
            props.push(with_params(
                Property::new("SEQUENCE", p.value.to_string()),
                &p.params,
            ));
        }
        if let Some(p) = &self.class {
            props.push(with_params(
                Property::new("CLASS", p.value.as_str()),
                &p.params,
            ));
        }
        for p in &self.categories {
            let value = p
                .value
                .iter()
                .map(|v| escape_text(v))
                .collect::<Vec<_>>()
                .join(",");
            props.push(with_params(Property::new("CATEGORIES", value), &p.params));
        }
        if let Some(o) = &self.organizer {
            let mut property = Property::new("ORGANIZER", o.address.clone());
            if let Some(cn) = &o.cn {
                property.params.push(Param::new("CN", cn.clone()));
            }
            props.push(with_params(property, &o.params));
        }
        for a in &self.attendees {
            let mut property = Property::new("ATTENDEE", a.address.clone());
            if let Some(cn) = &a.cn {
                property.params.push(Param::new("CN", cn.clone()));
            }
            if let Some(role) = &a.role {
                property.params.push(Param::new("ROLE", role.as_str()));
            }
            if let Some(partstat) = &a.partstat {
                property
                    .params
                    .push(Param::new("PARTSTAT", partstat.as_str()));
            }
            if let Some(rsvp) = a.rsvp {
                property
                    .params
                    .push(Param::new("RSVP", if rsvp { "TRUE" } else { "FALSE" }));
            }
            props.push(with_params(property, &a.params));
        }
        if let Some(p) = &self.rrule {
            props.push(with_params(
                Property::new("RRULE", p.value.clone()),
                &p.params,
            ));
        }
        for p in &self.rdates {
            date_list_properties(props, "RDATE", p);
        }
        for p in &self.exdates {
            date_list_properties(props, "EXDATE", p);
        }
        if let Some(p) = &self.url {
            props.push(with_params(
                Property::new("URL", p.value.clone()),
                &p.params,
            ));
        }
        if let Some(p) = &self.created {
            props.push(datetime_property("CREATED", p));
        }
        if let Some(p) = &self.last_modified {
            props.push(datetime_property("LAST-MODIFIED", p));
        }
        props.extend(self.other.iter().cloned());
        c.components.extend(self.alarms.iter().cloned());
        c.components.extend(self.other_components.iter().cloned());
        c
    }

    /// `SUMMARY` text, if any.
    pub fn summary_text(&self) -> Option<&str> {
        self.summary.as_ref().map(|p| p.value.as_str())
    }

    /// Every category name over all `CATEGORIES` properties.
    pub fn category_names(&self) -> impl Iterator<Item = &str> {
        self.categories
            .iter()
            .flat_map(|p| p.value.iter().map(String::as_str))
    }

    /// Every EXDATE value over all `EXDATE` properties.
    pub fn exdate_values(&self) -> impl Iterator<Item = &DateOrPeriod> {
        self.exdates.iter().flat_map(|p| p.value.iter())
    }

    /// Every RDATE value over all `RDATE` properties.
    pub fn rdate_values(&self) -> impl Iterator<Item = &DateOrPeriod> {
        self.rdates.iter().flat_map(|p| p.value.iter())
    }
}

fn with_params(mut property: Property, params: &[Param]) -> Property {
    property.params.extend(params.iter().cloned());
    property
}

fn datetime_property(name: &str, p: &Prop<CalDateTime>) -> Property {
    let mut property = Property::new(name, p.value.to_ical());
    if let Some(v) = p.value.value_param() {
        property.params.push(Param::new("VALUE", v.as_str()));
    }
    if let Some(tzid) = p.value.tzid() {
        property.params.push(Param::new("TZID", tzid.as_str()));
    }
    with_params(property, &p.params)
}

fn list_kind(value: &DateOrPeriod) -> (Option<&str>, Option<ValueType>) {
    match value {
        DateOrPeriod::At(at) => (at.tzid().map(|t| t.as_str()), at.value_param()),
        DateOrPeriod::Period(p) => (p.start.tzid().map(|t| t.as_str()), Some(ValueType::Period)),
    }
}

/// One property per run of values sharing TZID and value type: a property carries one TZID and one VALUE.
fn date_list_properties(out: &mut Vec<Property>, name: &str, p: &Prop<Vec<DateOrPeriod>>) {
    let mut runs: Vec<(Option<&str>, Option<ValueType>, Vec<String>)> = Vec::new();
    for value in &p.value {
        let (tzid, kind) = list_kind(value);
        match runs.last_mut() {
            Some((t, k, texts)) if *t == tzid && *k == kind => texts.push(value.to_ical()),
            _ => runs.push((tzid, kind, vec![value.to_ical()])),
        }
    }
    if runs.is_empty() {
        runs.push((None, None, Vec::new()));
    }
    for (tzid, kind, texts) in runs {
        let mut property = Property::new(name, texts.join(","));
        if let Some(kind) = kind {
            property.params.push(Param::new("VALUE", kind.as_str()));
        }
        if let Some(tzid) = tzid {
            property.params.push(Param::new("TZID", tzid));
        }
        out.push(with_params(property, &p.params));
    }
}
