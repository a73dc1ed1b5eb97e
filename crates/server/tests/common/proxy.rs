//! A pass-through proxy in front of a provider on loopback (Radicale): it records every request the
//! server sends (method, `Depth` header) and can refuse one method with 403, so a test sees what the
//! server asks and can make the provider fail a write while reads go through.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::IntoResponse;

#[derive(Clone)]
struct Upstream {
    base: String,
    client: reqwest::Client,
    seen: Arc<Mutex<Vec<Seen>>>,
    refused: Arc<Mutex<Option<String>>>,
}

/// One request as the proxy saw it: method, Depth header, and the change indicators its body asks
/// for (`getlastmodified`, `sync-token`, `getctag`, `getetag`, comma-separated, in that order).
pub type Seen = (String, String, String);

pub struct Proxy {
    /// The upstream URL as reached through the proxy (same path).
    pub url: String,
    /// Every request forwarded or refused.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    refused: Arc<Mutex<Option<String>>>,
}

impl Proxy {
    /// A proxy on a free loopback port forwarding to `upstream`'s scheme, host and port.
    pub async fn to(upstream: &str) -> Self {
        let parsed = url::Url::parse(upstream).unwrap();
        let state = Upstream {
            base: format!(
                "{}://{}:{}",
                parsed.scheme(),
                parsed.host_str().unwrap(),
                parsed.port().unwrap()
            ),
            client: reqwest::Client::new(),
            seen: Arc::default(),
            refused: Arc::default(),
        };
        let (seen, refused) = (state.seen.clone(), state.refused.clone());
        let app = axum::Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url: format!("http://{addr}{}", parsed.path()),
            seen,
            refused,
        }
    }

    /// Answers 403 to every request of `method` from now on (`None`: forwards everything again).
    pub fn refuse(&self, method: Option<&str>) {
        *self.refused.lock().unwrap() = method.map(str::to_owned);
    }
}

async fn forward(State(upstream): State<Upstream>, request: Request) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap();
    let depth = parts
        .headers
        .get("depth")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let asks: Vec<&str> = ["getlastmodified", "sync-token", "getctag", "getetag"]
        .into_iter()
        .filter(|name| text.contains(name))
        .collect();
    upstream
        .seen
        .lock()
        .unwrap()
        .push((parts.method.to_string(), depth, asks.join(",")));
    if upstream.refused.lock().unwrap().as_deref() == Some(parts.method.as_str()) {
        return axum::http::StatusCode::FORBIDDEN.into_response();
    }
    let url = format!(
        "{}{}",
        upstream.base,
        parts.uri.path_and_query().unwrap().as_str()
    );
    let mut out = upstream
        .client
        .request(
            reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap(),
            url,
        )
        .body(body.to_vec());
    for (name, value) in &parts.headers {
        if name != "host" {
            out = out.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = out.send().await.unwrap();
    let status = answer.status().as_u16();
    let headers: Vec<(String, Vec<u8>)> = answer
        .headers()
        .iter()
        .filter(|(n, _)| {
            !matches!(
                n.as_str(),
                "transfer-encoding" | "connection" | "content-length"
            )
        })
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect();
    let bytes = answer.bytes().await.unwrap();
    let mut response = (
        axum::http::StatusCode::from_u16(status).unwrap(),
        bytes.to_vec(),
    )
        .into_response();
    for (n, v) in headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            axum::http::HeaderValue::from_bytes(&v).unwrap(),
        );
    }
    response
}
