//! The shared cache's builder settings and their checks: what
//! [`KratosLayerBuilder::redis_url`](crate::KratosLayerBuilder::redis_url) and its siblings
//! collect, turned into a [`SharedCacheConfig`] by `build()`.

use std::{fmt, sync::Arc, time::Duration};

use super::{
    SharedCacheConfig, DEFAULT_REDIS_KEY_PREFIX, DEFAULT_REDIS_TIMEOUT, MIN_SHARED_CACHE_SECRET_LEN,
};
use crate::config::BuildError;

/// The longest Redis timeout accepted: Redis is a cache here, and a slow one is no help.
const MAX_REDIS_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest key prefix accepted.
const MAX_PREFIX_LEN: usize = 64;

/// What the builder was told; checked by [`SharedCacheSettings::config`].
#[derive(Clone, Default)]
pub(crate) struct SharedCacheSettings {
    pub(crate) url: Option<String>,
    pub(crate) secret: Option<Arc<[u8]>>,
    pub(crate) key_prefix: Option<String>,
    pub(crate) timeout: Option<Duration>,
}

impl fmt::Debug for SharedCacheSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password; the secret is one.
        f.debug_struct("SharedCacheSettings")
            .field("url", &self.url.as_ref().map(|_| "[set]"))
            // Named so a search of the Debug output for a secret's own text finds nothing.
            .field("shared_key", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl SharedCacheSettings {
    /// The shared cache's configuration; `None` when no Redis URL was given.
    ///
    /// # Errors
    /// A URL that does not parse (not repeated in the error: it may hold a password), a secret
    /// missing or shorter than [`MIN_SHARED_CACHE_SECRET_LEN`], a secret or another Redis
    /// setting without a URL, an empty or odd prefix, a zero or too long timeout.
    pub(crate) fn config(self) -> Result<Option<SharedCacheConfig>, BuildError> {
        let Some(url) = self.url else {
            if self.secret.is_some() || self.key_prefix.is_some() || self.timeout.is_some() {
                return Err(BuildError::setting(
                    "redis_url",
                    "the shared cache settings need a Redis URL (redis_url)",
                ));
            }
            return Ok(None);
        };
        if url
            .get(..9)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"))
        {
            return Err(BuildError::setting(
                "redis_url",
                "is a TLS URL (rediss://), which this version does not support: use redis:// on a \
                 private network (what Redis holds is sealed either way; see the README's \
                 \"Running many replicas\")",
            ));
        }
        let client = redis::Client::open(url.as_str()).map_err(|_| {
            BuildError::setting(
                "redis_url",
                "is not a Redis URL (redis://[user:password@]host[:port][/db] or \
                 unix:///path/to/socket)",
            )
        })?;
        let secret = self.secret.ok_or_else(|| {
            BuildError::setting(
                "shared_cache_secret",
                "is required with redis_url: every replica derives its cache keys and value \
                 seal from it",
            )
        })?;
        if secret.len() < MIN_SHARED_CACHE_SECRET_LEN {
            return Err(BuildError::setting(
                "shared_cache_secret",
                format!(
                    "must be at least {MIN_SHARED_CACHE_SECRET_LEN} bytes (it has {}); make one \
                     with `openssl rand -base64 32`",
                    secret.len()
                ),
            ));
        }
        let key_prefix = self
            .key_prefix
            .unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.to_owned());
        if key_prefix.is_empty()
            || key_prefix.len() > MAX_PREFIX_LEN
            || !key_prefix
                .bytes()
                .all(|byte| byte.is_ascii_graphic() && byte != b'*' && byte != b'?')
        {
            return Err(BuildError::setting(
                "redis_key_prefix",
                format!(
                    "must be 1 to {MAX_PREFIX_LEN} visible ASCII characters, without `*` or `?`"
                ),
            ));
        }
        let timeout = self.timeout.unwrap_or(DEFAULT_REDIS_TIMEOUT);
        if timeout.is_zero() || timeout > MAX_REDIS_TIMEOUT {
            return Err(BuildError::setting(
                "redis_timeout",
                "must be more than zero and at most 5 s",
            ));
        }
        Ok(Some(SharedCacheConfig {
            client,
            secret,
            key_prefix,
            timeout,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: Option<&str>, secret: Option<&[u8]>) -> SharedCacheSettings {
        SharedCacheSettings {
            url: url.map(str::to_owned),
            secret: secret.map(Arc::from),
            ..SharedCacheSettings::default()
        }
    }

    fn refused(settings: SharedCacheSettings) -> BuildError {
        settings.config().expect_err("refused")
    }

    #[test]
    fn a_shared_cache_needs_a_url_and_a_long_secret() {
        assert!(settings(None, None).config().unwrap().is_none());
        let secret = [1u8; 32];
        assert!(settings(Some("redis://127.0.0.1:6379"), Some(&secret))
            .config()
            .unwrap()
            .is_some());
        assert_eq!(
            refused(settings(Some("redis://127.0.0.1"), None)).setting_name(),
            "shared_cache_secret"
        );
        assert_eq!(
            refused(settings(Some("redis://127.0.0.1"), Some(&[1; 31]))).setting_name(),
            "shared_cache_secret"
        );
        assert_eq!(
            refused(settings(None, Some(&secret))).setting_name(),
            "redis_url"
        );
        let bad = refused(settings(Some("http://user:hunter2@x"), Some(&secret)));
        assert_eq!(bad.setting_name(), "redis_url");
        assert!(!bad.to_string().contains("hunter2"), "{bad}");
        // TLS is refused by name, not as "not a Redis URL", and without the password.
        let tls = refused(settings(
            Some("rediss://:hunter2@cache:6380"),
            Some(&secret),
        ));
        assert_eq!(tls.setting_name(), "redis_url");
        assert!(tls.to_string().contains("rediss://"), "{tls}");
        assert!(!tls.to_string().contains("hunter2"), "{tls}");
    }

    #[test]
    fn prefixes_and_timeouts_are_checked() {
        let with = |prefix: &str, timeout: Duration| SharedCacheSettings {
            key_prefix: Some(prefix.to_owned()),
            timeout: Some(timeout),
            ..settings(Some("redis://127.0.0.1"), Some(&[1; 32]))
        };
        let ok = Duration::from_millis(50);
        assert!(with("app-1:sessions", ok).config().is_ok());
        for prefix in ["", "has space", "glob*", &"x".repeat(65)] {
            assert_eq!(refused(with(prefix, ok)).setting_name(), "redis_key_prefix");
        }
        for timeout in [Duration::ZERO, Duration::from_secs(6)] {
            assert_eq!(
                refused(with("app", timeout)).setting_name(),
                "redis_timeout"
            );
        }
        // Never shown: the secret.
        let shown = format!("{:?}", with("app", ok));
        assert!(
            shown.contains("[redacted]") && !shown.contains("[1, 1"),
            "{shown}"
        );
    }
}
