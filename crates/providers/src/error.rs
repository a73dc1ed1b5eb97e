//! The one error type every provider returns. Each kind tells the caller what to do next.

use std::time::Duration;

/// Why the service could not be reached or did not answer usefully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailability {
    /// The host name did not resolve.
    Dns,
    /// TCP connection refused or reset, network unreachable.
    Connect,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// The server did not answer in time.
    Timeout,
    /// The server answered with a 5xx status after every retry.
    Status(u16),
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Credentials were refused: ask the person to re-enter them (or re-consent for OAuth).
    #[error("the server refused the credentials (HTTP {status})")]
    Auth { status: u16 },
    /// The OAuth grant is gone (`invalid_grant`: refresh token revoked, expired or rotated away).
    /// Only a person signing in again helps: put the connection in `needs_reauth`, keep its events.
    #[error("the authorization was revoked or expired; sign in again: {detail}")]
    NeedsReauthorization { detail: String },
    /// Authenticated, but the account may not do this.
    #[error("the account is not allowed to do this: {detail}")]
    Forbidden { detail: String },
    #[error("not found: {what}")]
    NotFound { what: String },
    /// The item changed on the server since it was read (stale `If-Match`) or already exists
    /// (`If-None-Match: *`): re-read, merge, retry.
    #[error("precondition failed: the item changed on the server since it was read")]
    PreconditionFailed,
    /// The sync cursor is no longer accepted: read everything again without one.
    #[error("the sync cursor is no longer valid; a full listing is needed")]
    CursorInvalid,
    /// Throttled; the caller must not retry before `retry_after` (when the server said so).
    #[error("rate limited by the provider{}", retry_after.map(|d| format!("; retry after {:.1} s", d.as_secs_f64())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    #[error("the service is unavailable ({reason:?}): {detail}")]
    Unavailable {
        reason: Unavailability,
        detail: String,
    },
    /// Two items claim one identity (CalDAV `no-uid-conflict`, Google `duplicate`).
    #[error("conflict: {detail}")]
    Conflict { detail: String },
    /// The server refused the content we sent (malformed, unsupported component, too large).
    #[error("the server rejected the request (HTTP {status}): {detail}")]
    Rejected { status: u16, detail: String },
    /// The server answered something that is not what the protocol promises.
    #[error("unexpected answer from the server: {detail}")]
    Protocol { detail: String },
    /// The URL points at an address the operator has not allowed (loopback, private, link-local...).
    #[error("blocked: {detail}")]
    Blocked { detail: String },
    /// The source cannot be written to (ICS feeds).
    #[error("this calendar source is read-only")]
    ReadOnly,
    /// The provider does not offer this operation (see `Capabilities`).
    #[error("not supported by this provider: {what}")]
    Unsupported { what: String },
    /// The configuration or an argument is unusable (bad URL, unsupported scheme...).
    #[error("invalid input: {detail}")]
    InvalidInput { detail: String },
    /// The caller's own records failed while a listing asked which versions it holds
    /// ([`crate::HeldVersions`]): nothing is wrong at the provider, and the round is not trusted.
    #[error("the versions held could not be read: {detail}")]
    Held { detail: String },
}

impl ProviderError {
    pub(crate) fn protocol(detail: impl Into<String>) -> Self {
        Self::Protocol {
            detail: detail.into(),
        }
    }

    pub(crate) fn invalid(detail: impl Into<String>) -> Self {
        Self::InvalidInput {
            detail: detail.into(),
        }
    }

    /// A stable short name for metrics labels and logs.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Auth { .. } => "auth",
            Self::NeedsReauthorization { .. } => "needs_reauth",
            Self::Forbidden { .. } => "forbidden",
            Self::NotFound { .. } => "not_found",
            Self::PreconditionFailed => "precondition",
            Self::CursorInvalid => "cursor_invalid",
            Self::RateLimited { .. } => "throttled",
            Self::Unavailable {
                reason: Unavailability::Status(_),
                ..
            } => "server",
            Self::Unavailable {
                reason: Unavailability::Timeout,
                ..
            } => "timeout",
            Self::Unavailable { .. } => "network",
            Self::Conflict { .. } => "conflict",
            Self::Rejected { .. } => "rejected",
            Self::Protocol { .. } => "protocol",
            Self::Blocked { .. } => "blocked",
            Self::ReadOnly => "read_only",
            Self::Unsupported { .. } => "unsupported",
            Self::InvalidInput { .. } => "invalid_input",
            Self::Held { .. } => "held_versions",
        }
    }

    /// Whether the same request may succeed later without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Unavailable { .. })
    }
}
