//! What a piece of work cost on the wire: HTTP requests made (retries and redirects included) and
//! bytes sent and received, counted by [`super::Endpoint::send`] for whoever runs inside [`metered`].
//!
//! The meter is a task-local, so one sync run counts exactly its own requests even when other runs
//! share the provider's client, and no provider API has to carry it. Bytes are the request and
//! response heads (request line, status line, headers as `name: value\r\n`) plus the bodies as the
//! application sees them (after decompression); TLS framing and chunk sizes are not counted.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::Method;
use http::header::HeaderMap;
use url::Url;

/// Counters of one metered piece of work; read them while or after it runs.
#[derive(Debug, Default)]
pub struct Traffic {
    requests: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

impl Traffic {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// HTTP requests made, each attempt counted.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn bytes_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Sent and received together.
    pub fn bytes(&self) -> u64 {
        self.bytes_sent().saturating_add(self.bytes_received())
    }
}

tokio::task_local! {
    static TRAFFIC: Arc<Traffic>;
}

/// Runs `work` with every HTTP request it makes through an [`super::Endpoint`] counted in `traffic`.
/// Requests made by tasks it spawns are not counted (none of the providers spawns).
pub async fn metered<F: Future>(traffic: Arc<Traffic>, work: F) -> F::Output {
    TRAFFIC.scope(traffic, work).await
}

pub(super) fn record(sent: usize, received: usize) {
    let _ = TRAFFIC.try_with(|t| {
        t.requests.fetch_add(1, Ordering::Relaxed);
        t.sent.fetch_add(sent as u64, Ordering::Relaxed);
        t.received.fetch_add(received as u64, Ordering::Relaxed);
    });
}

pub(super) fn headers_size(headers: &HeaderMap) -> usize {
    // "HTTP/1.1 200 OK\r\n" and the blank line.
    17 + 2
        + headers
            .iter()
            .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
            .sum::<usize>()
}

pub(super) fn request_size(
    method: &Method,
    url: &Url,
    headers: &HeaderMap,
    body: Option<&[u8]>,
) -> usize {
    let target = url.path().len() + url.query().map_or(0, |q| q.len() + 1);
    // "METHOD target HTTP/1.1\r\n", Host, the caller's headers, the blank line, the body.
    method.as_str().len()
        + 1
        + target
        + 11
        + 6
        + url.host_str().map_or(0, str::len)
        + 2
        + headers
            .iter()
            .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
            .sum::<usize>()
        + 2
        + body.map_or(0, <[u8]>::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_only_inside_the_scope() {
        let traffic = Traffic::new();
        record(10, 20);
        assert_eq!(traffic.requests(), 0);
        metered(traffic.clone(), async {
            record(10, 20);
            record(1, 2);
        })
        .await;
        assert_eq!(traffic.requests(), 2);
        assert_eq!(traffic.bytes_sent(), 11);
        assert_eq!(traffic.bytes_received(), 22);
        assert_eq!(traffic.bytes(), 33);
    }
}
