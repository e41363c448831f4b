//! Failed logins per principal and per source address, in a sliding window.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::MAX_CACHED;

/// Failed attempts per principal and per source address in a sliding window.
pub(super) struct FailureLimiter {
    pub(super) window: Duration,
    pub(super) max: u32,
    pub(super) by_key: HashMap<String, (Instant, u32)>,
}

impl FailureLimiter {
    /// Seconds until `key` may try again, if it is over the limit.
    pub(super) fn blocked(&mut self, key: &str, now: Instant) -> Option<u64> {
        let (start, count) = *self.by_key.get(key)?;
        let elapsed = now.duration_since(start);
        if elapsed >= self.window {
            self.by_key.remove(key);
            return None;
        }
        (count >= self.max).then(|| (self.window - elapsed).as_secs().max(1))
    }

    pub(super) fn failed(&mut self, key: String, now: Instant) {
        if self.by_key.len() >= MAX_CACHED {
            let window = self.window;
            self.by_key
                .retain(|_, (start, _)| now.duration_since(*start) < window);
            if self.by_key.len() >= MAX_CACHED {
                self.by_key.clear();
            }
        }
        let entry = self.by_key.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_limit_block_until_the_window_passes() {
        let mut limiter = FailureLimiter {
            window: Duration::from_secs(60),
            max: 3,
            by_key: HashMap::new(),
        };
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.blocked("ip:1", start), None);
            limiter.failed("ip:1".into(), start);
        }
        assert!(limiter.blocked("ip:1", start).is_some_and(|s| s >= 59));
        assert_eq!(limiter.blocked("ip:2", start), None);
        assert_eq!(
            limiter.blocked("ip:1", start + Duration::from_secs(61)),
            None
        );
    }
}
