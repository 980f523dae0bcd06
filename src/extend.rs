//! The extension engine behind [`extend_within`](crate::authenticate::KratosLayerBuilder::extend_within) and
//! [`SessionLifecycle::extend_if_expiring`](crate::lifecycle::SessionLifecycle::extend_if_expiring):
//! one attempt per session at a time, shared by every request that arrives meanwhile and, for the
//! cooldown after it, by the ones after; a pause for every session after the admin API failed,
//! since Ory Network's admin rate limit is per project.
//!
//! An attempt is `PATCH /admin/sessions/{id}/extend`, then, when Kratos may have moved the
//! expiry, one whoami as the caller: it confirms the new expiry, refreshes the cache entry, and
//! yields the re-issued `Set-Cookie` for a cookie session.

use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use http::HeaderValue;
use moka::future::Cache;
use time::OffsetDateTime;
use tracing::Instrument;

use crate::{
    cache::{Revoked, SessionCache},
    client::{Correlation, ExtendAnswer, KratosClient, LifecycleError},
    credentials::Credential,
    defaults::MAX_EXTEND_COOLDOWN,
    outcome::{Outcome, Unavailable},
    session::KratosSession,
};

/// What one extension attempt ended in.
///
/// The layer (with [`extend_within`](crate::authenticate::KratosLayerBuilder::extend_within)) puts it in the
/// request's and the response's extensions when the request's session was due for extension,
/// and only then. Requests that shared one attempt (concurrent ones, or ones within the
/// cooldown after it) carry the same report.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionExtension {
    /// Kratos moved the session's expiry to this time.
    Extended {
        /// The new expiry.
        expires_at: OffsetDateTime,
    },
    /// Kratos accepted the call but left the expiry as it was: its `earliest_possible_extend`
    /// window has not been reached yet ("too early").
    NotExtended {
        /// The unchanged expiry.
        expires_at: Option<OffsetDateTime>,
    },
    /// Kratos answered 404: the session no longer exists, or (Ory Network) another request is
    /// extending it at this moment. The request goes on with the session it had; the next one
    /// is checked with Kratos again.
    Gone,
    /// Another replica sharing the Redis cache claimed this session's extension within the
    /// cooldown (feature `redis`): it extends the session, once for every replica, and shares
    /// the refreshed session; this request goes on with the session it had.
    ByAnotherReplica,
    /// The admin API failed (down, slow, 429, refused key, an answer that is not Kratos's), or
    /// Kratos accepted a 204 extension whose result the confirming whoami could not read. The
    /// request goes on with the session it had.
    Failed(LifecycleError),
}

impl SessionExtension {
    /// A short, stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Extended { .. } => "extended",
            Self::NotExtended { .. } => "not_extended",
            Self::Gone => "gone",
            Self::ByAnotherReplica => "by_another_replica",
            Self::Failed(_) => "failed",
        }
    }
}

impl fmt::Display for SessionExtension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Extended { expires_at } => write!(f, "extended until {expires_at}"),
            Self::NotExtended { .. } => {
                f.write_str("not extended: Kratos left the expiry unchanged (too early)")
            }
            Self::Gone => f.write_str("session gone or being extended elsewhere (404)"),
            Self::ByAnotherReplica => f.write_str("extended by another replica"),
            Self::Failed(error) => write!(f, "extension failed: {error}"),
        }
    }
}

/// One extension attempt's result, shared by every request of the session during the cooldown.
pub(crate) struct Attempt {
    pub(crate) report: SessionExtension,
    /// The session as whoami confirmed it after the extension.
    pub(crate) session: Option<KratosSession>,
    /// The `Set-Cookie` headers of that whoami, unfiltered.
    pub(crate) set_cookies: Vec<HeaderValue>,
}

impl Attempt {
    fn report(report: SessionExtension) -> Self {
        Self {
            report,
            session: None,
            set_cookies: Vec::new(),
        }
    }
}

/// The extension engine one layer shares. Cloning is cheap (one `Arc`).
#[derive(Clone)]
pub(crate) struct Extender {
    inner: Arc<Inner>,
}

