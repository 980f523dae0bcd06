//! The miss path: one whoami call shared by every concurrent lookup of a credential, on a task of
//! its own, and what each lookup learns from it.

use http::HeaderValue;
use tracing::Instrument;

use super::{
    entry::{Cached, CachedAnswer},
    key::CacheKey,
    second_level::SecondLevel,
    SessionCache,
};
use crate::{
    client::{Correlation, KratosClient},
    credentials::Credential,
    metrics::ServedFrom,
    outcome::{Outcome, StaleSession, Unavailable},
    session::KratosSession,
};

/// How a lookup was served, for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CacheStatus {
    /// From the cache.
    Hit,
    /// This lookup asked Kratos.
    Miss,
    /// Another lookup for the same credential asked Kratos; this one waited for it.
    Coalesced,
    /// Kratos could not be asked; an expired entry was served (stale-if-error).
    Stale,
    /// From the shared cache (Redis), filled by another replica: Kratos was not asked.
    Shared,
}

impl CacheStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Coalesced => "coalesced",
            Self::Stale => "stale",
            Self::Shared => "shared",
        }
    }

    /// The `source` its request is counted under.
    pub(crate) fn served_from(self) -> ServedFrom {
        match self {
            Self::Hit => ServedFrom::Hit,
            Self::Miss => ServedFrom::Miss,
            Self::Coalesced => ServedFrom::Coalesced,
            Self::Stale => ServedFrom::Stale,
            Self::Shared => ServedFrom::Shared,
        }
    }
}

/// What a lookup found, and how.
#[derive(Debug)]
pub(crate) struct Lookup {
    pub(crate) outcome: Outcome,
    pub(crate) status: CacheStatus,
    /// The `Set-Cookie` headers of the whoami call this lookup made itself (empty on hits and
    /// for coalesced waiters).
    pub(crate) set_cookies: Vec<HeaderValue>,
    /// Set when the session was served stale because Kratos was unavailable.
    pub(crate) stale: Option<StaleSession>,
}

impl Lookup {
    fn new(outcome: Outcome, status: CacheStatus) -> Self {
        Self {
            outcome,
            status,
            set_cookies: Vec::new(),
            stale: None,
        }
    }

    pub(super) fn hit(outcome: Outcome) -> Self {
        Self::new(outcome, CacheStatus::Hit)
    }

    pub(super) fn stale(session: KratosSession, stale: StaleSession) -> Self {
        Self {
            stale: Some(stale),
            ..Self::new(Outcome::Authenticated(session), CacheStatus::Stale)
        }
    }
}

/// What the shared fill gave one lookup: the entry (or why there is none) and, for the lookup
/// whose call asked Kratos, the `Set-Cookie` of that answer (only it relays them).
struct Filled {
    entry: Result<moka::Entry<CacheKey, Cached>, std::sync::Arc<Outcome>>,
    set_cookies: Vec<HeaderValue>,
    /// The entry came from the shared cache, not from Kratos.
    shared: bool,
}

impl SessionCache {
    /// Runs the shared fill on its own task, so a caller that disconnects (and drops its
    /// request future) does not cancel the lookup the other waiters depend on. Returns the
    /// lookup and the entry it was served from, if any.
    pub(super) async fn fill(
        &self,
        key: CacheKey,
        credential: &Credential,
        correlation: &Correlation,
        client: &KratosClient,
        fresh: bool,
    ) -> (Lookup, Option<Cached>) {
        let cache = self.clone();
        let client = client.clone();
        let credential = credential.clone();
        let correlation = correlation.clone();
        let task = tokio::spawn(
            async move {
                cache
                    .fill_shared(key, &credential, &correlation, &client, fresh)
                    .await
            }
            .instrument(tracing::Span::current()),
        );
        let Ok(Filled {
            entry,
            set_cookies,
            shared,
        }) = task.await
        else {
            // The runtime is shutting down.
            let interrupted = Outcome::Unavailable(Unavailable::Interrupted);
            return (Lookup::new(interrupted, CacheStatus::Miss), None);
        };
        match entry {
            Ok(entry) => {
                let status = if entry.is_fresh() && shared {
                    CacheStatus::Shared
                } else if entry.is_fresh() {
                    CacheStatus::Miss
                } else {
                    CacheStatus::Coalesced
                };
                let cached = entry.into_value();
                let lookup = Lookup {
                    set_cookies,
                    ..Lookup::new(cached.answer.clone().into_outcome(), status)
                };
                (lookup, Some(cached))
            }
            Err(uncached) => (
                Lookup::new(Outcome::clone(&uncached), CacheStatus::Miss),
                None,
            ),
        }
    }

    /// Joins the credential's fill, or starts it: the first lookup gets the answer, the others
    /// wait for it (moka's `entry().or_try_insert_with`).
    async fn fill_shared(
        &self,
        key: CacheKey,
        credential: &Credential,
        correlation: &Correlation,
        client: &KratosClient,
        fresh: bool,
    ) -> Filled {
        let mut set_cookies = Vec::new();
        let mut shared = false;
        // Where a miss gets its answer, once for all its waiters: the shared second level (if
        // any) before Kratos, and Kratos's answer shared with the other replicas.
        let answer = async {
            let claim = match self.second_level(key, fresh).await {
                SecondLevel::Served(cached) => {
                    shared = true;
                    return Ok(cached);
                }
                SecondLevel::Ask(claim) => claim,
            };
            let mut answer = client.whoami(credential, correlation, fresh).await;
            set_cookies = std::mem::take(&mut answer.set_cookies);
            let entry = self.inner.lifetimes.entry_for(answer);
            self.share(&key, entry.as_ref().ok(), claim);
            entry
        };
        let entry = self
            .inner
            .entries
            .entry(key)
            .or_try_insert_with(answer)
            .await;
        self.report_size();
        if let Some(stale) = &self.inner.stale {
            // A session Kratos just confirmed is kept for outages; one it just refused (revoked,
            // expired, step-up needed) is never served stale.
            match &entry {
                Ok(entry) if entry.is_fresh() => match entry.value().answer {
                    CachedAnswer::Session { .. } => stale.keep(key, entry.value()).await,
                    CachedAnswer::Rejected => stale.forget(&key).await,
                },
                Err(refused) if !matches!(**refused, Outcome::Unavailable(_)) => {
                    stale.forget(&key).await;
                }
                _ => {}
            }
        }
        Filled {
            entry,
            set_cookies,
            shared,
        }
    }
}
