//! WebDAV XML: a small namespace-resolved element tree, multistatus reading, request bodies.
//!
//! Servers choose their own prefixes (`D:`, `d:`, none at all), so everything is matched on
//! (namespace URI, local name), never on the prefix.

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

use crate::error::ProviderError;

pub const DAV: &str = "DAV:";
pub const CALDAV: &str = "urn:ietf:params:xml:ns:caldav";
pub const CALSERVER: &str = "http://calendarserver.org/ns/";
pub const APPLE: &str = "http://apple.com/ns/ical/";

/// Deepest nesting accepted; multistatus bodies are shallow, anything deeper is hostile.
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub ns: String,
    pub name: String,
    pub attributes: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Text of this element and its descendants, trimmed.
    pub fn text_trimmed(&self) -> String {
        let mut out = self.text.clone();
        for child in &self.children {
            out.push_str(&child.text_trimmed());
        }
        out.trim().to_owned()
    }
}

fn bad(detail: impl std::fmt::Display) -> ProviderError {
    ProviderError::protocol(format!("malformed XML: {detail}"))
}

fn entity(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => None,
    }
}

/// Parses a whole document into its root element.
pub fn parse(body: &str) -> Result<Element, ProviderError> {
    let mut reader = NsReader::from_str(body);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let (resolved, event) = reader.read_resolved_event().map_err(bad)?;
        let ns = match resolved {
            ResolveResult::Bound(ns) => String::from_utf8_lossy(ns.as_ref()).into_owned(),
            _ => String::new(),
        };
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                let mut attributes = Vec::new();
                for attr in start.attributes() {
                    let attr = attr.map_err(bad)?;
                    let key = String::from_utf8_lossy(attr.key.local_name().as_ref()).into_owned();
                    let value = attr.unescape_value().map_err(bad)?.into_owned();
                    attributes.push((key, value));
                }
                let element = Element {
                    ns,
                    name,
                    attributes,
                    children: Vec::new(),
                    text: String::new(),
                };
                if matches!(event, Event::Empty(_)) {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(element),
                        None => root = Some(element),
                    }
                } else {
                    if stack.len() >= MAX_DEPTH {
                        return Err(bad("nesting too deep"));
                    }
                    stack.push(element);
                }
            }
            Event::End(_) => {
                let element = stack.pop().ok_or_else(|| bad("unbalanced end tag"))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            Event::Text(text) => {
                if let Some(current) = stack.last_mut() {
                    current.text.push_str(&text.xml_content().map_err(bad)?);
                }
            }
            Event::CData(data) => {
                if let Some(current) = stack.last_mut() {
                    current.text.push_str(&String::from_utf8_lossy(&data));
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref().map_err(bad)? {
                    Some(c) => c,
                    None => {
                        let name = reference.decode().map_err(bad)?;
                        entity(&name).ok_or_else(|| bad(format!("unknown entity &{name};")))?
                    }
                };
                if let Some(current) = stack.last_mut() {
                    current.text.push(resolved);
                }
            }
            Event::Eof => break,
            Event::DocType(_) => return Err(bad("DOCTYPE is not accepted")),
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(bad("document ends inside an element"));
    }
    root.ok_or_else(|| bad("empty document"))
}

/// One `DAV:response` of a multistatus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DavResponse {
    pub hrefs: Vec<String>,
    /// Response-level status (`404` here means the member is gone).
    pub status: Option<u16>,
    pub propstats: Vec<(u16, Vec<Element>)>,
}

impl DavResponse {
    /// A property reported with a 2xx status.
    pub fn prop(&self, ns: &str, name: &str) -> Option<&Element> {
        self.propstats
            .iter()
            .filter(|(status, _)| (200..300).contains(status))
            .flat_map(|(_, props)| props.iter())
            .find(|p| p.is(ns, name))
    }

