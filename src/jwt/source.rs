//! Where the JWT layer's keys come from: a key set given at build time (inline, or read from a
//! file), or one fetched from a URL the operator serves (Kratos serves none for tokenized
//! sessions). A URL's set is fetched at start, kept, refreshed in the background, and fetched
//! again when a token names a key the set lacks: at most once per hold-back interval however
//! many such tokens come, and such a token is decided only by keys fetched after it was seen
//! (else it is answered 503, never 401: it may carry a key Kratos has just rotated in). While
//! the URL is down the keys already had are kept.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError, RwLock, Weak,
    },
    time::{Duration, Instant},
};

use reqwest::Url;

use super::keys::{self, KeySet, SharedKeySet, MAX_JWKS_LEN};
use crate::{config::without_userinfo, log_limit::WarnLimiter};

/// The longest a token waits for the hold-back between two fetches to end before its fetch is
/// made. A longer hold-back (a `jwks_min_refetch` above this) answers it 503 with
/// `Retry-After` instead: a request is not held that long.
pub(crate) const MAX_HOLD_BACK_WAIT: Duration = Duration::from_secs(1);

/// The keys, as the layer reads them.
#[derive(Debug)]
pub(crate) enum KeySource {
    /// Given at build time; never changes.
    Fixed(SharedKeySet),
    /// Fetched from a URL.
    Url(Arc<UrlKeys>),
}

/// How many fetches of a URL's key set had started when a token was found to name a key the
/// set lacks. Only a fetch numbered above it started after the token was seen, and so can say
/// that its key does not exist: one under way before may predate the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ticket(u64);

/// What a token the keys had could not decide gets after waiting for keys.
#[derive(Debug)]
pub(crate) enum Refetched {
    /// Keys that decide it: they hold the key it names, or a fetch that started after it was
    /// seen got them, so a key they lack does not exist.
    Keys(SharedKeySet),
    /// No such keys: the fetch made for it failed, or the next fetch may only be made later
    /// than a request waits.
    Unavailable {
        /// When to ask again.
        retry_after: Duration,
    },
}

/// The last fetch that ended: when it started (the hold-back counts from there), and whether
/// it got a usable key set.
#[derive(Clone, Copy, Debug)]
struct LastFetch {
    started_at: Instant,
    usable: bool,
}

/// A URL's key set and what fetching it needs.
#[derive(Debug)]
pub(crate) struct UrlKeys {
    url: Url,
    client: reqwest::Client,
    refresh_every: Duration,
    min_refetch: Duration,
    fetch_timeout: Duration,
    current: RwLock<Option<SharedKeySet>>,
    /// How many fetches have started: a token the keys cannot decide takes its [`Ticket`] here.
    started: AtomicU64,
    /// Written when a fetch ends; read and written with `fetching` held, so no fetch is under
    /// way while it is read.
    last_fetch: Mutex<Option<LastFetch>>,
    /// One fetch at a time; waiters read what it got.
    fetching: tokio::sync::Mutex<()>,
    refresher: std::sync::Once,
    warnings: WarnLimiter,
}

impl UrlKeys {
    pub(crate) fn new(
        url: Url,
        client: reqwest::Client,
        (refresh_every, min_refetch): (Duration, Duration),
        fetch_timeout: Duration,
    ) -> Arc<Self> {
        let keys = Arc::new(Self {
            url,
            client,
            refresh_every,
            min_refetch,
            fetch_timeout,
            current: RwLock::new(None),
            started: AtomicU64::new(0),
            last_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            refresher: std::sync::Once::new(),
            warnings: WarnLimiter::default(),
        });
        keys.start_refreshing();
        keys
    }

    fn current(&self) -> Option<SharedKeySet> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The keys had now, and the ticket a token they cannot decide waits with. The ticket is
    /// read first: keys read after it may come from a later fetch, never from an earlier one
    /// than it names.
    pub(crate) fn snapshot(&self) -> (Option<SharedKeySet>, Ticket) {
        let seen = Ticket(self.started.load(Ordering::SeqCst));
        (self.current(), seen)
    }

    /// Starts the background refresh, once, when there is a runtime (at build time, or at the
    /// first request of a layer built outside one). It fetches at once, then every
    /// `refresh_every`, and stops when the layer is dropped.
    pub(crate) fn start_refreshing(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.refresher.call_once(|| {
            let keys = Arc::downgrade(self);
            runtime.spawn(refresh(keys));
        });
    }

    /// Keys that decide a token the keys had when it took `seen` could not: `decides` says
    /// whether a set holds the key it names.
    ///
    /// The keys had, if a fetch that ended meanwhile brought its key; else those of a fetch
    /// that started after it was seen, waiting for it. That fetch is made at once when the
    /// last one started `min_refetch` ago or more, after a wait when that is at most
    /// [`MAX_HOLD_BACK_WAIT`] away, and not at all (503) when it is further: so however many
    /// tokens name keys nobody has, there is at most one fetch per `min_refetch`, one at a
    /// time, and each serves every token waiting. The wait is bounded: a fetch under way (at
    /// most the fetch timeout), the hold-back (at most [`MAX_HOLD_BACK_WAIT`]), then one fetch.
    pub(crate) async fn refetched(
        &self,
        seen: Ticket,
        decides: impl Fn(&KeySet) -> bool,
    ) -> Refetched {
        // A wait for the hold-back, then the fetch: two rounds; the third is never needed, and
        // the loop is bounded so that a clock gone wrong cannot hold a request.
        for _ in 0..3 {
            let one_at_a_time = self.fetching.lock().await;
            if let Some(keys) = self.current().filter(|keys| decides(keys)) {
                return Refetched::Keys(keys);
            }
            // With `fetching` held no fetch is under way: one numbered above the ticket ended.
            if Ticket(self.started.load(Ordering::SeqCst)) > seen {
                return self.as_last_fetch_left_them();
            }
            let hold_back = self.hold_back_left();
            if hold_back.is_zero() {
                self.fetch_now().await;
                return self.as_last_fetch_left_them();
            }
            drop(one_at_a_time);
            if hold_back > MAX_HOLD_BACK_WAIT {
                return Refetched::Unavailable {
                    retry_after: hold_back,
                };
            }
            tokio::time::sleep(hold_back).await;
        }
        Refetched::Unavailable {
            retry_after: self.min_refetch,
        }
    }

