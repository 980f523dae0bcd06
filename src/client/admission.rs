//! When a whoami call may be sent (admission): after Kratos rate-limits or keeps failing, the
//! layer leaves it alone for a jittered window (back-off), and only so many calls run at once
//! (the lookup cap). It guards the call to Kratos only: a cached session is served whatever the
//! back-off says.
//!
//! Back-off is a small state machine:
//!
//! ```text
//!  Closed --429, or N failures in a row--> Open(until) --window over--> HalfOpen (one probe)
//!    ^                                        ^                           |   |
//!    |                                        +------429 or failure-------+   |
//!    +---------------------------any answer from Kratos (200/401/403)--------+
//! ```
//!
//! Each re-opening doubles the failure window (capped); a 429's window is Kratos's own
//! `x-ratelimit-reset`/`Retry-After` when longer. While open, lookups fail at once with
//! [`Unavailable::BackingOff`]; while the probe runs, every other lookup does too.

use std::{
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use http::StatusCode;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::{
    log_limit::WarnLimiter,
    metrics,
    outcome::{Outcome, Unauthenticated, Unavailable},
};

/// The `Retry-After` given while a probe is deciding whether Kratos is back: a probe takes at
/// most the request timeout, and callers should not all come back at once behind it.
const PROBE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Back-off and lookup-cap settings, validated by the layer's builder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AdmissionConfig {
    /// At most this many whoami calls at once.
    pub(crate) max_concurrent: usize,
    /// How long a lookup waits for one of those slots before giving up (503).
    pub(crate) queue_timeout: Duration,
    /// The first failure window, and the least a 429 backs off for.
    pub(crate) backoff_min: Duration,
    /// The longest window, whatever Kratos or the doubling says.
    pub(crate) backoff_max: Duration,
    /// How many failed calls in a row (timeouts, connection errors, 5xx, bad bodies) open the
    /// back-off. A 429 opens it at once.
    pub(crate) failure_threshold: u32,
}

/// Where the back-off state machine is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Lookups go to Kratos. `failures` counts failed calls since the last answer.
    Closed { failures: u32 },
    /// Lookups fail fast until `until`; then the next one probes. `level` counts the windows
    /// opened since Kratos last answered, and doubles the next failure window.
    Open { until: Instant, level: u32 },
    /// One probe lookup is on its way to Kratos; the others fail fast.
    HalfOpen { level: u32 },
}

/// What one whoami call says about Kratos's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Kratos answered (200, 401, 403 step-up).
    Answered,
    /// Kratos failed: a timeout, a connection error, a 5xx or other status outside whoami's
    /// contract, a body that is not a session.
    Failed,
    /// 429: back off at once.
    RateLimited(Option<Duration>),
    /// Nothing about Kratos: the layer's own refusals and interruptions, and answers about the
    /// request rather than about Kratos (a 4xx other than 401, 403 and 429, a 431 for headers
    /// too large). These never count toward the back-off, so no caller can trip it for everyone
    /// with what they send.
    Neutral,
}

impl Verdict {
    fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Unavailable(Unavailable::RateLimited { retry_after }) => {
                Self::RateLimited(*retry_after)
            }
            Outcome::Unavailable(Unavailable::Status(status)) if status.is_client_error() => {
                Self::Neutral
            }
            Outcome::Unavailable(
                Unavailable::Timeout
                | Unavailable::Transport
                | Unavailable::Status(_)
                | Unavailable::InvalidBody,
            ) => Self::Failed,
            Outcome::Unavailable(_) | Outcome::Unauthenticated(Unauthenticated::TooLarge) => {
                Self::Neutral
            }
            _ => Self::Answered,
        }
    }
}

/// The admission in front of Kratos, shared by every whoami call of one layer.
#[derive(Debug)]
pub(crate) struct Admission {
    config: AdmissionConfig,
    permits: Semaphore,
    phase: Mutex<Phase>,
    /// The back-off's transitions are warnings; a flapping Kratos must not flood the log.
    warnings: WarnLimiter,
    /// The API it guards, as the back-off's metrics name it: `whoami`, `public`, `admin`.
    api: &'static str,
}

/// Leave to send one whoami call: holds one of the concurrency slots until dropped.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    admission: &'a Admission,
    _permit: SemaphorePermit<'a>,
    /// This call decides whether the back-off ends.
    probe: bool,
    recorded: bool,
}

impl Admission {
    pub(crate) fn new(config: AdmissionConfig) -> Self {
        Self {
            config,
            permits: Semaphore::new(config.max_concurrent),
            phase: Mutex::new(Phase::Closed { failures: 0 }),
            warnings: WarnLimiter::new(),
            api: "whoami",
        }
    }

