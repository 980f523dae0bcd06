//! The Kratos HTTP API over one pooled `reqwest` client: whoami, guarded by the [`Admission`]
//! (back-off and a cap on calls in flight), and the session lifecycle calls on the public and
//! admin APIs, with their typed errors.
//!
//! Every call has a hard deadline (enforced here, so it holds for a client the user supplied
//! too), never follows redirects (a 3xx from Kratos is a misconfiguration, and following it
//! would carry the credential elsewhere), and reads a bounded answer body.
//!
//! - [`whoami`](KratosClient::whoami) (`whoami.rs`): what whoami answered, as an [`Outcome`].
//! - `self_service.rs`: the caller's own sessions: list, revoke, API logout.
//! - `admin.rs`: the admin API: extend, disable, delete an identity's sessions.
//! - `exchange.rs`: one request and its bounded answer, behind an admission, in a span named
//!   as OpenTelemetry's HTTP client conventions name it; what an unexpected answer means.
//! - `correlation.rs`: what of the app's request is passed on with whoami (`X-Request-ID`,
//!   `traceparent`, `tracestate`).
//! - `error.rs`, `page.rs`: the public [`LifecycleError`], [`Page`] and [`SessionList`].
//!
//! [`Outcome`]: crate::outcome::Outcome

mod admin;
mod admission;
mod correlation;
mod error;
mod exchange;
mod page;
mod self_service;
mod whoami;

use std::{fmt, sync::Arc, time::Duration};

use reqwest::Url;

use crate::log_limit::WarnLimiter;

pub(crate) use self::{
    admin::{AdminApi, ExtendAnswer, MAX_BULK_IDS},
    admission::{Admission, AdmissionConfig},
    correlation::Correlation,
    whoami::WhoamiAnswer,
};
pub use self::{
    error::LifecycleError,
    page::{Page, SessionList, MAX_PAGE_SIZE},
};

/// The Kratos APIs as this crate uses them. Cloning is cheap (one `Arc`): a whoami miss hands a
/// clone to the task that makes the call.
#[derive(Clone)]
pub(crate) struct KratosClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    public_url: Url,
    whoami_url: Url,
    /// The tokenizer template whoami is asked with, if any.
    tokenize_as: Option<String>,
    warnings: WarnLimiter,
    /// The deadline of a whole call to the public API, answer body included.
    request_timeout: Duration,
    admin: Option<AdminApi>,
    /// When whoami may be sent.
    admission: Admission,
    /// The same for the self-service lifecycle calls (list, revoke, logout), so no route makes
    /// Kratos calls at the rate anonymous callers send requests. Of its own: Ory Network
    /// limits these endpoints in other (lower) buckets than whoami's, and a caller who makes
    /// one of them answer 429 must not hold whoami back for everyone.
    self_service_admission: Admission,
    /// The same for the admin API, a server of its own (its own port, or Ory Network's admin
    /// buckets).
    admin_admission: Admission,
}

impl fmt::Debug for KratosClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the reqwest client: its Debug lists default headers, where a user-supplied client
        // may carry an API key.
        let inner = &self.inner;
        f.debug_struct("KratosClient")
            .field("whoami_url", &inner.whoami_url.as_str())
            .field("request_timeout", &inner.request_timeout)
            .field("admin", &inner.admin)
            .field("admission", &inner.admission)
            .finish_non_exhaustive()
    }
}

impl KratosClient {
    /// `request_timeout` bounds every call to the public API; the admin API has its own.
    pub(crate) fn new(
        http: reqwest::Client,
        public_url: &Url,
        tokenize_as: Option<&str>,
        request_timeout: Duration,
        admin: Option<AdminApi>,
        admission: Admission,
    ) -> Self {
        let mut whoami_url = exchange::with_segments(public_url, &["sessions", "whoami"]);
        if let Some(template) = tokenize_as {
            whoami_url
                .query_pairs_mut()
                .append_pair("tokenize_as", template);
        }
        Self {
            inner: Arc::new(Inner {
                http,
                public_url: public_url.clone(),
                whoami_url,
                tokenize_as: tokenize_as.map(str::to_owned),
                warnings: WarnLimiter::default(),
                request_timeout,
                admin,
                self_service_admission: Admission::new(admission.config()).for_api("public"),
                admin_admission: Admission::new(admission.config()).for_api("admin"),
                admission,
            }),
        }
    }

    /// The admin API, when configured.
    pub(crate) fn admin(&self) -> Option<&AdminApi> {
        self.inner.admin.as_ref()
    }

    /// Kratos's browser login flow with this query (`aal=aal2`, `refresh=true`): where a
    /// browser meets a second factor or signs in again. The rejection adds `return_to`.
    pub(crate) fn login_flow_url(&self, (key, value): (&str, &str)) -> Url {
        let mut url = exchange::with_segments(
            &self.inner.public_url,
            &["self-service", "login", "browser"],
        );
        url.query_pairs_mut().append_pair(key, value);
        url
    }

    /// When whoami may be sent: for [`KratosLayer::stats`](crate::KratosLayer::stats).
    pub(crate) fn admission(&self) -> &Admission {
        &self.inner.admission
    }
}

/// A Kratos id (session or identity) in canonical form: a UUID, lowercase, hyphenated.
///
/// Kratos itself answers 400 for anything that is not a UUID; refusing it here keeps a
/// caller-supplied id from ever shaping a Kratos URL, and the lowercase form is what Kratos
/// writes, so revocation marks match cached sessions.
pub(crate) fn canonical_id(id: &str) -> Result<String, LifecycleError> {
    let bytes = id.as_bytes();
    let well_formed = bytes.len() == 36
        && bytes.iter().enumerate().all(|(index, byte)| match index {
            8 | 13 | 18 | 23 => *byte == b'-',
            _ => byte.is_ascii_hexdigit(),
        });
    if well_formed {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(LifecycleError::InvalidId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_canonical_uuids_and_become_lowercase() {
        assert_eq!(
            canonical_id("6F5E3C4A-0000-4000-8000-00000000000A").unwrap(),
            "6f5e3c4a-0000-4000-8000-00000000000a"
        );
        for bad in [
            "",
            "whoami",
            "6f5e3c4a00004000800000000000000a",
            "6f5e3c4a-0000-4000-8000-00000000000a/",
            "6f5e3c4a-0000-4000-8000-0000000000%2F",
            "../../admin/identities/x/sessions",
            "6f5e3c4a-0000-4000-8000-00000000000\u{e9}",
        ] {
            assert_eq!(canonical_id(bad), Err(LifecycleError::InvalidId), "{bad:?}");
        }
    }
}
