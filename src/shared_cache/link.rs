//! The command connection to Redis and the gate in front of it: every call bounded by the Redis
//! timeout, and after failures a pause during which Redis is not asked at all, so an outage
//! costs no request a timeout. Transitions are logged once each, at `warn`.

use std::{
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use redis::FromRedisValue;

use super::topology::{Connection, Topology};

/// How long making the command connection may take (a cluster's: its slots, then its nodes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Failed calls in a row that pause the use of Redis.
const FAILURES_TO_PAUSE: u32 = 2;
/// The first pause; each failed probe doubles it, up to [`MAX_PAUSE`].
const MIN_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// What a call can end in besides an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// Paused after failures: Redis was not asked.
    Paused,
    /// Slower than the Redis timeout.
    Timeout,
    /// Refused, unreachable, or an answer of another type.
    Error,
}

/// Counters for [`SharedCacheStats`](super::SharedCacheStats).
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) errors: AtomicU64,
    /// Values that did not open (tampered, another secret, another version).
    pub(super) unreadable: AtomicU64,
}

/// The link: the topology's command connection (made on first use, inside the runtime; kept
/// working by redis-rs) behind the gate.
pub(super) struct Link {
    topology: Topology,
    /// The command connection once made; dropped after a failure when the topology says so.
    connection: Mutex<Option<Connection>>,
    /// One connection made at a time.
    connecting: tokio::sync::Mutex<()>,
    timeout: Duration,
    failures: AtomicU32,
    pause: Mutex<Pause>,
    pub(super) counters: Counters,
}

#[derive(Debug, Default)]
struct Pause {
    until: Option<Instant>,
    length: Duration,
}

impl Link {
    pub(super) fn new(topology: Topology, timeout: Duration) -> Self {
        Self {
            topology,
            connection: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            timeout,
            failures: AtomicU32::new(0),
            pause: Mutex::new(Pause::default()),
            counters: Counters::default(),
        }
    }

    pub(super) fn topology(&self) -> &Topology {
        &self.topology
    }

    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether Redis may be asked now: not paused, or the pause is over (the next call probes).
    pub(super) fn usable(&self) -> bool {
        let pause = self.pause.lock().unwrap_or_else(PoisonError::into_inner);
        pause.until.is_none_or(|until| until <= Instant::now())
    }

    /// Runs one command or pipeline within the timeout, through the gate.
    pub(super) async fn call<T: FromRedisValue>(
        &self,
        command: &(impl Command + ?Sized),
    ) -> Result<T, Failure> {
        if !self.usable() {
            return Err(Failure::Paused);
        }
        self.call_even_paused(command).await
    }

    /// [`call`](Self::call), paused or not: for what is rare and worth a timeout.
    pub(super) async fn call_even_paused<T: FromRedisValue>(
        &self,
        command: &(impl Command + ?Sized),
    ) -> Result<T, Failure> {
        self.call_within(command, self.timeout).await
    }

    /// [`call_even_paused`](Self::call_even_paused) with a longer timeout, for a large answer
    /// read rarely (the revocation records on subscribing).
    pub(super) async fn call_within<T: FromRedisValue>(
        &self,
        command: &(impl Command + ?Sized),
        timeout: Duration,
    ) -> Result<T, Failure> {
        // Connecting to a cluster (learning its slots) takes longer than a call: allowed once.
        let connect = tokio::time::timeout(timeout.max(CONNECT_TIMEOUT), self.connection()).await;
        let Ok(Some(mut connection)) = connect else {
            self.failed(Failure::Error, "the Redis connection could not be set up");
            return Err(Failure::Error);
        };
        let result = tokio::time::timeout(timeout, command.run(&mut connection)).await;
        match result {
            Ok(Ok(value)) => {
                self.succeeded();
                Ok(value)
            }
            Ok(Err(error)) => {
                // Redis's own error text names no key or value of ours.
                self.failed(Failure::Error, &error.to_string());
                self.forget_connection();
                Err(Failure::Error)
            }
            Err(_) => {
                self.failed(Failure::Timeout, "no answer within the Redis timeout");
                self.forget_connection();
                Err(Failure::Timeout)
            }
        }
    }

    /// The command connection, made when there is none; `None` (and tried again on a later
    /// call) while it cannot be made.
    async fn connection(&self) -> Option<Connection> {
        if let Some(connection) = self.current() {
            return Some(connection);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(connection) = self.current() {
            return Some(connection);
        }
        // Boxed: rare, and large (a Sentinel's round trips), it need not be inline in every
        // call's future.
        let made = Box::pin(self.topology.connect(self.timeout)).await.ok()?;
        *self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(made.clone());
        Some(made)
    }

    fn current(&self) -> Option<Connection> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// After a failed call: a connection that may lead to a replaced primary is made anew.
    fn forget_connection(&self) {
        if self.topology.reconnects_on_failure() {
            *self
                .connection
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
        let mut pause = self.pause.lock().unwrap_or_else(PoisonError::into_inner);
        if pause.until.take().is_some() {
            pause.length = Duration::ZERO;
            crate::metrics::shared_cache_paused(false);
            tracing::warn!("Redis answers again: the shared session cache is in use");
        }
    }

    fn failed(&self, failure: Failure, reason: &str) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        crate::metrics::shared_cache_error("call");
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let mut pause = self.pause.lock().unwrap_or_else(PoisonError::into_inner);
        let probing = pause.until.is_some();
        if failures < FAILURES_TO_PAUSE && !probing {
            return;
        }
        let length = if probing {
            (pause.length * 2).min(MAX_PAUSE)
        } else {
            MIN_PAUSE
        };
        pause.length = length;
        pause.until = Some(Instant::now() + length);
        // One line when the pause begins; failed probes only lengthen it (debug).
        if probing {
            tracing::debug!(
                ?failure,
                reason,
                pause_s = length.as_secs(),
                "Redis still failing"
            );
        } else {
            crate::metrics::shared_cache_paused(true);
            tracing::warn!(
                ?failure,
                reason,
                pause_s = length.as_secs(),
                "Redis is failing: serving without the shared session cache (local cache and \
                 Kratos) until it answers again"
            );
        }
    }
}

/// A command or a pipeline.
pub(super) trait Command: Sync {
    fn run<T: FromRedisValue>(
        &self,
        connection: &mut Connection,
    ) -> impl std::future::Future<Output = redis::RedisResult<T>> + Send;
}

impl Command for redis::Cmd {
    fn run<T: FromRedisValue>(
        &self,
        connection: &mut Connection,
    ) -> impl std::future::Future<Output = redis::RedisResult<T>> + Send {
        self.query_async(connection)
    }
}

impl Command for redis::Pipeline {
    fn run<T: FromRedisValue>(
        &self,
        connection: &mut Connection,
    ) -> impl std::future::Future<Output = redis::RedisResult<T>> + Send {
        self.query_async(connection)
    }
}