struct Inner {
    /// The layer setting: extend sessions expiring within this on every authenticated request.
    within: Option<Duration>,
    /// No session is extended past this age (from its `issued_at`): the layer refuses it then.
    max_session_age: Option<Duration>,
    cooldown: Duration,
    /// One entry per session extended within the cooldown: concurrent callers share the one in
    /// flight, later ones its result.
    attempts: Cache<String, Arc<Attempt>>,
    /// After an admin API failure, no extension is tried until then.
    pause: Mutex<Option<Pause>>,
}

struct Pause {
    until: Instant,
    cause: LifecycleError,
}

impl fmt::Debug for Extender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extender")
            .field("within", &self.inner.within)
            .field("cooldown", &self.inner.cooldown)
            .finish_non_exhaustive()
    }
}

impl Extender {
    /// `within`: the layer setting (`None`: only the handler helper extends);
    /// `max_session_age`: the layer's absolute cap, past which no extension helps.
    pub(crate) fn new(
        within: Option<Duration>,
        max_session_age: Option<Duration>,
        cooldown: Duration,
        capacity: u64,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                within,
                max_session_age,
                cooldown,
                attempts: Cache::builder()
                    .name("tower-kratos extensions")
                    .max_capacity(capacity)
                    .time_to_live(cooldown)
                    .build(),
                pause: Mutex::new(None),
            }),
        }
    }

    /// Whether the layer extends this request's session: the setting is on and the session
    /// expires within it.
    #[inline]
    pub(crate) fn is_due_for_layer(&self, outcome: &Outcome) -> bool {
        match (outcome, self.inner.within) {
            (Outcome::Authenticated(session), Some(within)) => {
                self.worth_extending(session, within)
            }
            _ => false,
        }
    }

    /// Whether a session expiring within `within` is worth extending: it is due, and the
    /// layer's maximum age (if any) comes after its present expiry, so an extension would give
    /// it time the layer accepts.
    pub(crate) fn worth_extending(&self, session: &KratosSession, within: Duration) -> bool {
        is_due(session, within)
            && self.inner.max_session_age.is_none_or(|max| {
                match (session.reaches_age_at(max), session.expires_at) {
                    (Some(cap), Some(expires_at)) => expires_at < cap,
                    _ => false,
                }
            })
    }

    /// Joins (or starts) the session's extension attempt. It runs on its own task, so a caller
    /// that goes away does not cancel the attempt the others wait for.
    pub(crate) async fn attempt(
        &self,
        client: &KratosClient,
        cache: &SessionCache,
        credential: &Credential,
        session: &KratosSession,
    ) -> Arc<Attempt> {
        if let Some(cause) = self.paused() {
            crate::metrics::extension("paused");
            return Arc::new(Attempt::report(SessionExtension::Failed(cause)));
        }
        let run = Run {
            extender: self.clone(),
            client: client.clone(),
            cache: cache.clone(),
            credential: credential.clone(),
            session: session.clone(),
        };
        let task = tokio::spawn(run.shared().instrument(tracing::Span::current()));
        task.await.unwrap_or_else(|_join_error| {
            Arc::new(Attempt::report(SessionExtension::Failed(
                LifecycleError::Unavailable(Unavailable::Interrupted),
            )))
        })
    }

    /// The layer's extension of one due request: the shared attempt, waited for at most the
    /// admin timeout. Whatever happens, the request goes on; the attempt keeps running if this
    /// request stops waiting for it.
    pub(crate) async fn for_request(
        &self,
        client: &KratosClient,
        cache: &SessionCache,
        credential: &Credential,
        session: &KratosSession,
    ) -> Arc<Attempt> {
        let Some(admin) = client.admin() else {
            let failed = SessionExtension::Failed(LifecycleError::AdminNotConfigured);
            return Arc::new(Attempt::report(failed));
        };
        let attempt = self.attempt(client, cache, credential, session);
        match tokio::time::timeout(admin.timeout(), attempt).await {
            Ok(attempt) => attempt,
            Err(_elapsed) => Arc::new(Attempt::report(SessionExtension::Failed(
                LifecycleError::Unavailable(Unavailable::Timeout),
            ))),
        }
    }

    /// The failure extensions are paused for, if they are.
    fn paused(&self) -> Option<LifecycleError> {
        let mut pause = self
            .inner
            .pause
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &*pause {
            Some(current) if current.until > Instant::now() => Some(current.cause.clone()),
            Some(_) => {
                *pause = None;
                None
            }
            None => None,
        }
    }

    /// Pauses extensions after an admin API failure: for Kratos's `Retry-After`, else the
    /// cooldown. The admin API's rate limit is per project, so one 429 concerns every session.
    fn pause_after(&self, cause: &LifecycleError) {
        let wait = cause.named_retry_after().unwrap_or(self.inner.cooldown);
        // Both are bounded (an hour, a day); a clock that cannot add them pauses for a day.
        let now = Instant::now();
        let until = now
            .checked_add(wait)
            .or_else(|| now.checked_add(MAX_EXTEND_COOLDOWN))
            .unwrap_or(now);
        let mut pause = self
            .inner
            .pause
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if pause.as_ref().is_none_or(|current| current.until < until) {
            *pause = Some(Pause {
                until,
                cause: cause.clone(),
            });
        }
    }
}

