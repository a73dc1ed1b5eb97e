//! Shared helpers: an emulator on 127.0.0.1:0, an authenticated client, and a tiny axum webhook receiver.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use calbridge_emulators::{Emulator, EmulatorConfig, Flavor};
use serde_json::Value;

pub struct Api {
    pub emu: Emulator,
    pub http: reqwest::Client,
    pub token: String,
}

impl Api {
    pub async fn start(flavor: Flavor, config: EmulatorConfig) -> Api {
        let emu = Emulator::start(flavor, config).await.unwrap();
        let token = emu.token(None).unwrap();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Api { emu, http, token }
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{}", self.emu.base_url(), path)
        }
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(&self.token)
    }
    pub fn post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(body)
    }
    pub fn patch(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .patch(self.url(path))
            .bearer_auth(&self.token)
            .json(body)
    }
    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(path)).bearer_auth(&self.token)
    }
}

pub async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, v)
}

/// What a webhook receiver saw: query, headers and body of every POST.
#[derive(Debug, Clone)]
pub struct Hit {
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone)]
pub struct Receiver {
    pub hits: Arc<Mutex<Vec<Hit>>>,
    pub addr: SocketAddr,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Echo `validationToken` as text/plain, answer 202 to notifications.
    Echo,
    /// Answer validation with a wrong body.
    WrongEcho,
}

impl Receiver {
    pub async fn start(behaviour: Behaviour) -> Receiver {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let state = (Arc::clone(&hits), behaviour);
        async fn handler(
            State((hits, behaviour)): State<(Arc<Mutex<Vec<Hit>>>, Behaviour)>,
            Query(query): Query<Vec<(String, String)>>,
            headers: HeaderMap,
            body: Bytes,
        ) -> (StatusCode, [(&'static str, &'static str); 1], String) {
            hits.lock().unwrap().push(Hit {
                query: query.clone(),
                headers,
                body,
            });
            if let Some((_, token)) = query.iter().find(|(k, _)| k == "validationToken") {
                let answer = if behaviour == Behaviour::Echo {
                    token.clone()
                } else {
                    "nope".into()
                };
                return (StatusCode::OK, [("content-type", "text/plain")], answer);
            }
            (
                StatusCode::ACCEPTED,
                [("content-type", "text/plain")],
                String::new(),
            )
        }
        let app = Router::new()
            .route("/hook", post(handler))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { hits, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits until at least `n` hits arrived (up to 5 s).
    pub async fn wait_for(&self, n: usize) -> Vec<Hit> {
        for _ in 0..100 {
            let hits = self.hits();
            if hits.len() >= n {
                return hits;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.hits()
    }
}
