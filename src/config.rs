//! The settings every part of the crate shares, and uses nothing of it: the defaults and limits
//! of the builder's settings, [`Mode`], [`BuildError`], and the check every URL setting goes
//! through.

use std::{fmt, time::Duration};

use reqwest::Url;

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