    /// The same, guarding another API than whoami (`public`, `admin`), for the metrics.
    pub(crate) fn for_api(mut self, api: &'static str) -> Self {
        self.api = api;
        self
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        // The phase is a plain value, consistent even if a holder panicked.
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A cheap look before any work: `Err` while the layer is leaving Kratos alone.
    pub(crate) fn check(&self) -> Result<(), Unavailable> {
        match *self.phase() {
            Phase::Closed { .. } => Ok(()),
            Phase::Open { until, .. } => match until.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Err(Unavailable::BackingOff { retry_after: left }),
                // The window is over: this lookup may become the probe.
                _ => Ok(()),
            },
            Phase::HalfOpen { .. } => Err(Unavailable::BackingOff {
                retry_after: PROBE_RETRY_AFTER,
            }),
        }
    }

    /// Waits (at most the queue timeout) for a slot, then asks the back-off for leave. While
    /// backing off, refuses at once, without waiting for a slot.
    pub(crate) async fn enter(&self) -> Result<Permit<'_>, Unavailable> {
        self.check()?;
        let permit = match self.permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                match tokio::time::timeout(self.config.queue_timeout, self.permits.acquire()).await
                {
                    Ok(Ok(permit)) => permit,
                    // A timeout, or a closed semaphore (never closed; treated alike).
                    Ok(Err(_)) | Err(_) => return Err(Unavailable::Overloaded),
                }
            }
        };
        // Checked after the wait: the back-off may have opened meanwhile.
        let mut phase = self.phase();
        let probe = match *phase {
            Phase::Closed { .. } => false,
            Phase::Open { until, level } => match until.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => {
                    return Err(Unavailable::BackingOff { retry_after: left })
                }
                _ => {
                    *phase = Phase::HalfOpen { level };
                    true
                }
            },
            Phase::HalfOpen { .. } => {
                return Err(Unavailable::BackingOff {
                    retry_after: PROBE_RETRY_AFTER,
                })
            }
        };
        Ok(Permit {
            admission: self,
            _permit: permit,
            probe,
            recorded: false,
        })
    }

    /// Its settings: for another admission of the same shape.
    pub(crate) fn config(&self) -> AdmissionConfig {
        self.config
    }

    /// How many whoami calls are running now.
    pub(crate) fn in_flight(&self) -> usize {
        self.config.max_concurrent - self.permits.available_permits()
    }

    /// Whether lookups are being answered 503 without asking Kratos.
    pub(crate) fn backing_off(&self) -> bool {
        !matches!(*self.phase(), Phase::Closed { .. })
    }

    /// Takes what Kratos answered into account, and frees the permit's slot.
    ///
    /// After a 429, the outcome's `retry_after` is capped at the back-off window: clients are
    /// told when this layer asks Kratos again, not a longer wait Kratos named (up to an hour).
    /// Without a hint, the rejection's default stands.
    pub(crate) fn record(&self, permit: Permit<'_>, outcome: &mut Outcome) {
        let window = self.record_verdict(permit, Verdict::of(outcome), &*outcome);
        if let (Some(window), Outcome::Unavailable(Unavailable::RateLimited { retry_after })) =
            (window, outcome)
        {
            let until_probe = window.max(Duration::from_secs(1));
            *retry_after = retry_after.map(|wait| wait.min(until_probe));
        }
    }

    /// Takes a lifecycle call's answer into account, as [`record`](Self::record) does
    /// whoami's: a 429 backs off, a failure counts toward the back-off, any other answer says
    /// Kratos is up. `answer` is the status Kratos sent (with its 429 wait), or why none came.
    pub(crate) fn record_call(
        &self,
        permit: Permit<'_>,
        answer: Result<(StatusCode, Option<Duration>), &Unavailable>,
    ) {
        let verdict = match answer {
            Ok((StatusCode::TOO_MANY_REQUESTS, retry_after)) => Verdict::RateLimited(retry_after),
            Ok((status, _)) if status.is_server_error() => Verdict::Failed,
            Ok(_) => Verdict::Answered,
            Err(Unavailable::Timeout | Unavailable::Transport | Unavailable::InvalidBody) => {
                Verdict::Failed
            }
            Err(_) => Verdict::Neutral,
        };
        let reason = match answer {
            Ok((status, _)) => Outcome::Unavailable(Unavailable::Status(status)),
            Err(cause) => Outcome::Unavailable(cause.clone()),
        };
        self.record_verdict(permit, verdict, &reason);
    }

    /// Moves the back-off on `verdict` and frees the permit's slot; after a 429, returns how
    /// long the window runs from now. `reason` is what the warnings name.
    fn record_verdict(
        &self,
        mut permit: Permit<'_>,
        verdict: Verdict,
        reason: &Outcome,
    ) -> Option<Duration> {
        permit.recorded = true;
        let probe = permit.probe;
        let mut phase = self.phase();
        match verdict {
            Verdict::RateLimited(retry_after) => {
                return Some(self.open_for_rate_limit(&mut phase, probe, retry_after));
            }
            Verdict::Neutral => {
                if probe {
                    self.release_probe(&mut phase);
                }
            }
            Verdict::Answered => self.answered(&mut phase, probe),
            Verdict::Failed => self.failed(&mut phase, probe, reason),
        }
        None
    }

    /// A 429: the back-off opens at once, for Kratos's wait when that is longer than the
    /// doubled window. Returns how long from now the window runs.
    fn open_for_rate_limit(
        &self,
        phase: &mut Phase,
        probe: bool,
        retry_after: Option<Duration>,
    ) -> Duration {
        let now = Instant::now();
        let level = match *phase {
            Phase::Closed { .. } => 0,
            Phase::Open { level, .. } => level,
            Phase::HalfOpen { level } => level + u32::from(probe),
        };
        let base = retry_after
            .unwrap_or(Duration::ZERO)
            .max(self.doubled(level));
        let until = now + self.window(base);
        // Another call's window may already reach further: keep the later end.
        let until = match *phase {
            Phase::Open { until: open, .. } => open.max(until),
            _ => until,
        };
        if let Phase::Closed { .. } = *phase {
            metrics::backoff(self.api, true);
        }
        *phase = Phase::Open { until, level };
        if let Some(left_out) = self.warnings.admit(("backoff", "rate_limited")) {
            tracing::warn!(
                window_ms = until.saturating_duration_since(now).as_millis() as u64,
                kratos_retry_after_s = retry_after.map(|wait| wait.as_secs()),
                left_out_since_last = left_out,
                "Kratos rate-limited whoami (429); backing off: lookups get 503 until a probe \
                 succeeds"
            );
        }
        until.saturating_duration_since(now)
    }

    /// Kratos answered (200, 401, 403 step-up): failures no longer run in a row.
    fn answered(&self, phase: &mut Phase, probe: bool) {
        match *phase {
            Phase::Closed { .. } => *phase = Phase::Closed { failures: 0 },
            Phase::HalfOpen { .. } if probe => {
                *phase = Phase::Closed { failures: 0 };
                metrics::backoff(self.api, false);
                tracing::info!("Kratos answered the probe lookup; back-off over");
            }
            // A call sent before the back-off opened: the window (and the probe) decide, not it.
            _ => {}
        }
    }

    /// Kratos failed (timeout, connection error, 5xx, a body that is not a session).
    fn failed(&self, phase: &mut Phase, probe: bool, outcome: &Outcome) {
        let now = Instant::now();
        match *phase {
            Phase::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if failures < self.config.failure_threshold {
                    *phase = Phase::Closed { failures };
                    return;
                }
                let window = self.window(self.doubled(0));
                metrics::backoff(self.api, true);
                *phase = Phase::Open {
                    until: now + window,
                    level: 0,
                };
                if let Some(left_out) = self.warnings.admit(("backoff", "failures")) {
                    tracing::warn!(
                        failures,
                        window_ms = window.as_millis() as u64,
                        reason = %outcome,
                        left_out_since_last = left_out,
                        "Kratos failed repeatedly; backing off: lookups get 503 until a probe \
                         succeeds"
                    );
                }
            }
            Phase::HalfOpen { level } if probe => {
                let level = level.saturating_add(1);
                let window = self.window(self.doubled(level));
                *phase = Phase::Open {
                    until: now + window,
                    level,
                };
                if let Some(left_out) = self.warnings.admit(("backoff", "probe_failed")) {
                    tracing::warn!(
                        window_ms = window.as_millis() as u64,
                        reason = %outcome,
                        left_out_since_last = left_out,
                        "the probe lookup failed; backing off for longer"
                    );
                }
            }
            // A call sent before the back-off opened: the window (and the probe) decide, not it.
            _ => {}
        }
    }

    /// A probe that ended without an answer: the next lookup probes instead.
    fn release_probe(&self, phase: &mut Phase) {
        if let Phase::HalfOpen { level } = *phase {
            *phase = Phase::Open {
                until: Instant::now(),
                level,
            };
        }
    }

    /// The failure window for this level: the minimum, doubled per level, capped.
    fn doubled(&self, level: u32) -> Duration {
        let factor = 1u32 << level.min(16);
        self.config
            .backoff_min
            .saturating_mul(factor)
            .min(self.config.backoff_max)
    }

    /// `base`, kept within the bounds, with jitter so that replicas backing off together do not
    /// come back together.
    fn window(&self, base: Duration) -> Duration {
        jittered(
            base.max(self.config.backoff_min),
            self.config.backoff_max,
            unit_random(),
        )
    }
}

