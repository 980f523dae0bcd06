//! Where the JWT layer's keys come from: a key set given at build time (inline, or read from a
//! file), or one fetched from a URL the operator serves (Kratos serves none for tokenized
//! sessions). A URL's set is fetched at start, kept, refreshed in the background, and fetched
//! again when a token names an unknown `kid`, at most once per interval however many such
//! tokens come; while the URL is down the keys already had are kept.

use std::{
    sync::{Arc, Mutex, PoisonError, RwLock, Weak},
    time::{Duration, Instant},
};

use reqwest::Url;

use super::keys::{self, KeySet, SharedKeySet, MAX_JWKS_LEN};
use crate::{config::without_userinfo, log_limit::WarnLimiter};

/// The keys, as the layer reads them.
#[derive(Debug)]
pub(crate) enum KeySource {
    /// Given at build time; never changes.
    Fixed(SharedKeySet),
    /// Fetched from a URL.
    Url(Arc<UrlKeys>),
}

impl KeySource {
    /// The keys had now, if any.
    pub(crate) fn current(&self) -> Option<SharedKeySet> {
        match self {
            Self::Fixed(keys) => Some(Arc::clone(keys)),
            Self::Url(url) => url.current(),
        }
    }
}

/// A URL's key set and what fetching it needs.
#[derive(Debug)]
pub(crate) struct UrlKeys {
    url: Url,
    client: reqwest::Client,
    refresh_every: Duration,
    min_refetch: Duration,
    current: RwLock<Option<SharedKeySet>>,
    /// When the last fetch started (successful or not): the next on-demand fetch waits for the
    /// interval.
    last_fetch: Mutex<Option<Instant>>,
    /// One fetch at a time; waiters read what it got.
    fetching: tokio::sync::Mutex<()>,
    refresher: std::sync::Once,
    warnings: WarnLimiter,
}

impl UrlKeys {
    pub(crate) fn new(
        url: Url,
        client: reqwest::Client,
        refresh_every: Duration,
        min_refetch: Duration,
    ) -> Arc<Self> {
        let keys = Arc::new(Self {
            url,
            client,
            refresh_every,
            min_refetch,
            current: RwLock::new(None),
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

    /// Fetches the key set again, unless a fetch started less than the interval ago (then the
    /// keys had are returned as they are), and returns the keys had after it. Concurrent
    /// callers share one fetch.
    pub(crate) async fn refetch(&self) -> Option<SharedKeySet> {
        let before = self.current();
        let _one_at_a_time = self.fetching.lock().await;
        let now_current = self.current();
        // Another caller fetched while this one waited: use what it got.
        if !same(&before, &now_current) {
            return now_current;
        }
        {
            let mut last = self
                .last_fetch
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < self.min_refetch) {
                return now_current;
            }
            *last = Some(Instant::now());
        }
        self.fetch().await;
        self.current()
    }

    /// One fetch; a usable set replaces the keys, anything else keeps them (and is logged).
    async fn fetch(&self) {
        match self.download().await {
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
            }
            Err(why) => {
                let kept = self.current().is_some();
                if let Some(left_out) = self.warnings.admit(("jwks", "fetch")) {
                    tracing::warn!(
                        url = %without_userinfo(self.url.as_str()),
                        kept_keys = kept,
                        left_out_since_last = left_out,
                        "the JWKS could not be fetched: {why}"
                    );
                }
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

fn same(a: &Option<SharedKeySet>, b: &Option<SharedKeySet>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
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
            let since = strong
                .last_fetch
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .map(|at| at.elapsed());
            match since {
                Some(since) if since < strong.refresh_every => strong.refresh_every - since,
                _ => {
                    *strong
                        .last_fetch
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                    strong.fetch().await;
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
