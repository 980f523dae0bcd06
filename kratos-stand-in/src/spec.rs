//! Creating sessions from a test, and the snapshot a test gets back.

use std::time::Duration;

use time::OffsetDateTime;

use super::shared::Shared;
use super::store::{Expiry, NewSession, Session};

/// A session in the stand-in, as a test sees it: its credentials and current state.
///
/// This is a snapshot; call [`KratosStandIn::session_state`](super::KratosStandIn::session_state)
/// for a fresh one after the server changed the session.
///
/// Unlike the crate's own types, its `Debug` shows the token and cookie value: they are the
/// stand-in's made-up credentials, and a failing test should show which session it used.
#[derive(Clone, Debug)]
pub struct TestSession {
    /// The session id (a UUID).
    pub id: String,
    /// The identity the session belongs to (a UUID unless a test chose another id).
    pub identity_id: String,
    /// The session token for `X-Session-Token` or `Authorization: Bearer`: `ory_st_` followed by
    /// 32 random alphanumerics.
    pub token: String,
    /// The session cookie's name (the stand-in's `cookie_name`).
    pub cookie_name: String,
    /// The newest cookie value issued for the session. It is opaque, like Kratos's encrypted
    /// cookie, and is not the token; earlier values keep working.
    pub cookie_value: String,
    /// When the session expires (UTC).
    pub expires_at: OffsetDateTime,
    /// The stored flag: `false` once revoked. An expired session keeps `true`, as in Kratos's
    /// database; whoami still rejects it.
    pub active: bool,
    /// The session's authenticator assurance level: `"aal1"` or `"aal2"`.
    pub aal: String,
}

impl TestSession {
    /// The `Cookie` header value that carries this session: `"<cookie_name>=<cookie_value>"`.
    pub fn cookie_header(&self) -> String {
        format!("{}={}", self.cookie_name, self.cookie_value)
    }

    pub(crate) fn of(session: &Session, cookie_name: &str) -> Self {
        Self {
            id: session.id.clone(),
            identity_id: session.identity_id.clone(),
            token: session.token.clone(),
            cookie_name: cookie_name.to_owned(),
            cookie_value: session.cookie.clone(),
            expires_at: session.expires_at,
            active: session.active,
            aal: session.aal.as_str().to_owned(),
        }
    }
}

/// Describes one session to create; get it from
/// [`KratosStandIn::session`](super::KratosStandIn::session) and finish with
/// [`create`](Self::create).
///
/// Without other calls the session is active, aal1 by password, expires after the stand-in's
/// `lifespan`, and belongs to a new identity with traits `{"email": "user-<n>@example.org"}`.
#[derive(Debug)]
#[must_use = "a SessionSpec does nothing until `.create()`"]
pub struct SessionSpec<'a> {
    shared: &'a Shared,
    new: NewSession,
}

impl<'a> SessionSpec<'a> {
    pub(crate) fn new(shared: &'a Shared) -> Self {
        Self {
            shared,
            new: NewSession::default(),
        }
    }

    /// The session completed a second factor (password, then TOTP): aal2. The identity then has
    /// a second factor, so its aal1 sessions get the 403 step-up from whoami.
    pub fn aal2(mut self) -> Self {
        self.new.aal2 = true;
        self
    }

    /// The identity has a second factor set up, so Kratos's default
    /// `session.whoami.required_aal: highest_available` answers an aal1 session with
    /// 403 `session_aal2_required`.
    pub fn requires_aal2(mut self) -> Self {
        self.new.requires_aal2 = true;
        self
    }

    /// Expires this long after creation (instead of after the stand-in's `lifespan`).
    pub fn expires_in(mut self, expires_in: Duration) -> Self {
        self.new.expiry = Some(Expiry::In(expires_in));
        self
    }

    /// Expires at this time; a past time makes an expired session.
    pub fn expires_at(mut self, at: OffsetDateTime) -> Self {
        self.new.expiry = Some(Expiry::At(at));
        self
    }

    /// The session began at this time (its `issued_at`, and its first factor's `completed_at`),
    /// for tests of a maximum session age; its `authenticated_at` too, unless
    /// [`authenticated_at`](Self::authenticated_at) says otherwise. Default: now.
    pub fn issued_at(mut self, at: OffsetDateTime) -> Self {
        self.new.issued_at = Some(at);
        self
    }

    /// The session last authenticated at this time (its `authenticated_at`), for tests of a
    /// recent sign-in. Default: when it was issued.
    pub fn authenticated_at(mut self, at: OffsetDateTime) -> Self {
        self.new.authenticated_at = Some(at);
        self
    }

    /// The session is revoked (`active: false`) from the start.
    pub fn inactive(mut self) -> Self {
        self.new.inactive = true;
        self
    }

    /// Belongs to this identity: an existing one (to give it several sessions) or a new one with
    /// this id. Use a UUID, as Kratos does, so admin routes accept it.
    pub fn identity(mut self, identity_id: &str) -> Self {
        self.new.identity_id = Some(identity_id.to_owned());
        self
    }

    /// The identity's traits. They replace an existing identity's traits; an `email` trait also
    /// becomes its verifiable and recovery address.
    pub fn traits(mut self, traits: serde_json::Value) -> Self {
        self.new.traits = Some(traits);
        self
    }

    /// The identity's `external_id`: an id from another system, shown in the identity JSON and
    /// used as `sub` by a tokenizer template with `subject_from_external_id(true)` (feature
    /// `jwt`). It
    /// replaces an existing identity's external id. Default: none. Kratos keeps external ids
    /// unique; the stand-in does not check.
    pub fn external_id(mut self, external_id: impl Into<String>) -> Self {
        self.new.external_id = Some(external_id.into());
        self
    }

    /// Creates the session (and its identity if needed) and returns its credentials.
    ///
    /// # Panics
    ///
    /// Only if the operating system's random number generator fails.
    pub fn create(self) -> TestSession {
        let shared = self.shared;
        let now = OffsetDateTime::now_utc();
        let mut store = shared.store();
        match store.create(self.new, shared.config.lifespan, now) {
            Ok(session) => TestSession::of(session, &shared.config.cookie_name),
            Err(err) => panic!("Kratos stand-in: the OS random number generator failed: {err}"),
        }
    }
}