impl Drop for Admission {
    /// A layer dropped while backing off no longer counts as backing off.
    fn drop(&mut self) {
        if self.backing_off() {
            metrics::backoff_dropped(self.api);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            let mut phase = self.admission.phase();
            self.admission.release_probe(&mut phase);
        }
    }
}

/// Uniformly between `base` and a quarter more (never less: a server's wait is a minimum),
/// capped at `max`. At the cap, where adding is impossible, the spread goes below it instead
/// (down to 80 % of `max`), so callers capped together still spread out.
fn jittered(base: Duration, max: Duration, random: f64) -> Duration {
    let high = (base + base / 4).min(max);
    let low = if base >= max { max - max / 5 } else { base };
    low + (high - low).mul_f64(random)
}

/// A number in `[0, 1)`, from the operating system; from the clock if that fails (jitter only
/// spreads retries out, it guards no secret).
fn unit_random() -> f64 {
    let bits = getrandom::u64().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::from(since.subsec_nanos()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            })
    });
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AdmissionConfig {
        AdmissionConfig {
            max_concurrent: 2,
            queue_timeout: Duration::from_millis(10),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            failure_threshold: 3,
        }
    }

    fn failed() -> Outcome {
        Outcome::Unavailable(Unavailable::Transport)
    }

    fn rejected() -> Outcome {
        Outcome::Unauthenticated(Unauthenticated::Rejected)
    }

    fn open_for(admission: &Admission) -> Duration {
        match admission.check() {
            Err(Unavailable::BackingOff { retry_after }) => retry_after,
            other => panic!("expected back-off, got {other:?}"),
        }
    }

    #[test]
    fn jitter_stays_within_bounds_and_spreads() {
        let max = Duration::from_secs(30);
        for base in [
            Duration::from_secs(1),
            Duration::from_secs(29),
            max,
            max * 2,
        ] {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..200 {
                let window = jittered(base, max, unit_random());
                assert!(window <= max, "{window:?}");
                assert!(window >= base.min(max) * 4 / 5, "{window:?} for {base:?}");
                if base < max {
                    assert!(window >= base, "never less than a server's wait");
                }
                seen.insert(window);
            }
            assert!(seen.len() > 100, "jitter spreads windows ({base:?})");
        }
    }

    #[tokio::test]
    async fn failures_in_a_row_open_and_any_answer_resets_the_count() {
        let admission = Admission::new(config());
        for _ in 0..2 {
            let permit = admission.enter().await.expect("closed");
            admission.record(permit, &mut failed());
        }
        // A 401 is a healthy Kratos: the count starts again.
        let permit = admission.enter().await.expect("closed");
        admission.record(permit, &mut rejected());
        for _ in 0..2 {
            let permit = admission.enter().await.expect("closed");
            admission.record(permit, &mut failed());
        }
        assert!(
            admission.check().is_ok(),
            "two failures in a row are not three"
        );
        let permit = admission.enter().await.expect("closed");
        admission.record(
            permit,
            &mut Outcome::Unavailable(Unavailable::Status(StatusCode::BAD_GATEWAY)),
        );
        let left = open_for(&admission);
        assert!(left <= Duration::from_millis(125), "{left:?}");
        assert!(matches!(
            admission.enter().await,
            Err(Unavailable::BackingOff { .. })
        ));
    }

    #[tokio::test]
    async fn answers_about_the_request_never_count_toward_the_back_off() {
        let admission = Admission::new(config());
        for _ in 0..2 {
            let permit = admission.enter().await.expect("closed");
            admission.record(permit, &mut failed());
        }
        // A caller's oversized or odd request, refused by Kratos or a proxy in front of it, a
        // hundred times: neither a failure nor an answer that resets the count.
        for round in 0..100u16 {
            let permit = admission.enter().await.expect("never opened by these");
            let mut outcome = match round % 5 {
                0 => Outcome::Unauthenticated(Unauthenticated::TooLarge),
                1 => Outcome::Unavailable(Unavailable::Status(StatusCode::BAD_REQUEST)),
                2 => Outcome::Unavailable(Unavailable::Status(StatusCode::NOT_FOUND)),
                3 => Outcome::Unavailable(Unavailable::Status(StatusCode::FORBIDDEN)),
                _ => Outcome::Unavailable(Unavailable::Status(StatusCode::PAYLOAD_TOO_LARGE)),
            };
            admission.record(permit, &mut outcome);
        }
        assert!(!admission.backing_off());
        let permit = admission.enter().await.expect("closed");
        admission.record(permit, &mut failed());
        assert!(
            admission.backing_off(),
            "the third real failure in a row opens it"
        );

        // A probe that got such an answer decides nothing: the next lookup probes instead.
        tokio::time::sleep(open_for(&admission) + Duration::from_millis(5)).await;
        let probe = admission.enter().await.expect("the probe");
        admission.record(
            probe,
            &mut Outcome::Unavailable(Unavailable::Status(StatusCode::BAD_REQUEST)),
        );
        let probe = admission.enter().await.expect("another probe");
        assert!(probe.probe);
    }

    #[tokio::test]
    async fn one_probe_after_the_window_then_longer_windows_until_kratos_answers() {
        let admission = Admission::new(AdmissionConfig {
            failure_threshold: 1,
            ..config()
        });
        let permit = admission.enter().await.expect("closed");
        admission.record(permit, &mut failed());
        let first = open_for(&admission);
        tokio::time::sleep(first + Duration::from_millis(5)).await;

        assert!(admission.check().is_ok(), "the window is over");
        let probe = admission.enter().await.expect("the probe");
        assert!(probe.probe);
        // While the probe runs, everyone else fails fast.
        assert!(matches!(
            admission.enter().await,
            Err(Unavailable::BackingOff { retry_after }) if retry_after == PROBE_RETRY_AFTER
        ));
        admission.record(probe, &mut failed());
        let second = open_for(&admission);
        assert!(second >= Duration::from_millis(190), "doubled: {second:?}");
        tokio::time::sleep(second + Duration::from_millis(5)).await;

        let probe = admission.enter().await.expect("the probe");
        admission.record(probe, &mut rejected());
        assert!(!admission.backing_off());
        let permit = admission.enter().await.expect("closed again");
        assert!(!permit.probe);
    }

    #[tokio::test]
    async fn a_429_opens_at_once_for_kratos_wait_and_a_lost_probe_is_replaced() {
        let admission = Admission::new(config());
        let permit = admission.enter().await.expect("closed");
        let mut limited = Outcome::Unavailable(Unavailable::RateLimited {
            retry_after: Some(Duration::from_secs(2)),
        });
        admission.record(permit, &mut limited);
        let left = open_for(&admission);
        assert!(left > Duration::from_millis(1900) && left <= Duration::from_millis(2500));

        // Clients are told when the layer asks again: never a longer wait than the window.
        let admission = Admission::new(config());
        let permit = admission.enter().await.expect("closed");
        let mut limited = Outcome::Unavailable(Unavailable::RateLimited {
            retry_after: Some(Duration::from_secs(3600)),
        });
        admission.record(permit, &mut limited);
        let told = match limited {
            Outcome::Unavailable(unavailable) => unavailable.retry_after().expect("a wait"),
            other => panic!("{other:?}"),
        };
        assert!(told <= Duration::from_secs(30), "{told:?}");
        assert!(
            told + Duration::from_secs(1) >= open_for(&admission),
            "{told:?}"
        );

        // A probe that ends without an answer (the layer's own refusal) frees the probe slot.
        let admission = Admission::new(AdmissionConfig {
            failure_threshold: 1,
            backoff_min: Duration::from_millis(1),
            ..config()
        });
        let permit = admission.enter().await.expect("closed");
        admission.record(permit, &mut failed());
        tokio::time::sleep(Duration::from_millis(5)).await;
        let probe = admission.enter().await.expect("the probe");
        drop(probe);
        let probe = admission.enter().await.expect("another probe");
        assert!(probe.probe);
    }

    #[tokio::test]
    async fn the_cap_bounds_calls_in_flight_and_the_wait() {
        let admission = Admission::new(config());
        let first = admission.enter().await.expect("slot 1");
        let second = admission.enter().await.expect("slot 2");
        assert_eq!(admission.in_flight(), 2);
        assert!(matches!(
            admission.enter().await,
            Err(Unavailable::Overloaded)
        ));
        admission.record(first, &mut rejected());
        let third = admission.enter().await.expect("a freed slot");
        drop((second, third));
        assert_eq!(admission.in_flight(), 0);
    }
}
