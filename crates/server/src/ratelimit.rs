//! Per-key token buckets: each key may burst up to `burst` requests, refilled at `rate` per second.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RateLimitConfig;

#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    enabled: bool,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Buckets idle this long are full again and can be forgotten.
const FORGET_AFTER_FULL: Duration = Duration::from_secs(60);

impl RateLimiter {
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            rate: config.requests_per_second,
            burst: f64::from(config.burst),
            enabled: config.enabled,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one token for `key`; when none is left, how long until one is.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if !self.enabled {
            return Ok(());
        }
        let mut buckets = match self.buckets.lock() {
            Ok(guard) => guard,
            // A panic elsewhere while holding the lock leaves only counters behind; they are still usable.
            Err(poisoned) => poisoned.into_inner(),
        };
        if buckets.len() > 10_000 {
            let burst = self.burst;
            let rate = self.rate;
            buckets.retain(|_, b| {
                let refill = now.saturating_duration_since(b.updated).as_secs_f64() * rate;
                b.tokens + refill < burst
                    || now.saturating_duration_since(b.updated) < FORGET_AFTER_FULL
            });
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - bucket.tokens;
            Err(Duration::from_secs_f64(missing / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let limiter = RateLimiter::new(&RateLimitConfig {
            enabled: true,
            requests_per_second: 2.0,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at("a", t0).is_ok());
        }
        let wait = limiter.check_at("a", t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(
            limiter.check_at("b", t0).is_ok(),
            "keys have their own buckets"
        );
        assert!(
            limiter
                .check_at("a", t0 + Duration::from_millis(500))
                .is_ok()
        );
        assert!(
            limiter
                .check_at("a", t0 + Duration::from_millis(500))
                .is_err()
        );
    }
}
