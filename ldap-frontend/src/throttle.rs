//! Throttling of failed binds: after `max_failures` failures for one bind DN within the
//! window, that DN is locked for a while and binds to it fail without the password being
//! checked, so that guessing runs at a few attempts per lockout period at most.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct State {
    failures: u32,
    window_start: Instant,
    locked_until: Option<Instant>,
}

#[derive(Debug)]
pub struct Throttle {
    max_failures: u32,
    window: Duration,
    lockout: Duration,
    by_dn: Mutex<HashMap<String, State>>,
}

/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;

impl Throttle {
    pub fn new(max_failures: u32, window: Duration, lockout: Duration) -> Self {
        Throttle {
            max_failures: max_failures.max(1),
            window,
            lockout,
            by_dn: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, State>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.by_dn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Time left on a lockout of `dn`, if any.
    pub fn locked(&self, dn: &str) -> Option<Duration> {
        let now = Instant::now();
        self.map()
            .get(dn)
            .and_then(|s| s.locked_until)
            .and_then(|u| u.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    pub fn failure(&self, dn: &str) {
        let now = Instant::now();
        let mut map = self.map();
        if map.len() >= SWEEP_AT {
            let (window, lockout) = (self.window, self.lockout);
            map.retain(|_, s| {
                now.duration_since(s.window_start) < window + lockout
                    || s.locked_until.is_some_and(|u| u > now)
            });
        }
        let s = map.entry(dn.to_string()).or_insert(State {
            failures: 0,
            window_start: now,
            locked_until: None,
        });
        if now.duration_since(s.window_start) > self.window
            || s.locked_until.is_some_and(|u| u <= now)
        {
            *s = State {
                failures: 0,
                window_start: now,
                locked_until: None,
            };
        }
        s.failures += 1;
        if s.failures >= self.max_failures {
            s.locked_until = Some(now + self.lockout);
        }
    }

    pub fn success(&self, dn: &str) {
        self.map().remove(dn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_failures_and_expires() {
        let t = Throttle::new(3, Duration::from_secs(60), Duration::from_millis(50));
        for _ in 0..2 {
            t.failure("uid=a");
            assert!(t.locked("uid=a").is_none());
        }
        t.failure("uid=a");
        assert!(t.locked("uid=a").is_some());
        assert!(t.locked("uid=b").is_none());
        std::thread::sleep(Duration::from_millis(60));
        assert!(t.locked("uid=a").is_none());
        t.failure("uid=a");
        assert!(
            t.locked("uid=a").is_none(),
            "a new window starts after a lockout"
        );
    }
}
