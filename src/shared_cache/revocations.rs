//! Revocations through Redis: each one is recorded in a sorted set by time (what a replica that
//! subscribes later reads) and published on the channel (what the replicas subscribed now
//! hear). The two are sent apart: `PUBLISH` is refused by no `maxmemory` policy, so a Redis that
//! is full (`noeviction`) still carries the message when it refuses the record, where one
//! transaction for both lost the message with the record.
//!
//! What Redis does not take now is retried from a queue of this replica's own until it is taken
//! or no longer matters (older than the retention): a revocation made while Redis is paused
//! (`CLIENT PAUSE WRITE`) or out of reach reaches the other replicas as soon as Redis takes
//! writes again. A record that lands late is published once more, for a replica whose
//! subscription broke while the first message went by.
//!
//! Records are bounded whatever was written to the set (by this crate, or by anyone able to
//! write to Redis): each write trims what is past the retention, what lies further ahead than
//! any replica's clock can be ([`FUTURE_MARGIN`]), and all but the newest [`MAX_RECORDS`]. A
//! replica reads at most that many, within [`RECORDS_TIMEOUT`]; a set holding more than the
//! crate can have written says records were lost, and the replica distrusts everything it holds
//! instead of reading them all.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError, Weak,
    },
    time::Duration,
};

use time::OffsetDateTime;

use super::{duration_ms, unix_ms, Inner, Record, RevokedTarget, SharedCache};

/// The most revocation records kept (and read): more than the revocations a busy app makes in a
/// retention, few enough (about 2 MB) to read on every subscription.
pub(super) const MAX_RECORDS: usize = 10_000;

/// How far ahead of this replica's clock a record's time may lie and still be one this crate
/// wrote (another replica's clock running ahead). Further ahead, it is junk: ignored, trimmed.
const FUTURE_MARGIN: Duration = Duration::from_secs(60);

/// How long reading the records on a subscription may take: up to [`MAX_RECORDS`] values.
pub(super) const RECORDS_TIMEOUT: Duration = Duration::from_secs(2);

/// How often what Redis did not take is tried again.
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// The most revocations waiting to be retried; past it the oldest is given up (with a warning).
const MAX_UNSENT: usize = 10_000;

/// A revocation not yet fully taken by Redis.
struct Unsent {
    sealed: Vec<u8>,
    /// The record's time, in Unix milliseconds.
    at_ms: i64,
    /// The credential whose shared entry goes with the record, if one was named.
    entry_of: Option<[u8; 32]>,
    published: bool,
    recorded: bool,
}

/// The revocations this replica is still trying to get into Redis.
#[derive(Default)]
pub(super) struct Unsents {
    queue: Mutex<VecDeque<Unsent>>,
    /// Whether a retrier runs; changed only under the queue's lock, so none is lost.
    retrying: AtomicBool,
}

impl Unsents {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Unsent>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The live records read on a subscription.
pub(super) struct LiveRecords {
    pub(super) sealed: Vec<Vec<u8>>,
    /// More than [`MAX_RECORDS`] are there: some were not read.
    pub(super) truncated: bool,
}

impl SharedCache {
    /// Publishes a revocation made here and records it for replicas that subscribe later;
    /// drops the credential's entry too when one is named. Tried even while Redis is paused: a
    /// revocation is rare and worth one timeout. What Redis does not take now is retried until
    /// it does.
    pub(crate) async fn publish(&self, target: RevokedTarget, entry_of: Option<&[u8; 32]>) {
        let inner = &*self.inner;
        let at_ms = unix_ms(OffsetDateTime::now_utc());
        let record = Record { target, at: at_ms };
        let Some(sealed) = serde_json::to_vec(&record)
            .ok()
            .and_then(|plain| inner.sealer.seal(inner.names.records().as_bytes(), &plain))
        else {
            return;
        };
        let mut unsent = Unsent {
            sealed,
            at_ms,
            entry_of: entry_of.copied(),
            published: false,
            recorded: false,
        };
        inner.send(&mut unsent).await;
        if unsent.published && unsent.recorded {
            return;
        }
        if let Some(left_out) = inner.warnings.admit(("shared_cache", "publish")) {
            tracing::warn!(
                published = unsent.published,
                recorded = unsent.recorded,
                left_out_since_last = left_out,
                "Redis did not take a revocation (full, paused or unreachable): retrying until it \
                 does; until then other replicas may serve the session"
            );
        }
        self.retry_later(unsent);
    }

    /// Queues what Redis did not take, and starts the retrier if it is not running.
    fn retry_later(&self, unsent: Unsent) {
        let inner = &*self.inner;
        let start = {
            let mut queue = inner.unsent.lock();
            if queue.len() >= MAX_UNSENT {
                queue.pop_front();
                if let Some(left_out) = inner.warnings.admit(("shared_cache", "unsent_dropped")) {
                    tracing::warn!(
                        max = MAX_UNSENT,
                        left_out_since_last = left_out,
                        "too many revocations waiting for Redis: the oldest is given up (other \
                         replicas see it when their cache entries end)"
                    );
                }
            }
            queue.push_back(unsent);
            !inner.unsent.retrying.swap(true, Ordering::AcqRel)
        };
        if start {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(retry(Arc::downgrade(&self.inner)));
            }
        }
    }
}

