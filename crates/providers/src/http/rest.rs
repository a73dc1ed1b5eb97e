//! What the two OAuth REST connectors (Microsoft Graph, Google Calendar) do alike on top of an
//! [`Endpoint`]: send with the account's current bearer token, with one fresh token and one more
//! try after a 401, retry the answers a provider uses to say "slow down" beyond 429, and read a
//! listing page by page. What a page looks like (`@odata.nextLink` and `@odata.deltaLink`,
//! `nextPageToken` and `nextSyncToken`) and what an answer means stay with each connector.

use std::future::Future;

use http::header::{ACCEPT, AUTHORIZATION};

use super::{Endpoint, Request, Response, RetryPolicy};
use crate::error::ProviderError;
use crate::oauth::TokenSource;

/// Sends `request` with a bearer token from `tokens` and `Accept: application/json`, and answers
/// the final response whatever its status. The token is added here, per attempt, rather than by
/// the endpoint's credentials, because it changes when it is refreshed: a 401 invalidates it and
/// the request goes once more with a fresh one. An answer `throttled` recognises (Google's 403
/// rate limits, which carry no `Retry-After`) is retried with the default policy's backoff until
/// its attempts are spent; 429s are the endpoint's to retry.
pub async fn send_with_bearer(
    endpoint: &Endpoint,
    tokens: &dyn TokenSource,
    request: Request,
    throttled: impl Fn(&Response) -> bool,
) -> Result<Response, ProviderError> {
    let policy = RetryPolicy::default();
    let mut refreshed = false;
    let mut throttled_attempts = 0u32;
    loop {
        let token = tokens.bearer().await?;
        let attempt = request
            .clone()
            .header(AUTHORIZATION, &format!("Bearer {}", token.expose()))?
            .header(ACCEPT, "application/json")?;
        let response = endpoint.send(attempt).await?;
        if response.status.as_u16() == 401 && !refreshed {
            refreshed = true;
            tokens.invalidate().await;
            continue;
        }
        if throttled(&response) {
            throttled_attempts += 1;
            if throttled_attempts < policy.max_attempts {
                tokio::time::sleep(policy.delay(throttled_attempts, response.retry_after())).await;
                continue;
            }
        }
        return Ok(response);
    }
}

/// Where a page of a listing points: to the next page (a link or a page token), or to the end of
/// the listing with what the last page carries (a delta link, a sync token, or nothing).
#[derive(Debug)]
pub enum Next<C, E> {
    Page(C),
    End(E),
}

/// Reads a listing page by page, starting at `first`: `page` reads the page a continuation names
/// and answers its items and where it points. The items come back in order, with what the last
/// page carried.
pub async fn all_pages<T, C, E, F, Fut>(first: C, mut page: F) -> Result<(Vec<T>, E), ProviderError>
where
    F: FnMut(C) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, Next<C, E>), ProviderError>>,
{
    let mut items = Vec::new();
    let mut at = first;
    loop {
        let (found, next) = page(at).await?;
        items.extend(found);
        match next {
            Next::Page(continuation) => at = continuation,
            Next::End(end) => return Ok((items, end)),
        }
    }
}
