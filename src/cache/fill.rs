//! The miss path: one whoami call shared by every concurrent lookup of a credential, on a task of
//! its own, and what each lookup learns from it.
//!
//! The first lookup of a missing credential takes off a *flight*; the lookups that miss while
//! it is in the air board it and wait for its answer, which they all get (an entry, or the one
//! outcome that was not cached: an outage answers every waiter, it is not asked again by each).
//! A flight lands in the store before it leaves the table of flights, so a lookup never finds
//! neither and asks Kratos a second time.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use http::HeaderValue;
use tokio::sync::watch;
use tracing::Instrument;

use super::{
    entry::{Cached, CachedAnswer},
    key::{CacheKey, PassThroughHash},
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

/// A flight's answer: the entry it stored, or the outcome it did not cache.
type Answer = Result<Cached, Arc<Outcome>>;

/// The flights in the air, one per credential: as many as there are distinct credentials
/// missing at once (each a task waiting on Kratos through the client's admission).
#[derive(Default)]
pub(super) struct Flights {
    flying: Mutex<HashMap<CacheKey, watch::Receiver<Option<Answer>>, PassThroughHash>>,
}

/// What a lookup does about a miss.
enum Boarding<'a> {
    /// Fly: ask, store, then tell the others.
    Pilot(Landing<'a>),
    /// Wait for the flight in the air.
    Passenger(watch::Receiver<Option<Answer>>),
}

/// The pilot's side of a flight. Dropped, it leaves the table of flights; dropped before it
/// told its answer (its task panicked), the passengers see the sender gone and are answered
/// that the lookup was interrupted, instead of waiting for ever.
struct Landing<'a> {
    flights: &'a Flights,
    key: CacheKey,
    tell: watch::Sender<Option<Answer>>,
}