    pub fn prop_text(&self, ns: &str, name: &str) -> Option<String> {
        self.prop(ns, name)
            .map(Element::text_trimmed)
            .filter(|t| !t.is_empty())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Multistatus {
    pub responses: Vec<DavResponse>,
    pub sync_token: Option<String>,
}

/// `HTTP/1.1 404 Not Found` → 404.
pub fn status_code(line: &str) -> Option<u16> {
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn parse_multistatus(body: &str) -> Result<Multistatus, ProviderError> {
    let root = parse(body)?;
    if !root.is(DAV, "multistatus") {
        return Err(ProviderError::protocol(format!(
            "expected DAV:multistatus, got {}:{}",
            root.ns, root.name
        )));
    }
    let mut out = Multistatus::default();
    for response in root.children_named(DAV, "response") {
        let hrefs: Vec<String> = response
            .children_named(DAV, "href")
            .map(Element::text_trimmed)
            .collect();
        let status = response
            .child(DAV, "status")
            .and_then(|s| status_code(&s.text_trimmed()));
        let mut propstats = Vec::new();
        for propstat in response.children_named(DAV, "propstat") {
            let code = propstat
                .child(DAV, "status")
                .and_then(|s| status_code(&s.text_trimmed()))
                .unwrap_or(200);
            let props = propstat
                .child(DAV, "prop")
                .map(|p| p.children.clone())
                .unwrap_or_default();
            propstats.push((code, props));
        }
        out.responses.push(DavResponse {
            hrefs,
            status,
            propstats,
        });
    }
    out.sync_token = root
        .child(DAV, "sync-token")
        .map(Element::text_trimmed)
        .filter(|t| !t.is_empty());
    Ok(out)
}

/// Names of the precondition elements inside a `DAV:error` body (`valid-sync-token`...).
pub fn error_conditions(body: &str) -> Vec<(String, String)> {
    match parse(body) {
        Ok(root) if root.is(DAV, "error") => root
            .children
            .iter()
            .map(|c| (c.ns.clone(), c.name.clone()))
            .collect(),
        _ => Vec::new(),
    }
}

pub fn escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

const HEADER: &str = r#"<?xml version="1.0" encoding="utf-8"?>"#;
const NAMESPACES: &str = r#"xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" xmlns:CS="http://calendarserver.org/ns/" xmlns:A="http://apple.com/ns/ical/""#;

pub fn propfind(props: &[&str]) -> String {
    format!(
        "{HEADER}<D:propfind {NAMESPACES}><D:prop>{}</D:prop></D:propfind>",
        props.iter().map(|p| format!("<{p}/>")).collect::<String>()
    )
}

/// RFC 6578 sync-collection. Never carries `DAV:limit`: Xandikos honours it by silently dropping
/// the rest of the changes while returning the current token. `with_data` asks for each changed
/// member's `calendar-data` too (RFC 6578 §3.2 lets the request name any property), which saves
/// the multiget that would follow.
pub fn sync_collection(token: Option<&str>, with_data: bool) -> String {
    let token = token.map(escape).unwrap_or_default();
    let data = if with_data { "<C:calendar-data/>" } else { "" };
    format!(
        "{HEADER}<D:sync-collection {NAMESPACES}><D:sync-token>{token}</D:sync-token><D:sync-level>1</D:sync-level><D:prop><D:getetag/>{data}</D:prop></D:sync-collection>"
    )
}

pub fn calendar_multiget(hrefs: &[String]) -> String {
    let hrefs: String = hrefs
        .iter()
        .map(|h| format!("<D:href>{}</D:href>", escape(h)))
        .collect();
    format!(
        "{HEADER}<C:calendar-multiget {NAMESPACES}><D:prop><D:getetag/><C:calendar-data/></D:prop>{hrefs}</C:calendar-multiget>"
    )
}

pub fn free_busy_query(start: &str, end: &str) -> String {
    format!(
        "{HEADER}<C:free-busy-query {NAMESPACES}><C:time-range start=\"{start}\" end=\"{end}\"/></C:free-busy-query>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_do_not_matter_only_namespaces() {
        let a = r#"<d:multistatus xmlns:d="DAV:"><d:response><d:href>/a.ics</d:href><d:propstat><d:prop><d:getetag>"1"</d:getetag></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response><d:sync-token>t1</d:sync-token></d:multistatus>"#;
        let b = r#"<multistatus xmlns="DAV:"><response><href>/a.ics</href><propstat><prop><getetag>"1"</getetag></prop><status>HTTP/1.1 200 OK</status></propstat></response><sync-token>t1</sync-token></multistatus>"#;
        let c =
            r#"<x:multistatus xmlns:x="urn:other" xmlns:D="DAV:"><D:response/></x:multistatus>"#;
        let ma = parse_multistatus(a).unwrap();
        assert_eq!(ma, parse_multistatus(b).unwrap());
        assert_eq!(
            ma.responses[0].prop_text(DAV, "getetag").as_deref(),
            Some("\"1\"")
        );
        assert_eq!(ma.sync_token.as_deref(), Some("t1"));
        assert!(parse_multistatus(c).is_err());
    }

    #[test]
    fn response_level_status_differs_from_propstat_status() {
        let body = r#"<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:response><D:href>/gone.ics</D:href><D:status>HTTP/1.1 404 Not Found</D:status></D:response>
  <D:response><D:href>/here.ics</D:href>
    <D:propstat><D:prop><D:getetag>"e"</D:getetag><C:calendar-data><![CDATA[BEGIN:VCALENDAR
END:VCALENDAR
]]></C:calendar-data></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>
    <D:propstat><D:prop><D:displayname/></D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>
  </D:response></D:multistatus>"#;
        let ms = parse_multistatus(body).unwrap();
        assert_eq!(ms.responses[0].status, Some(404));
        assert_eq!(ms.responses[1].status, None);
        assert!(
            ms.responses[1].prop(DAV, "displayname").is_none(),
            "a 404 propstat is a missing property"
        );
        assert!(
            ms.responses[1]
                .prop_text(CALDAV, "calendar-data")
                .unwrap()
                .starts_with("BEGIN:VCALENDAR")
        );
    }

    #[test]
    fn entities_and_hostile_input() {
        let el = parse(r#"<a xmlns="DAV:">x &amp; y &#x41;&lt;</a>"#).unwrap();
        assert_eq!(el.text, "x & y A<");
        assert!(parse(r#"<!DOCTYPE a [<!ENTITY e "boom">]><a>&e;</a>"#).is_err());
        assert!(parse("<a><b></a>").is_err());
        assert!(parse("").is_err());
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn request_bodies_escape_and_never_limit() {
        let body = sync_collection(Some("http://x/sync?a=1&b=2"), false);
        assert!(body.contains("a=1&amp;b=2"));
        assert!(!body.contains("limit"));
        let root = parse(&body).unwrap();
        assert!(root.is(DAV, "sync-collection"));
        assert_eq!(
            root.child(DAV, "sync-token").unwrap().text,
            "http://x/sync?a=1&b=2"
        );
        let mg = parse(&calendar_multiget(&["/c/a%40b.ics".into()])).unwrap();
        assert_eq!(mg.children_named(DAV, "href").count(), 1);
    }

    #[test]
    fn error_bodies_name_their_precondition() {
        let body = r#"<?xml version="1.0"?><error xmlns="DAV:"><valid-sync-token/></error>"#;
        assert_eq!(
            error_conditions(body),
            vec![(DAV.to_owned(), "valid-sync-token".to_owned())]
        );
        assert!(error_conditions("not xml").is_empty());
    }
}