    /// The keys the last fetch left, if it got a usable set; call with `fetching` held.
    fn as_last_fetch_left_them(&self) -> Refetched {
        let usable = self.last_fetch().is_some_and(|last| last.usable);
        match self.current() {
            Some(keys) if usable => Refetched::Keys(keys),
            // Kept keys lack the token's key, and the URL could not say whether it has it now.
            _ => Refetched::Unavailable {
                retry_after: self.min_refetch,
            },
        }
    }

    fn last_fetch(&self) -> Option<LastFetch> {
        *self
            .last_fetch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How long until a fetch for unknown keys may be made; call with `fetching` held.
    fn hold_back_left(&self) -> Duration {
        self.last_fetch().map_or(Duration::ZERO, |last| {
            self.min_refetch.saturating_sub(last.started_at.elapsed())
        })
    }

    /// One fetch, numbered and timed for tickets and the hold-back; call with `fetching` held.
    async fn fetch_now(&self) {
        let started_at = Instant::now();
        self.started.fetch_add(1, Ordering::SeqCst);
        let usable = self.fetch().await;
        *self
            .last_fetch
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(LastFetch { started_at, usable });
    }

    /// One fetch; a usable set replaces the keys, anything else keeps them (and is logged).
    /// Whether a usable set came.
    async fn fetch(&self) -> bool {
        // The timeout here too: a client given by the application may have none, and tokens
        // wait for this fetch.
        let downloaded = tokio::time::timeout(self.fetch_timeout, self.download())
            .await
            .unwrap_or_else(|_| Err("timed out".to_owned()));
        match downloaded {
            Ok(parsed) => {
                let shown = without_userinfo(self.url.as_str());
                if parsed.had_private_parts {
                    tracing::warn!(
                        url = %shown,
                        "the JWKS holds private key material: only the public parts are kept; \
                         serve the public key set only (`ory get jwk <set> --public`)"
                    );
                }
                for skipped in &parsed.skipped {
                    tracing::warn!(url = %shown, "a key of the JWKS is not used: {skipped}");
                }
                *self.current.write().unwrap_or_else(PoisonError::into_inner) =
                    Some(Arc::new(parsed.set));
                crate::metrics::jwks_fetch(true);
                true
            }
            Err(why) => {
                crate::metrics::jwks_fetch(false);
                let kept = self.current().is_some();
                if let Some(left_out) = self.warnings.admit(("jwks", "fetch")) {
                    tracing::warn!(
                        url = %without_userinfo(self.url.as_str()),
                        kept_keys = kept,
                        left_out_since_last = left_out,
                        "the JWKS could not be fetched: {why}"
                    );
                }
                false
            }
        }
    }

    async fn download(&self) -> Result<keys::Parsed, String> {
        let mut response = self
            .client
            .get(self.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|error| {
                if error.is_timeout() {
                    "timed out".to_owned()
                } else {
                    "connection failed".to_owned()
                }
            })?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|_| "the answer was cut off".to_owned())?
        {
            if body.len() + chunk.len() > MAX_JWKS_LEN {
                return Err(format!("the answer is larger than {MAX_JWKS_LEN} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        keys::parse(&body).map_err(|error| error.to_string())
    }
}

/// Fetches at once, then every `refresh_every` after the last fetch (on demand or not), while
/// the layer lives.
async fn refresh(keys: Weak<UrlKeys>) {
    loop {
        let Some(strong) = keys.upgrade() else {
            return;
        };
        let wait = {
            let _one_at_a_time = strong.fetching.lock().await;
            let since = strong.last_fetch().map(|last| last.started_at.elapsed());
            match since {
                Some(since) if since < strong.refresh_every => strong.refresh_every - since,
                _ => {
                    strong.fetch_now().await;
                    strong.refresh_every
                }
            }
        };
        drop(strong);
        tokio::time::sleep(wait).await;
    }
}

/// A fixed key set from JWKS text, with what was left out said once, at build time.
pub(crate) fn fixed(bytes: &[u8], origin: &str) -> Result<KeySet, String> {
    let parsed = keys::parse(bytes).map_err(|error| error.to_string())?;
    if parsed.had_private_parts {
        tracing::warn!(
            origin,
            "the JWKS holds private key material: only the public parts are kept; give the \
             public key set only (`ory get jwk <set> --public`)"
        );
    }
    for skipped in &parsed.skipped {
        tracing::warn!(origin, "a key of the JWKS is not used: {skipped}");
    }
    Ok(parsed.set)
}