impl Flights {
    fn board(&self, key: CacheKey) -> Boarding<'_> {
        let mut flying = self.flying.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = flying.get(&key) {
            return Boarding::Passenger(flight.clone());
        }
        let (tell, hear) = watch::channel(None);
        flying.insert(key, hear);
        Boarding::Pilot(Landing {
            flights: self,
            key,
            tell,
        })
    }
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        self.flights
            .flying
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// What the shared fill gave one lookup: the entry (or why there is none), whether this
/// lookup's flight asked for it, and, for that lookup, the `Set-Cookie` of the answer (only it
/// relays them).
struct Filled {
    entry: Answer,
    /// This lookup flew: the entry is its own answer, not one it waited for.
    flew: bool,
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
            flew,
            set_cookies,
            shared,
        }) = task.await
        else {
            // The runtime is shutting down.
            let interrupted = Outcome::Unavailable(Unavailable::Interrupted);
            return (Lookup::new(interrupted, CacheStatus::Miss), None);
        };
        match entry {
            Ok(cached) => {
                let status = match (flew, shared) {
                    (true, true) => CacheStatus::Shared,
                    (true, false) => CacheStatus::Miss,
                    (false, _) => CacheStatus::Coalesced,
                };
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

    /// Joins the credential's flight, or takes off: the first lookup gets the answer, the
    /// others wait for it.
    async fn fill_shared(
        &self,
        key: CacheKey,
        credential: &Credential,
        correlation: &Correlation,
        client: &KratosClient,
        fresh: bool,
    ) -> Filled {
        let landing = match self.inner.flights.board(key) {
            Boarding::Pilot(landing) => landing,
            Boarding::Passenger(mut flight) => {
                let entry = match flight.wait_for(Option::is_some).await {
                    Ok(answer) => answer.clone().unwrap_or_else(|| Err(interrupted())),
                    Err(_) => Err(interrupted()),
                };
                return Filled {
                    entry,
                    flew: false,
                    set_cookies: Vec::new(),
                    shared: false,
                };
            }
        };
        // A flight that landed between this lookup's miss and its boarding stored its entry.
        if let Some(cached) = self.inner.entries.get(&key) {
            if now_fresh(&cached) {
                let _ = landing.tell.send(Some(Ok(cached.clone())));
                return Filled {
                    entry: Ok(cached),
                    flew: false,
                    set_cookies: Vec::new(),
                    shared: false,
                };
            }
        }
        let mut set_cookies = Vec::new();
        let mut shared = false;
        // Where a miss gets its answer, once for all its waiters: the shared second level (if
        // any) before Kratos, and Kratos's answer shared with the other replicas.
        let entry = match self.second_level(key, fresh).await {
            SecondLevel::Served(cached) => {
                shared = true;
                Ok(cached)
            }
            SecondLevel::Ask(claim) => {
                let mut answer = client.whoami(credential, correlation, fresh).await;
                set_cookies = std::mem::take(&mut answer.set_cookies);
                let entry = self.inner.lifetimes.entry_for(answer);
                self.share(&key, entry.as_ref().ok(), claim);
                entry.map_err(Arc::new)
            }
        };
        if let Ok(cached) = &entry {
            self.inner.entries.insert(key, cached.clone());
        }
        // Landed: in the store first, then told, then off the table (as `landing` drops).
        let _ = landing.tell.send(Some(entry.clone()));
        drop(landing);
        self.report_size();
        self.sweep_if_due();
        self.keep_for_outages(key, &entry).await;
        Filled {
            entry,
            flew: true,
            set_cookies,
            shared,
        }
    }

    /// With stale-if-error, a session Kratos just confirmed is kept for outages; one it just
    /// refused (revoked, expired, step-up needed) is never served stale.
    async fn keep_for_outages(&self, key: CacheKey, entry: &Answer) {
        let Some(stale) = &self.inner.stale else {
            return;
        };
        match entry {
            Ok(cached) => match cached.answer {
                CachedAnswer::Session { .. } => stale.keep(key, cached).await,
                CachedAnswer::Rejected => stale.forget(&key).await,
            },
            Err(refused) if !matches!(**refused, Outcome::Unavailable(_)) => {
                stale.forget(&key).await;
            }
            Err(_) => {}
        }
    }

    /// Sweeps the store's expired entries when a sweep is due: on a blocking thread, since a
    /// large store takes milliseconds, and off every request's path.
    fn sweep_if_due(&self) {
        if self.inner.entries.claim_sweep() {
            let cache = self.clone();
            tokio::task::spawn_blocking(move || cache.inner.entries.sweep());
        }
    }
}

/// Whether an entry found in the store has not reached its end.
fn now_fresh(cached: &Cached) -> bool {
    std::time::Instant::now() < cached.fresh_until
}

fn interrupted() -> Arc<Outcome> {
    Arc::new(Outcome::Unavailable(Unavailable::Interrupted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passengers_of_a_pilot_that_never_lands_are_told_so_and_a_new_flight_can_start() {
        let flights = Flights::default();
        let key = CacheKey([3; 32]);
        let Boarding::Pilot(landing) = flights.board(key) else {
            panic!("the first lookup flies");
        };
        let Boarding::Passenger(mut flight) = flights.board(key) else {
            panic!("the second boards");
        };
        // The pilot's task ends without an answer (a panic, a runtime shutting down).
        drop(landing);
        assert!(flight.wait_for(Option::is_some).await.is_err());
        assert!(matches!(flights.board(key), Boarding::Pilot(_)));
    }

    #[tokio::test]
    async fn every_passenger_gets_the_pilots_answer_even_one_that_boards_as_it_lands() {
        let flights = Flights::default();
        let key = CacheKey([4; 32]);
        let Boarding::Pilot(landing) = flights.board(key) else {
            panic!("the first lookup flies");
        };
        let Boarding::Passenger(mut early) = flights.board(key) else {
            panic!("the second boards");
        };
        let outage = Arc::new(Outcome::Unavailable(Unavailable::Timeout));
        let _ = landing.tell.send(Some(Err(Arc::clone(&outage))));
        let Boarding::Passenger(mut late) = flights.board(key) else {
            panic!("told but not yet off the table: still a flight to board");
        };
        drop(landing);
        for flight in [&mut early, &mut late] {
            let answer = flight.wait_for(Option::is_some).await.expect("told");
            let Some(Err(told)) = &*answer else {
                panic!("the outage")
            };
            assert!(Arc::ptr_eq(told, &outage));
        }
    }
}
