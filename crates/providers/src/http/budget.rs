//! Per-provider (or per-mailbox) request budgets: a concurrency limit, an optional rate, and a
//! shared pause that a `Retry-After` imposes on every request of the budget, not just the one that
//! was throttled.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetConfig {
    /// Requests in flight at once (Graph: 4 per mailbox).
    pub concurrency: usize,
    /// At most `requests` per `per` (token bucket), or unlimited.
    pub rate: Option<Rate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub requests: u32,
    pub per: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            rate: None,
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

#[derive(Debug)]
pub struct Budget {
    config: BudgetConfig,
    slots: Arc<Semaphore>,
    bucket: Mutex<Bucket>,
    paused_until: Mutex<Option<Instant>>,
}

/// Held while one request is in flight.
#[derive(Debug)]
pub struct BudgetPermit {
    _slot: OwnedSemaphorePermit,
}

impl Budget {
    pub fn new(config: BudgetConfig) -> Arc<Self> {
        let concurrency = config.concurrency.max(1);
        let tokens = config.rate.map_or(0.0, |r| f64::from(r.requests));
        Arc::new(Self {
            config,
            slots: Arc::new(Semaphore::new(concurrency)),
            bucket: Mutex::new(Bucket {
                tokens,
                refilled: Instant::now(),
            }),
            paused_until: Mutex::new(None),
        })
    }

    pub fn config(&self) -> BudgetConfig {
        self.config
    }

    /// Makes every request of this budget wait at least `wait` from now.
    pub async fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut paused = self.paused_until.lock().await;
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }

    /// Waits for a slot, a token and the end of any pause, in that order; the pause is checked
    /// last so a request that queued behind others still honours a `Retry-After` set meanwhile.
    pub async fn acquire(&self) -> Result<BudgetPermit, tokio::sync::AcquireError> {
        let slot = self.slots.clone().acquire_owned().await?;
        if let Some(rate) = self.config.rate {
            loop {
                let wait = {
                    let mut bucket = self.bucket.lock().await;
                    let capacity = f64::from(rate.requests.max(1));
                    let per_token = rate.per.as_secs_f64() / capacity;
                    let now = Instant::now();
                    let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
                    if per_token > 0.0 {
                        bucket.tokens = (bucket.tokens + elapsed / per_token).min(capacity);
                    } else {
                        bucket.tokens = capacity;
                    }
                    bucket.refilled = now;
                    if bucket.tokens >= 1.0 {
                        bucket.tokens -= 1.0;
                        None
                    } else {
                        Some(Duration::from_secs_f64((1.0 - bucket.tokens) * per_token))
                    }
                };
                match wait {
                    None => break,
                    Some(wait) => tokio::time::sleep(wait).await,
                }
            }
        }
        loop {
            let until = *self.paused_until.lock().await;
            match until {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => break,
            }
        }
        Ok(BudgetPermit { _slot: slot })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rate_spreads_requests_over_the_window() {
        let budget = Budget::new(BudgetConfig {
            concurrency: 10,
            rate: Some(Rate {
                requests: 2,
                per: Duration::from_secs(10),
            }),
        });
        let start = Instant::now();
        for _ in 0..4 {
            drop(budget.acquire().await.unwrap());
        }
        // Two from the full bucket, then one every 5 s.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_secs(10), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(11), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn pause_holds_every_request() {
        let budget = Budget::new(BudgetConfig::default());
        budget.pause_for(Duration::from_secs(3)).await;
        budget.pause_for(Duration::from_secs(1)).await; // a shorter pause does not shorten it
        let start = Instant::now();
        drop(budget.acquire().await.unwrap());
        assert!(start.elapsed() >= Duration::from_secs(3));
    }

    #[tokio::test]
    async fn concurrency_is_bounded() {
        let budget = Budget::new(BudgetConfig {
            concurrency: 2,
            rate: None,
        });
        let a = budget.acquire().await.unwrap();
        let _b = budget.acquire().await.unwrap();
        let third = tokio::time::timeout(Duration::from_millis(50), budget.acquire()).await;
        assert!(third.is_err(), "a third request must wait");
        drop(a);
        assert!(
            tokio::time::timeout(Duration::from_millis(500), budget.acquire())
                .await
                .is_ok()
        );
    }
}
