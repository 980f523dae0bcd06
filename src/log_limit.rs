//! Warnings that cannot flood the log: per cause, the first is written at once, then like ones
//! are only counted until [`WARN_SUMMARY_INTERVAL`] has passed, and the next one written says how
//! many were left out.
//!
//! An outage or an attack makes the same warning thousands of times a second (every 503 during a
//! back-off, every stale session served); a log that grows by megabytes a second hides the one
//! line that matters and costs disk and money. Each written line still says what happened.

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// How long like warnings are counted instead of written after one was written.
pub(crate) const WARN_SUMMARY_INTERVAL: Duration = Duration::from_secs(5);

/// What a warning is about: its event and its reason, both stable names.
pub(crate) type Cause = (&'static str, &'static str);

/// The per-cause windows of one layer. The lock is taken only for warnings, never on a request
/// that is served normally.
#[derive(Debug, Default)]
pub(crate) struct WarnLimiter {
    windows: Mutex<Vec<Window>>,
}

#[derive(Debug)]
struct Window {
    cause: Cause,
    /// When the last warning of this cause was written.
    written_at: Instant,
    /// Like warnings since then, not written.
    left_out: u64,
}

impl WarnLimiter {
    /// No warning written yet; `const` for the few warnings that belong to no layer.
    pub(crate) const fn new() -> Self {
        Self {
            windows: Mutex::new(Vec::new()),
        }
    }

    /// Whether to write a warning of this cause now: `Some(n)` with the number of like warnings
    /// left out since the last one written, `None` to leave this one out.
    pub(crate) fn admit(&self, cause: Cause) -> Option<u64> {
        self.admit_at(cause, Instant::now())
    }

    fn admit_at(&self, cause: Cause, now: Instant) -> Option<u64> {
        // A poisoned lock only means a thread panicked between plain updates of counters.
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(window) = windows.iter_mut().find(|window| window.cause == cause) else {
            windows.push(Window {
                cause,
                written_at: now,
                left_out: 0,
            });
            return Some(0);
        };
        if now.saturating_duration_since(window.written_at) < WARN_SUMMARY_INTERVAL {
            window.left_out = window.left_out.saturating_add(1);
            return None;
        }
        window.written_at = now;
        Some(std::mem::take(&mut window.left_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_written_then_one_a_window_with_the_count() {
        let limiter = WarnLimiter::default();
        let start = Instant::now();
        let timeout = ("unavailable", "timeout");
        assert_eq!(limiter.admit_at(timeout, start), Some(0));
        for _ in 0..999 {
            assert_eq!(
                limiter.admit_at(timeout, start + Duration::from_secs(1)),
                None
            );
        }
        // Another cause has a window of its own.
        assert_eq!(
            limiter.admit_at(("unavailable", "transport"), start),
            Some(0)
        );
        let later = start + WARN_SUMMARY_INTERVAL;
        assert_eq!(limiter.admit_at(timeout, later), Some(999));
        assert_eq!(limiter.admit_at(timeout, later), None);
        assert_eq!(
            limiter.admit_at(timeout, later + WARN_SUMMARY_INTERVAL),
            Some(1)
        );
    }
}
