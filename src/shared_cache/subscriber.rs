//! The revocation subscriber: one pub/sub connection of its own, subscribed to the revocation
//! channel, reconnecting by itself. On every (re)subscription it first reads the revocation
//! records still live, so a replica that started later, or whose connection broke, learns what
//! it missed from them.
//!
//! A break costs what staying correct needs, no more: revocations published while the
//! subscription was down are in the records read on resubscribing, so a subscription back
//! within [`BREAK_GRACE`] (the usual case: a connection killed, a proxy restarted) distrusts
//! nothing. One that is not back by then (Redis down, or out of reach of this replica alone)
//! makes the cache distrust every entry asked for before the break: revocations made elsewhere
//! are not heard, and entries must not be served past the deadline for hearing them. A read of
//! the records that could not see them all does the same.
//!
//! A connection of its own (not RESP3 pushes on the command connection) so that the moment the
//! subscription breaks is known exactly: a command connection that reconnects and resubscribes
//! by itself would hide the window in which messages were lost.

use std::{
    sync::{atomic::Ordering, Weak},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::{Inner, SharedEvent};

/// How long a broken subscription may take to come back before the cache distrusts what it
/// holds: well within the 1 s in which a revocation must reach every replica.
pub(super) const BREAK_GRACE: Duration = Duration::from_millis(500);

/// How long to wait before reconnecting, at first and at most.
const MIN_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Subscribes until the shared cache is dropped (`stop` closes).
pub(super) async fn run(shared: Weak<Inner>, mut stop: watch::Receiver<()>) {
    let mut retry = MIN_RETRY;
    let mut was_down_logged = false;
    // Which server the next subscription goes to (a cluster's nodes in turn).
    let mut attempt = 0usize;
    loop {
        let Some(inner) = shared.upgrade() else {
            return;
        };
        let subscribed = tokio::select! {
            subscribed = subscribe(&inner, attempt) => subscribed,
            _ = stop.changed() => return,
        };
        attempt = attempt.wrapping_add(1);
        let mut messages = match subscribed {
            Ok(messages) => messages,
            Err(reason) => {
                if !was_down_logged {
                    // The reason is redis-rs's or rustls's (a TLS failure names what was
                    // wrong: an unknown issuer, another host's certificate); no secret is in it.
                    tracing::warn!(
                        reason,
                        "cannot subscribe to Redis revocations; retrying. Until then this \
                         replica reads no shared entries, and revocations made elsewhere reach \
                         it when its own cache entries end"
                    );
                    was_down_logged = true;
                }
                drop(inner);
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    _ = stop.changed() => return,
                }
                retry = (retry * 2).min(MAX_RETRY);
                continue;
            }
        };
        retry = MIN_RETRY;
        if was_down_logged {
            tracing::warn!("subscribed to Redis revocations again");
        }
        inner.generation.fetch_add(1, Ordering::AcqRel);
        inner.set_live(true);
        drop(inner);
        loop {
            let message = tokio::select! {
                message = messages.next() => message,
                _ = stop.changed() => return,
            };
            let Some(inner) = shared.upgrade() else {
                return;
            };
            match message {
                Some(message) => inner.heard(message.get_payload_bytes(), true),
                None => {
                    // Anything published from now on until the next subscription is not heard;
                    // the records read then cover it, if that comes within the grace.
                    inner.set_live(false);
                    watch_break(&shared, &inner, Instant::now());
                    tracing::warn!(
                        "the Redis revocation subscription broke; resubscribing (this replica \
                         reads what it missed from the revocation records)"
                    );
                    was_down_logged = true;
                    break;
                }
            }
        }
    }
}

/// After a break at `broken_at`: unless a subscription comes live within [`BREAK_GRACE`], the
/// cache distrusts every entry asked for before the break.
fn watch_break(shared: &Weak<Inner>, inner: &Inner, broken_at: Instant) {
    let generation = inner.generation.load(Ordering::Acquire);
    let shared = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(BREAK_GRACE).await;
        let Some(inner) = shared.upgrade() else {
            return;
        };
        if inner.generation.load(Ordering::Acquire) == generation {
            tracing::warn!(
                "no Redis revocation subscription since the break: this replica checks the \
                 sessions it cached before it with Kratos again"
            );
            inner.emit(SharedEvent::MissedSince(broken_at));
        }
    });
}

/// Connects, subscribes, then reads the live records: in that order, so that nothing published
/// between the two is missed (a record heard twice is applied twice, harmlessly).
async fn subscribe(inner: &Inner, attempt: usize) -> Result<redis::aio::PubSubStream, String> {
    let timeout = inner.link.timeout().max(Duration::from_millis(500));
    let connect = async {
        let client = inner
            .link
            .topology()
            .subscriber_client(attempt)
            .await
            .ok_or("the Sentinels named no primary")?;
        let mut pubsub = client
            .get_async_pubsub()
            .await
            .map_err(|error| error.to_string())?;
        pubsub
            .subscribe(inner.names.channel())
            .await
            .map_err(|error| error.to_string())?;
        Ok::<_, String>(pubsub)
    };
    let pubsub = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| "no subscription within the timeout".to_owned())??;
    let asked_at = Instant::now();
    let records = inner
        .live_records(OffsetDateTime::now_utc())
        .await
        .ok_or("the revocation records could not be read")?;
    for record in &records.sealed {
        inner.heard(record, false);
    }
    if records.truncated {
        tracing::warn!(
            max = super::revocations::MAX_RECORDS,
            "more revocation records in Redis than this crate keeps: this replica checks every \
             session it cached with Kratos again instead of reading them all"
        );
        inner.emit(SharedEvent::MissedSince(asked_at));
    }
    Ok(pubsub.into_on_message())
}
