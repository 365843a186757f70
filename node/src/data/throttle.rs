//! A byte-rate cap shared by a site's catch-up streams (a token bucket).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Lets through at most `rate` bytes per second on average, in bursts of up to one
/// second's worth.
#[derive(Debug)]
pub struct Throttle {
    rate: f64,
    /// Tokens (bytes) available, and when they were counted. May go negative: a taker
    /// that overdraws waits until the debt is paid.
    bucket: Mutex<(f64, Instant)>,
}

impl Throttle {
    /// A cap of `bytes_per_second` (at least 1).
    pub fn new(bytes_per_second: u64) -> Self {
        let rate = bytes_per_second.max(1) as f64;
        Self { rate, bucket: Mutex::new((rate, Instant::now())) }
    }

    /// Takes `bytes`, answering how long to wait before using them.
    pub fn take(&self, bytes: usize) -> Duration {
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let (tokens, at) = *bucket;
        let refilled = (tokens + now.duration_since(at).as_secs_f64() * self.rate).min(self.rate);
        let left = refilled - bytes as f64;
        *bucket = (left, now);
        if left >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-left / self.rate) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_takers_wait_in_proportion() {
        let throttle = Throttle::new(1000);
        assert_eq!(throttle.take(1000), Duration::ZERO);
        let wait = throttle.take(500);
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500), "{wait:?}");
        let wait = throttle.take(1000);
        assert!(wait > Duration::from_millis(1400) && wait <= Duration::from_millis(1500), "{wait:?}");
    }
}