/// Whether a session expires within `within` from now.
pub(crate) fn is_due(session: &KratosSession, within: Duration) -> bool {
    session.expires_at.is_some_and(|expires_at| {
        let left = expires_at - OffsetDateTime::now_utc();
        left.is_negative() || left.unsigned_abs() < within
    })
}

/// What an attempt's task owns.
struct Run {
    extender: Extender,
    client: KratosClient,
    cache: SessionCache,
    credential: Credential,
    session: KratosSession,
}

impl Run {
    /// The session's attempt of the cooldown period: this one, or the one already there.
    async fn shared(self) -> Arc<Attempt> {
        let attempts = self.extender.inner.attempts.clone();
        attempts
            .entry(self.session.id.clone())
            .or_insert_with(self.run())
            .await
            .into_value()
    }

    /// One extension: the PATCH, then (when Kratos may have moved the expiry) the confirmation.
    async fn run(&self) -> Arc<Attempt> {
        let session_id = &self.session.id;
        // One extension per session across the replicas sharing a cache: Ory's admin rate
        // limit is the project's, not this process's.
        let cooldown = self.extender.inner.cooldown;
        if !self.cache.claim_extension(session_id, cooldown).await {
            let report = SessionExtension::ByAnotherReplica;
            log_attempt(session_id, &report);
            return Arc::new(Attempt::report(report));
        }
        let attempt = match self.client.extend_session(session_id).await {
            Ok(answer) => self.confirm(answer).await,
            Err(LifecycleError::NotFound) => {
                // Deleted, or being extended by another request: what this process has cached
                // for the session is in doubt either way, so its next request asks Kratos again.
                self.cache.revoked(Revoked::Session(session_id)).await;
                Attempt::report(SessionExtension::Gone)
            }
            Err(error) => {
                self.extender.pause_after(&error);
                Attempt::report(SessionExtension::Failed(error))
            }
        };
        log_attempt(session_id, &attempt.report);
        Arc::new(attempt)
    }

