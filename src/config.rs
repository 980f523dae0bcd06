//! The settings every part of the crate shares, and uses nothing of it: the defaults and limits
//! of the builder's settings, [`Mode`], [`BuildError`], and the check every URL setting goes
//! through.

use std::{fmt, time::Duration};

use reqwest::Url;

/// The default cache TTL. See [`KratosLayerBuilder::cache_ttl`](crate::KratosLayerBuilder::cache_ttl)
/// for what it means for revocation.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);
/// How long before a tokenized session's JWT expires its cache entry ends, by default.
pub const DEFAULT_TOKENIZED_MARGIN: Duration = Duration::from_secs(10);
/// The default number of cached sessions.
pub const DEFAULT_CACHE_CAPACITY: u64 = 10_000;
/// The default connect timeout for Kratos.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The default deadline for a whole whoami call.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest a 401 may be cached
/// ([`KratosLayerBuilder::cache_rejections`](crate::KratosLayerBuilder::cache_rejections)).
pub const MAX_REJECTION_TTL: Duration = Duration::from_secs(60);
/// The default cap on whoami calls in flight
/// ([`KratosLayerBuilder::max_concurrent_lookups`](crate::KratosLayerBuilder::max_concurrent_lookups)).
pub const DEFAULT_MAX_CONCURRENT_LOOKUPS: usize = 32;
/// How long a lookup waits for a slot by default
/// ([`KratosLayerBuilder::lookup_queue_timeout`](crate::KratosLayerBuilder::lookup_queue_timeout)).
pub const DEFAULT_LOOKUP_QUEUE_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest a lookup may wait for a slot: every waiting request holds its memory.
pub(crate) const MAX_LOOKUP_QUEUE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default shortest back-off window
/// ([`KratosLayerBuilder::backoff`](crate::KratosLayerBuilder::backoff)).
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The default longest back-off window: Ory's guidance for 429s
/// ([`KratosLayerBuilder::backoff`](crate::KratosLayerBuilder::backoff)).
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The longest back-off window accepted.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How many failed whoami calls in a row open the back-off by default
/// ([`KratosLayerBuilder::backoff_after_failures`](crate::KratosLayerBuilder::backoff_after_failures)).
pub const DEFAULT_BACKOFF_AFTER_FAILURES: u32 = 5;
/// The longest stale-if-error grace
/// ([`KratosLayerBuilder::stale_if_error`](crate::KratosLayerBuilder::stale_if_error)).
pub const MAX_STALE_IF_ERROR: Duration = Duration::from_secs(3600);
/// The default deadline for one admin API call (extend, admin revocations).
pub const DEFAULT_ADMIN_TIMEOUT: Duration = Duration::from_secs(3);
/// The default time after a session's extension attempt before it is tried again.
pub const DEFAULT_EXTEND_COOLDOWN: Duration = Duration::from_secs(60);
/// The longest extension cooldown accepted: longer than a day would outlast most sessions.
pub const MAX_EXTEND_COOLDOWN: Duration = Duration::from_secs(24 * 60 * 60);
/// How long clients are told to wait when Kratos is unavailable and gave no `Retry-After` of its
/// own.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);
/// The longest admin API key accepted, in bytes (Ory Network's keys are under 100).
pub(crate) const MAX_ADMIN_API_KEY_LEN: usize = 4096;
/// How long idle connections to Kratos are kept: below common load-balancer keep-alives (60 s),
/// so a pooled connection is not reused just as the other side closes it.
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP client settings every client of the crate shares (Kratos, a key set URL): the
/// deadlines, a pooled connection's idle timeout, no redirects, the crate's `User-Agent`, and
/// with `tls-ring` alone, ring as the TLS provider.
pub(crate) fn client_builder(connect: Duration, request: Duration) -> reqwest::ClientBuilder {
    #[cfg(all(feature = "tls-ring", not(feature = "tls-aws-lc-rs")))]
    {
        // reqwest without a provider of its own takes the process's default, which the
        // application may have chosen; else ring, as this feature asks.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
        .connect_timeout(connect)
        .timeout(request)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tower-kratos/", env!("CARGO_PKG_VERSION")))
}

/// Whether requests without a valid session reach the inner service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Only authenticated requests go on; every other outcome gets the rejection response.
    #[default]
    Required,
    /// Requests without a session (no credential, an invalid one, or one that needs a step-up)
    /// go on with the [`Outcome`](crate::Outcome) in their extensions. A request whose session
    /// could not be checked because Kratos is unavailable is still rejected (503): letting it on
    /// as anonymous would show a signed-in user a signed-out page.
    Optional,
}

/// Parses a URL setting: absolute, `http` or `https`, with a host and no credentials in it.
pub(crate) fn parse_http_url(setting: &'static str, url: &str) -> Result<Url, BuildError> {
    let parsed =
        Url::parse(url).map_err(|error| BuildError::setting(setting, error.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(BuildError::setting(setting, "must be an http or https URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(BuildError::setting(setting, "must have a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(BuildError::setting(
            setting,
            "must not contain credentials; use http_client for authentication",
        ));
    }
    Ok(parsed)
}

/// Whether a URL's host is this machine: credentials may travel in clear to it.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A URL as given to the builder, fit for `Debug`: without a user name or password (which
/// `build` refuses, but which must not reach a log meanwhile).
pub(crate) fn without_userinfo(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() || !parsed.username().is_empty() {
                // Only fails for URLs that cannot have credentials, which have none to hide.
                let _ = parsed.set_username("");
                let _ = parsed.set_password(None);
            }
            parsed.to_string()
        }
        Err(_) => "[not a URL]".to_owned(),
    }
}

/// Why a layer could not be built.
#[derive(Debug)]
pub struct BuildError {
    setting: &'static str,
    reason: String,
    source: Option<reqwest::Error>,
}

impl BuildError {
    pub(crate) fn setting(setting: &'static str, reason: impl Into<String>) -> Self {
        Self {
            setting,
            reason: reason.into(),
            source: None,
        }
    }

    pub(crate) fn client(error: reqwest::Error) -> Self {
        Self {
            setting: "http_client",
            reason: "the HTTP client could not be built".into(),
            source: Some(error),
        }
    }

    /// The setting at fault, as the builder method is named.
    pub fn setting_name(&self) -> &'static str {
        self.setting
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid tower-kratos setting `{}`: {}",
            self.setting, self.reason
        )
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|error| error as &(dyn std::error::Error + 'static))
    }
}
