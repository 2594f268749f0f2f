//! Where a pass reads "now" from: the system clock in production, a settable clock or
//! tokio's (pausable) clock in tests, so no test waits for a TTL to pass.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time as UNIX seconds.
pub trait Clock: Send + Sync + Debug {
    /// The current time in (fractional) UNIX seconds.
    fn now(&self) -> f64;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> f64 {
        (**self).now()
    }
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> f64 {
        unix_now()
    }
}

/// The system time as UNIX seconds; 0 for a clock set before 1970.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A clock that only moves when told to. Clones share one time, so a test keeps a clone
/// and moves the time a [`TtlManager`](crate::TtlManager) sees.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<f64>>,
}

impl ManualClock {
    /// A clock reading `now` (UNIX seconds).
    pub fn new(now: f64) -> Self {
        Self {
            now: Arc::new(Mutex::new(now)),
        }
    }

    /// Sets the time.
    pub fn set(&self, now: f64) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) += by.as_secs_f64();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> f64 {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Wall-clock time that advances with tokio's clock: the system time when it was created
/// plus the tokio time elapsed since. Under a paused runtime (`tokio::time::pause`,
/// `advance`) it moves with the paused clock, so the daemon's ticks and its notion of
/// "now" stay consistent in tests.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin_unix: f64,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// Starts at the current system time.
    pub fn new() -> Self {
        Self::starting_at(unix_now())
    }

    /// Starts at `unix` seconds.
    pub fn starting_at(unix: f64) -> Self {
        Self {
            origin_unix: unix,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> f64 {
        self.origin_unix + self.origin.elapsed().as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_time() {
        let a = ManualClock::new(100.0);
        let b = a.clone();
        b.advance(Duration::from_millis(1500));
        assert_eq!(a.now(), 101.5);
        a.set(7.0);
        assert_eq!(b.now(), 7.0);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now() > 1_577_836_800.0);
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let c = TokioClock::starting_at(1000.0);
        assert_eq!(c.now(), 1000.0);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(c.now(), 1090.0);
    }
}