    /// One whoami as the caller, after Kratos accepted the extension.
    async fn confirm(&self, answer: ExtendAnswer) -> Attempt {
        let before = self.session.expires_at;
        if let ExtendAnswer::Session(body) = &answer {
            if !moved(before, body.expires_at) {
                // "Too early": nothing changed, so there is nothing to confirm or re-issue.
                return Attempt::report(SessionExtension::NotExtended { expires_at: before });
            }
        }
        // A fresh read: Ory Network's session cache may still hold the old expiry.
        let whoami = self
            .client
            .whoami(&self.credential, &Correlation::NONE, true)
            .await;
        match whoami.outcome {
            Outcome::Authenticated(confirmed) => {
                let report = match confirmed.expires_at {
                    Some(expires_at) if moved(before, Some(expires_at)) => {
                        SessionExtension::Extended { expires_at }
                    }
                    expires_at => SessionExtension::NotExtended { expires_at },
                };
                self.cache
                    .store(
                        &self.credential,
                        confirmed.clone(),
                        whoami.cache_for,
                        whoami.asked_at,
                    )
                    .await;
                Attempt {
                    report,
                    session: Some(confirmed),
                    set_cookies: whoami.set_cookies,
                }
            }
            Outcome::Unauthenticated(_) => {
                // Revoked or expired meanwhile: its cached entry must not be served again.
                self.cache
                    .revoked(Revoked::Credential(&self.credential))
                    .await;
                Attempt::report(SessionExtension::Gone)
            }
            unconfirmed => Attempt::report(match answer {
                // The 200 said what the expiry is now; only the cache refresh is missed.
                ExtendAnswer::Session(body) => match body.expires_at {
                    Some(expires_at) => SessionExtension::Extended { expires_at },
                    None => SessionExtension::NotExtended { expires_at: before },
                },
                ExtendAnswer::NoContent => {
                    SessionExtension::Failed(LifecycleError::from_outcome(unconfirmed))
                }
            }),
        }
    }
}

/// Whether the expiry moved later.
fn moved(before: Option<OffsetDateTime>, after: Option<OffsetDateTime>) -> bool {
    match (before, after) {
        (Some(before), Some(after)) => after > before,
        (None, Some(_)) => true,
        (_, None) => false,
    }
}

fn log_attempt(session_id: &str, report: &SessionExtension) {
    crate::metrics::extension(report.kind());
    match report {
        SessionExtension::Extended { expires_at } => tracing::info!(
            session_id,
            extension = report.kind(),
            %expires_at,
            "Kratos session extended"
        ),
        SessionExtension::NotExtended { .. } => tracing::debug!(
            session_id,
            extension = report.kind(),
            "Kratos left the session's expiry unchanged (earliest_possible_extend not reached)"
        ),
        SessionExtension::ByAnotherReplica => tracing::debug!(
            session_id,
            extension = report.kind(),
            "another replica claimed the session's extension within the cooldown"
        ),
        SessionExtension::Gone => tracing::info!(
            session_id,
            extension = report.kind(),
            "Kratos answered 404 to the extension: session gone or being extended elsewhere"
        ),
        // Once per cooldown at most: a failure pauses every extension.
        SessionExtension::Failed(error) => tracing::warn!(
            session_id,
            extension = report.kind(),
            reason = %error,
            "Kratos session extension failed; the request goes on with the session it had"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_expiring_in(seconds: i64) -> KratosSession {
        let expires_at = OffsetDateTime::now_utc() + time::Duration::seconds(seconds);
        let body = serde_json::json!({
            "id": "6f5e3c4a-0000-4000-8000-000000000001",
            "active": true,
            "expires_at": expires_at.format(&time::format_description::well_known::Rfc3339).unwrap(),
        });
        KratosSession::new(Arc::new(serde_json::from_value(body).unwrap()))
    }

    #[test]
    fn due_only_within_the_threshold() {
        let hour = Duration::from_secs(3600);
        assert!(is_due(&session_expiring_in(600), hour));
        assert!(!is_due(&session_expiring_in(7200), hour));
        assert!(is_due(&session_expiring_in(-5), hour));
        // A threshold beyond what time can represent never panics.
        assert!(is_due(&session_expiring_in(600), Duration::MAX));
        let no_expiry = KratosSession::new(Arc::new(
            serde_json::from_str(r#"{"id":"s","active":true}"#).unwrap(),
        ));
        assert!(!is_due(&no_expiry, hour));
    }

    #[test]
    fn expiry_moves_only_later() {
        let now = OffsetDateTime::now_utc();
        assert!(moved(Some(now), Some(now + time::Duration::SECOND)));
        assert!(!moved(Some(now), Some(now)));
        assert!(!moved(Some(now), None));
    }
}
