//! The router, the middleware every request passes through, and the serve loop with graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa::OpenApi as _;

use crate::AppState;
use crate::error::{ApiError, PROBLEM_JSON};
use crate::{api, telemetry};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The full application: API routes (which also describe the OpenAPI document), the operational
/// endpoints, and the middleware stack.
pub fn router(state: AppState) -> Router {
    // Install the recorder before the first request, so no request's metrics are dropped.
    let _ = telemetry::prometheus();
    let (api_router, openapi) = api::routes().split_for_parts();
    let openapi = Arc::new(openapi);
    let limits = state.config.limits.clone();
    let compression = state.config.optimizations.compression;
    let hub = Arc::clone(&state.realtime);

    let app = Router::new()
        .merge(api_router)
        .merge(api::ops_routes())
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let openapi = Arc::clone(&openapi);
                async move { axum::Json(openapi.as_ref().clone()) }
            }),
        )
        .fallback(|| async {
            ApiError::NotFound("no such endpoint; the API is described at /v1/openapi.json".into())
        })
        .with_state(state)
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            crate::realtime::ring_after_writes(Arc::clone(&hub), req, next)
        }))
        .layer(middleware::from_fn(telemetry::record_metrics))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes));

    let max_body = limits.max_body_bytes;
    let timeout_secs = limits.request_timeout.to_std().as_secs();
    // Router::layer wraps what is already there: the first layer added is the innermost.
    let mut app = app
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout.to_std(),
        ))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            problem_for_bare_errors(req, next, max_body, timeout_secs)
        }));
    if compression {
        app = app.layer(CompressionLayer::new().gzip(true).br(true));
    }
    app.layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let request_id = request
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!(
                        "request",
                        request_id = %request_id,
                        method = %request.method(),
                        path = %request.uri().path(),
                    )
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
        ]))
}

/// The OpenAPI document, as served at `/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, openapi) = api::routes().split_for_parts();
    let mut doc = api::ApiDoc::openapi();
    doc.merge(openapi);
    doc
}

/// Layers below this one (body limit, timeout, axum's own 404/405) answer with bare status codes; give
/// every such answer a problem document so clients see one error format.
async fn problem_for_bare_errors(
    request: Request,
    next: Next,
    max_body: usize,
    timeout_secs: u64,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    // Extractors know no limit, so every 413 is rebuilt here with the configured one.
    if is_problem && status != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge { limit: max_body },
        StatusCode::SERVICE_UNAVAILABLE => ApiError::Timeout(timeout_secs),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(
            "unsupported Content-Type; send application/json (or text/calendar where documented)"
                .into(),
        ),
        StatusCode::NOT_FOUND => ApiError::NotFound("no such endpoint".into()),
        other if other.is_server_error() => {
            ApiError::internal(format!("bare {other} from a layer"))
        }
        other => ApiError::bad_request("bad_request", format!("request refused ({other})")),
    };
    let mut problem = error.into_response();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The unread rest of the body makes the connection unusable; say so, so clients do not reuse it.
        problem
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(allow) = response.headers().get(header::ALLOW) {
        problem.headers_mut().insert(header::ALLOW, allow.clone());
    }
    problem
}

/// Serve `router` on an already bound listener until `shutdown` resolves; then stop accepting, let
/// in-flight requests finish for up to `grace`, and return.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = state.config.server.shutdown_grace.to_std();
    let (stop_background, mut background) = start_background(&state)?;
    let app = router(state);
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let graceful = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutdown requested; finishing in-flight requests");
        let _ = signalled_tx.send(());
    });
    let server = tokio::spawn(async move { graceful.await });
    tokio::pin!(server);
    let result = tokio::select! {
        result = &mut server => flatten(result),
        _ = signalled_rx => match tokio::time::timeout(grace, &mut server).await {
            Ok(result) => flatten(result),
            Err(_) => {
                tracing::warn!(grace = ?grace, "in-flight requests did not finish within the grace period; stopping");
                server.abort();
                Ok(())
            }
        },
    };
    let _ = stop_background.send(true);
    for task in background.0.iter_mut() {
        // A delivery in flight finishes within its timeout; do not wait longer than the grace period.
        if tokio::time::timeout(grace, task).await.is_err() {
            tracing::warn!("a background task did not stop within the grace period");
        }
    }
    result
}

/// Background tasks that die with the serve future, even when it is dropped instead of shut down.
struct Background(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The tasks that run beside the API in every process: webhook delivery (planner and worker over leased
/// jobs) and the change stream's retention pruning.
fn start_background(
    state: &AppState,
) -> std::io::Result<(tokio::sync::watch::Sender<bool>, Background)> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let config = &state.config;
    let deliverer = crate::webhooks::Deliverer::new(
        Arc::clone(&state.store),
        Arc::clone(&state.master_key),
        Arc::clone(&state.realtime),
        config.webhooks.clone(),
        config.network.allow_private_networks,
        crate::scheduler::default_owner(),
    )
    .map_err(std::io::Error::other)?;
    let deliveries = tokio::spawn(deliverer.run(stop_rx.clone()));
    let pruner = tokio::spawn(crate::realtime::prune(
        Arc::clone(&state.store),
        config.stream.retention.0,
        config.webhooks.log_retention.0,
        config.stream.prune_interval.to_std(),
        stop_rx,
    ));
    Ok((stop_tx, Background(vec![deliveries, pruner])))
}

fn flatten(result: Result<std::io::Result<()>, tokio::task::JoinError>) -> std::io::Result<()> {
    match result {
        Ok(inner) => inner,
        Err(join) => Err(std::io::Error::other(join)),
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed by this call (inside a Tokio runtime), not
/// when the future is first polled: a service starting up already runs its sync workers before it polls
/// its shutdown future, and a SIGTERM in between met the default disposition and killed the process
/// mid-sync (found by the crash test, which stops `serve` as soon as it has reaped the killed runs).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                (Ok(mut only), Err(_)) | (Err(_), Ok(mut only)) => {
                    only.recv().await;
                }
                (Err(_), Err(_)) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Answers `/healthz`: the process is up.
pub async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// Answers `/readyz`: the database answers.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(Duration::from_secs(5), state.store.ping()).await {
        Ok(Ok(())) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Ok(Err(e)) => ApiError::Unavailable(format!("database unreachable: {e}")).into_response(),
        Err(_) => {
            ApiError::Unavailable("database did not answer within 5 s".into()).into_response()
        }
    }
}

/// Answers `/metrics` in the Prometheus text format.
pub async fn metrics() -> Response {
    match telemetry::prometheus() {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            )],
            handle.render(),
        )
            .into_response(),
        None => {
            ApiError::Unavailable("another metrics recorder is installed in this process".into())
                .into_response()
        }
    }
}
