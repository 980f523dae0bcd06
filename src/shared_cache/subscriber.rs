//! The revocation subscriber: one pub/sub connection of its own, subscribed to the revocation
//! channel, reconnecting by itself. On every (re)subscription it first reads the revocation
//! records still live, so a replica that started later, or whose connection broke, learns what
//! it missed; when the subscription breaks it says so, and the cache stops trusting entries it
//! holds from before.
//!
//! A connection of its own (not RESP3 pushes on the command connection) so that the moment the
//! subscription breaks is known exactly: a command connection that reconnects and resubscribes
//! by itself would hide the window in which messages were lost.

use std::{sync::Weak, time::Duration};

use futures_util::StreamExt;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::{Inner, SharedEvent};

/// How long to wait before reconnecting, at first and at most.
const MIN_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Subscribes until the shared cache is dropped (`stop` closes).
pub(super) async fn run(shared: Weak<Inner>, mut stop: watch::Receiver<()>) {
    let mut retry = MIN_RETRY;
    let mut was_down_logged = false;
    loop {
        let Some(inner) = shared.upgrade() else {
            return;
        };
        let subscribed = tokio::select! {
            subscribed = subscribe(&inner) => subscribed,
            _ = stop.changed() => return,
        };
        let Some(mut messages) = subscribed else {
            if !was_down_logged {
                tracing::warn!(
                    "cannot subscribe to Redis revocations; retrying. Until then this replica \
                     reads no shared entries, and revocations made elsewhere reach it when its \
                     own cache entries end"
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
        };
        retry = MIN_RETRY;
        if was_down_logged {
            tracing::warn!("subscribed to Redis revocations again");
        }
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
                Some(message) => inner.heard(message.get_payload_bytes()),
                None => {
                    // Anything published from now on until the next subscription is lost: the
                    // cache stops serving what it holds from before this instant.
                    inner.set_live(false);
                    inner.emit(SharedEvent::SubscriptionBroken);
                    tracing::warn!(
                        "the Redis revocation subscription broke; this replica checks its \
                         cached sessions again and resubscribes"
                    );
                    was_down_logged = true;
                    break;
                }
            }
        }
    }
}

/// Connects, subscribes, then reads the live records: in that order, so that nothing published
/// between the two is missed (a record heard twice is applied twice, harmlessly).
async fn subscribe(inner: &Inner) -> Option<redis::aio::PubSubStream> {
    let timeout = inner.link.timeout().max(Duration::from_millis(500));
    let connect = async {
        let mut pubsub = inner.link.client().get_async_pubsub().await.ok()?;
        pubsub.subscribe(inner.names.channel()).await.ok()?;
        Some(pubsub)
    };
    let pubsub = tokio::time::timeout(timeout, connect).await.ok()??;
    let records = inner.live_records(OffsetDateTime::now_utc()).await?;
    for record in records {
        inner.heard(&record);
    }
    Some(pubsub.into_on_message())
}
