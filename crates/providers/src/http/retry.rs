//! Retry timing: `Retry-After` parsing and exponential backoff with jitter.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Longest `Retry-After` accepted as a number; beyond this the header is nonsense.
const MAX_PARSED_RETRY_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parses `Retry-After`: whole seconds, decimal seconds (Graph sends `2.128`), or an HTTP-date
/// (relative to `now`; a date in the past means "now").
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let seconds: f64 = value.parse().ok()?;
        if !seconds.is_finite() || seconds < 0.0 {
            return None;
        }
        let capped = seconds.min(MAX_PARSED_RETRY_AFTER.as_secs_f64());
        return Some(Duration::from_secs_f64(capped));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// How hard to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited out inside one call: the call fails with
    /// `RateLimited { retry_after }` and the caller reschedules.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// "Full jitter" backoff (a random delay up to the exponential cap) — spreads clients that
    /// failed together — but never less than a quarter of the cap, so a retry is never instant.
    pub fn backoff(&self, failed_attempts: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << failed_attempts.saturating_sub(1).min(16));
        let cap = exp.min(self.max_delay);
        let floor = cap / 4;
        let spread = cap.saturating_sub(floor);
        floor + spread.mul_f64(rand::random::<f64>())
    }

    /// The wait before the next attempt: the backoff, but never less than what the server asked.
    pub fn delay(&self, failed_attempts: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self.backoff(failed_attempts);
        match retry_after {
            // A little jitter above the server's time, so throttled clients do not all return at
            // the same instant; never below it.
            Some(wait) => {
                wait + backoff
                    .min(Duration::from_millis(250))
                    .mul_f64(rand::random::<f64>())
            }
            None => backoff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seconds_decimals_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(" 2.128 ", now),
            Some(Duration::from_millis(2128))
        );
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:57 GMT", now),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:50:37 1994", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(
            parse_retry_after("99999999999999", now),
            Some(MAX_PARSED_RETRY_AFTER)
        );
    }

    #[test]
    fn delay_never_undercuts_retry_after_and_backoff_grows() {
        let policy = RetryPolicy::default();
        for attempt in 1..8 {
            let asked = Duration::from_millis(1500);
            assert!(policy.delay(attempt, Some(asked)) >= asked);
            let d = policy.backoff(attempt);
            assert!(d <= policy.max_delay);
            assert!(
                d >= policy
                    .base_delay
                    .saturating_mul(1 << (attempt - 1))
                    .min(policy.max_delay)
                    / 4
            );
        }
    }
}
