//! When to try a failed delivery again.
//!
//! Exponential backoff with full jitter: the wait before attempt `n + 1` is drawn uniformly from
//! `[0, min(max_delay, base_delay * multiplier^(n - 1))]`, so consumers coming back from an
//! outage are not hit by every queued delivery at the same instant. A consumer's `Retry-After`
//! is a floor (it asked us to stay away at least that long); `max_delay` caps everything, so a
//! consumer cannot park deliveries indefinitely.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::client::DeliveryError;
use super::duration;

/// The longest `Retry-After` honoured; a consumer asking for more is retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; after the last one the delivery is dead.
    pub max_attempts: u32,
    #[serde(with = "duration")]
    pub base_delay: Duration,
    #[serde(with = "duration")]
    pub max_delay: Duration,
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    /// Eight attempts spread over roughly an hour on average (ceilings 2 s, 8 s, 32 s, ~2 min,
    /// ~9 min, ~34 min, 1 h): long enough to ride out a consumer's restart or a short outage.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(3600),
            multiplier: 4.0,
        }
    }
}

impl RetryPolicy {
    /// Rejects settings that would retry forever, never wait, or shrink the wait.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("retry policy: max_attempts must be at least 1".into());
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err("retry policy: multiplier must be a number ≥ 1".into());
        }
        if self.base_delay.is_zero() {
            return Err("retry policy: base_delay must be greater than zero".into());
        }
        if self.base_delay > self.max_delay {
            return Err("retry policy: base_delay must not exceed max_delay".into());
        }
        Ok(())
    }

    /// Whether a delivery whose attempt number `attempt` (1-based) failed with `error` gets
    /// another attempt.
    pub fn should_retry(&self, attempt: u32, error: &DeliveryError) -> bool {
        error.is_retryable() && attempt < self.max_attempts
    }

    /// The wait after failed attempt number `attempt` (1-based), given the consumer's
    /// `Retry-After`, if it sent one.
    pub fn next_delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        self.next_delay_with(attempt, retry_after, rand::thread_rng().r#gen::<f64>())
    }

    /// `next_delay` with the random draw given: `jitter` in `[0, 1]` picks the point in the
    /// window (1 = the full exponential ceiling).
    pub fn next_delay_with(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Duration {
        let ceiling = self.ceiling(attempt);
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            1.0
        };
        let drawn = ceiling.mul_f64(jitter).min(self.max_delay);
        // The consumer's Retry-After wins over our own cap (it knows when it will be back),
        // within reason.
        let floor = retry_after.unwrap_or(Duration::ZERO).min(MAX_RETRY_AFTER);
        drawn.max(floor)
    }

    /// The upper end of the jitter window after failed attempt `attempt`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(1024) as i32;
        let secs = self.base_delay.as_secs_f64() * self.multiplier.max(1.0).powi(exp);
        let max = self.max_delay.as_secs_f64();
        if !secs.is_finite() || secs >= max {
            self.max_delay
        } else {
            Duration::from_secs_f64(secs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            multiplier: 2.0,
        }
    }

    #[test]
    fn ceiling_grows_exponentially_up_to_the_cap() {
        let p = policy();
        let secs: Vec<u64> = (1..=8).map(|a| p.ceiling(a).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(p.ceiling(0), Duration::from_secs(2));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let p = policy();
        assert_eq!(p.next_delay_with(3, None, 0.0), Duration::ZERO);
        assert_eq!(p.next_delay_with(3, None, 1.0), Duration::from_secs(8));
        assert_eq!(p.next_delay_with(3, None, 0.25), Duration::from_secs(2));
        assert_eq!(p.next_delay_with(3, None, 7.0), Duration::from_secs(8));
        assert_eq!(p.next_delay_with(3, None, f64::NAN), Duration::from_secs(8));
        for _ in 0..1000 {
            let d = p.next_delay(4, None);
            assert!(d <= Duration::from_secs(16), "{d:?}");
        }
    }

    #[test]
    fn random_draws_are_spread_out() {
        let p = policy();
        let draws: Vec<Duration> = (0..200).map(|_| p.next_delay(6, None)).collect();
        let low = draws
            .iter()
            .filter(|d| **d < Duration::from_secs(30))
            .count();
        let high = draws.len() - low;
        assert!(low > 40 && high > 40, "low {low}, high {high}");
    }

    #[test]
    fn retry_after_is_a_floor_even_beyond_the_cap_up_to_a_day() {
        let p = policy();
        for _ in 0..100 {
            let d = p.next_delay(1, Some(Duration::from_secs(30)));
            assert!(d >= Duration::from_secs(30) && d <= Duration::from_secs(60));
        }
        assert_eq!(
            p.next_delay_with(5, Some(Duration::from_secs(3)), 1.0),
            Duration::from_secs(32)
        );
        assert_eq!(
            p.next_delay(1, Some(Duration::from_secs(7_200))),
            Duration::from_secs(7_200)
        );
        assert_eq!(
            p.next_delay(1, Some(Duration::from_secs(10 * 86_400))),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn retries_only_retryable_errors_within_the_attempt_budget() {
        let p = policy();
        let unavailable = DeliveryError::Status {
            status: 503,
            scim_type: None,
            detail: String::new(),
            retry_after: None,
        };
        let conflict = DeliveryError::Status {
            status: 409,
            scim_type: Some("uniqueness".into()),
            detail: String::new(),
            retry_after: None,
        };
        assert!(p.should_retry(1, &unavailable));
        assert!(p.should_retry(4, &DeliveryError::Timeout));
        assert!(!p.should_retry(5, &DeliveryError::Timeout));
        assert!(!p.should_retry(1, &conflict));
    }

    #[test]
    fn defaults_and_serde() {
        let d = RetryPolicy::default();
        assert_eq!(d.max_attempts, 8);
        assert_eq!(d.base_delay, Duration::from_secs(2));
        assert_eq!(d.max_delay, Duration::from_secs(3600));
        d.validate().unwrap();
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"max_attempts": 8, "base_delay": "2s", "max_delay": "1h", "multiplier": 4.0})
        );
        assert_eq!(serde_json::from_value::<RetryPolicy>(json).unwrap(), d);
        let partial: RetryPolicy =
            serde_json::from_value(serde_json::json!({"max_attempts": 3, "max_delay": "5m"}))
                .unwrap();
        assert_eq!(partial.max_attempts, 3);
        assert_eq!(partial.max_delay, Duration::from_secs(300));
        assert_eq!(partial.base_delay, Duration::from_secs(2));
        assert!(serde_json::from_value::<RetryPolicy>(serde_json::json!({"attempts": 3})).is_err());
    }

    #[test]
    fn validation() {
        let mut p = policy();
        p.validate().unwrap();
        p.max_attempts = 0;
        assert!(p.validate().is_err());
        p = policy();
        p.multiplier = 0.5;
        assert!(p.validate().is_err());
        p = policy();
        p.base_delay = Duration::from_secs(120);
        assert!(p.validate().is_err());
        p = policy();
        p.base_delay = Duration::ZERO;
        assert!(p.validate().is_err());
    }
}