/// Retries the queued revocations until the queue is empty or the cache is dropped. One runs at
/// a time: it is started by the push that finds none running, and ends on finding the queue
/// empty.
async fn retry(shared: Weak<Inner>) {
    loop {
        tokio::time::sleep(RETRY_EVERY).await;
        let Some(inner) = shared.upgrade() else {
            return;
        };
        let oldest_ms = unix_ms(OffsetDateTime::now_utc() - inner.retention);
        let batch: Vec<Unsent> = inner.unsent.lock().drain(..).collect();
        let mut left = Vec::new();
        for mut unsent in batch {
            if unsent.at_ms < oldest_ms {
                // Past the retention: no entry asked for before it can be served any more.
                continue;
            }
            let was_recorded = unsent.recorded;
            inner.send(&mut unsent).await;
            if unsent.recorded && !was_recorded && unsent.published {
                // Landed late: say it again for whoever was not subscribed the first time.
                unsent.published = false;
                inner.send(&mut unsent).await;
            }
            if !(unsent.published && unsent.recorded) {
                left.push(unsent);
            }
        }
        let mut queue = inner.unsent.lock();
        // Newer ones pushed meanwhile stay behind the ones retried.
        for unsent in left.into_iter().rev() {
            queue.push_front(unsent);
        }
        if queue.is_empty() {
            inner.unsent.retrying.store(false, Ordering::Release);
            tracing::info!("Redis took every revocation that was waiting");
            return;
        }
    }
}

impl Inner {
    /// Sends what Redis has not taken of a revocation yet: the record (with the trims that
    /// bound the set, and the credential's entry dropped), then the message. In that order: a
    /// replica subscribes before it reads the records, so whichever of the two it misses, it
    /// has the other (a message sent before the record could reach no one and be read by no
    /// one, between a subscription and its read).
    async fn send(&self, unsent: &mut Unsent) {
        if !unsent.recorded {
            unsent.recorded = self.record(unsent).await;
        }
        if !unsent.published {
            let publish = redis::cmd("PUBLISH")
                .arg(self.names.channel())
                .arg(&unsent.sealed)
                .clone();
            unsent.published = self.link.call_even_paused::<i64>(&publish).await.is_ok();
            if unsent.published {
                crate::metrics::revocation_published();
            }
        }
    }

    /// Adds the record, trims the set, drops the credential's entry: `true` once Redis took it.
    async fn record(&self, unsent: &Unsent) -> bool {
        let records = self.names.records();
        let now = OffsetDateTime::now_utc();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("ZADD")
            .arg(&records)
            .arg(unsent.at_ms)
            .arg(&unsent.sealed)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&records)
            .arg("-inf")
            .arg(format!("({}", unix_ms(now - self.retention)))
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&records)
            .arg(format!("({}", unix_ms(now + FUTURE_MARGIN)))
            .arg("+inf")
            .ignore()
            .cmd("ZREMRANGEBYRANK")
            .arg(&records)
            .arg(0)
            .arg(-(MAX_RECORDS as i64) - 1)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&records)
            .arg(duration_ms(self.retention + FUTURE_MARGIN))
            .ignore();
        let recorded = self.link.call_even_paused::<()>(&pipe).await.is_ok();
        // On its own: on a cluster the entry lives in another slot than the records. Best
        // effort: the record already outdates the entry wherever it is read.
        if let Some(key) = &unsent.entry_of {
            let drop_entry = redis::cmd("DEL").arg(self.names.entry(key)).clone();
            let _ = self.link.call_even_paused::<i64>(&drop_entry).await;
        }
        recorded
    }

    /// The revocation records that may still matter at `now`: within the retention, and not
    /// further ahead than [`FUTURE_MARGIN`]; at most [`MAX_RECORDS`], read within
    /// [`RECORDS_TIMEOUT`]. Reads only: a subscription works while Redis takes no writes.
    pub(super) async fn live_records(&self, now: OffsetDateTime) -> Option<LiveRecords> {
        let read = redis::cmd("ZRANGEBYSCORE")
            .arg(self.names.records())
            .arg(unix_ms(now - self.retention))
            .arg(unix_ms(now + FUTURE_MARGIN))
            .arg("LIMIT")
            .arg(0)
            .arg(MAX_RECORDS + 1)
            .clone();
        let mut sealed: Vec<Vec<u8>> = self.link.call_within(&read, RECORDS_TIMEOUT).await.ok()?;
        let truncated = sealed.len() > MAX_RECORDS;
        sealed.truncate(MAX_RECORDS);
        Some(LiveRecords { sealed, truncated })
    }

    /// How many revocations are waiting to be retried.
    pub(super) fn unsent_count(&self) -> usize {
        self.unsent.len()
    }
}
