//! Kratos's data, in memory: identities, sessions, session tokens and the cookies issued for them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use super::credentials::Presented;
use super::ids;

/// Length of the random part of a session token (`ory_st_` + 32 alphanumerics, as Kratos).
const TOKEN_RANDOM_LEN: usize = 32;
/// Length of an opaque cookie value. Real values are encrypted blobs; only their opacity matters.
const COOKIE_VALUE_LEN: usize = 64;

/// An authenticator assurance level a session can reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Aal {
    Aal1,
    Aal2,
}

impl Aal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Aal1 => "aal1",
            Self::Aal2 => "aal2",
        }
    }
}

/// One entry of a session's `authentication_methods`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct AuthMethod {
    pub(crate) method: &'static str,
    pub(crate) aal: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) completed_at: OffsetDateTime,
}

/// One entry of a session's `devices`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Device {
    pub(crate) id: String,
    pub(crate) ip_address: Option<String>,
    pub(crate) user_agent: Option<String>,
    pub(crate) location: Option<String>,
}

/// One entry of an identity's `verifiable_addresses`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct VerifiableAddress {
    pub(crate) id: String,
    pub(crate) value: String,
    pub(crate) verified: bool,
    pub(crate) via: &'static str,
    pub(crate) status: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) updated_at: OffsetDateTime,
}

/// One entry of an identity's `recovery_addresses`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct RecoveryAddress {
    pub(crate) id: String,
    pub(crate) value: String,
    pub(crate) via: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) updated_at: OffsetDateTime,
}

#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) id: String,
    /// Kratos's `external_id`: an id from another system, e.g. a `tokenize_as` template's subject.
    pub(crate) external_id: Option<String>,
    pub(crate) traits: serde_json::Value,
    /// `state == "active"`.
    pub(crate) active: bool,
    /// A second factor is set up, so Kratos's default `required_aal: highest_available` demands aal2.
    pub(crate) has_second_factor: bool,
    pub(crate) verifiable_addresses: Vec<VerifiableAddress>,
    pub(crate) recovery_addresses: Vec<RecoveryAddress>,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) updated_at: OffsetDateTime,
    pub(crate) state_changed_at: OffsetDateTime,
}

#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) identity_id: String,
    pub(crate) token: String,
    /// The newest cookie value issued for this session.
    pub(crate) cookie: String,
    /// The stored flag: false once revoked. Whether the session is usable also depends on expiry
    /// and the identity (`Store::is_active`).
    pub(crate) active: bool,
    pub(crate) aal: Aal,
    pub(crate) methods: Vec<AuthMethod>,
    pub(crate) devices: Vec<Device>,
    pub(crate) expires_at: OffsetDateTime,
    pub(crate) authenticated_at: OffsetDateTime,
    pub(crate) issued_at: OffsetDateTime,
    /// Creation order, for "newest first" listings.
    pub(crate) seq: u64,
    /// The browser logout flow's token (`ory_lo_…`, a hidden field in Kratos).
    pub(crate) logout_token: String,
}

/// What a cookie value decodes to. Real Kratos cookies carry exactly this, signed and encrypted.
#[derive(Debug)]
pub(crate) struct IssuedCookie {
    pub(crate) session_token: String,
    /// The session's `expires_at` when the cookie was issued.
    pub(crate) expires_at: OffsetDateTime,
}

/// How Kratos's `extractToken` read a request.
#[derive(Debug)]
pub(crate) struct Extracted {
    /// The token that won; `None` is Kratos's "credentials missing".
    pub(crate) token: Option<String>,
    pub(crate) cookie: CookieSeen,
}

/// The session cookie in a request, as Kratos's cookie store sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum CookieSeen {
    Absent,
    /// A cookie value the stand-in issued, with the `expires_at` it was issued for.
    Decodable {
        expires_at: OffsetDateTime,
    },
    /// A cookie with the session cookie's name that the stand-in never issued: to Kratos it fails
    /// to decode.
    Undecodable,
}

/// What a test asked for when creating a session (see `SessionSpec`).
#[derive(Debug, Default)]
pub(crate) struct NewSession {
    pub(crate) aal2: bool,
    pub(crate) requires_aal2: bool,
    pub(crate) expiry: Option<Expiry>,
    pub(crate) inactive: bool,
    pub(crate) identity_id: Option<String>,
    pub(crate) traits: Option<serde_json::Value>,
    /// The identity's `external_id` (set on an existing identity too).
    pub(crate) external_id: Option<String>,
    /// When the session began (`issued_at`, its first factor); default now.
    pub(crate) issued_at: Option<OffsetDateTime>,
    /// When it last authenticated; default `issued_at`.
    pub(crate) authenticated_at: Option<OffsetDateTime>,
}

/// When a new session expires.
#[derive(Debug)]
pub(crate) enum Expiry {
    /// This long after creation.
    In(Duration),
    At(OffsetDateTime),
}

/// All identities, sessions and credentials.
#[derive(Debug, Default)]
pub(crate) struct Store {
    identities: HashMap<String, Identity>,
    sessions: HashMap<String, Session>,
    /// Session token -> session id.
    tokens: HashMap<String, String>,
    /// Cookie value -> what it decodes to. Entries outlive their sessions, as real cookies do.
    cookies: HashMap<String, IssuedCookie>,
    next_seq: u64,
    next_user: u64,
    /// Browser login flows started and not yet completed, by flow id.
    login_flows: HashMap<String, LoginFlow>,
    /// The identity the login page signs in, once it exists.
    demo_identity: Option<String>,
}

/// The most login flows kept at once: an abandoned flow is dropped after its lifespan, and
/// the oldest are dropped before this many pile up.
const MAX_LOGIN_FLOWS: usize = 1000;
/// How long a login flow can be completed: Kratos's `selfservice.flows.login.lifespan`
/// default is an hour; ten minutes is plenty for a page a person clicks.
pub(crate) const LOGIN_FLOW_LIFESPAN: Duration = Duration::from_secs(600);
/// The demo user's e-mail, its only trait.
pub(crate) const DEMO_EMAIL: &str = "demo@example.org";

/// A browser login flow (`GET /self-service/login/browser`), until the login page posts it.
#[derive(Clone, Debug)]
pub(crate) struct LoginFlow {
    pub(crate) id: String,
    /// `aal=aal2`: a second factor for the session it was started in.
    pub(crate) second_factor: bool,
    /// `refresh=true`: a new sign-in in the session it was started in.
    pub(crate) refresh: bool,
    /// The session the flow upgrades or refreshes; `None` for a first sign-in.
    pub(crate) session_id: Option<String>,
    /// Where the browser goes afterwards (validated when the flow began).
    pub(crate) return_to: Option<String>,
    pub(crate) expires_at: OffsetDateTime,
}

/// A factor the login page lets the demo user complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Factor {
    Password,
    Totp,
}

impl Store {
    /// Creates a session (and its identity, unless it exists), with its token and a first cookie.
    pub(crate) fn create(
        &mut self,
        spec: NewSession,
        lifespan: Duration,
        now: OffsetDateTime,
    ) -> Result<&Session, getrandom::Error> {
        let identity_id = match spec.identity_id.as_deref().map(ids::canonical) {
            Some(id) if self.identities.contains_key(&id) => id,
            Some(id) => self.new_identity(Some(id), now)?,
            None => self.new_identity(None, now)?,
        };
        if let Some(identity) = self.identities.get_mut(&identity_id) {
            if let Some(traits) = spec.traits {
                identity.set_traits(traits, now)?;
            }
            if let Some(external_id) = spec.external_id {
                identity.external_id = Some(external_id);
                identity.updated_at = now;
            }
            identity.has_second_factor |= spec.requires_aal2 || spec.aal2;
        }

        let expires_at = match spec.expiry {
            Some(Expiry::At(at)) => to_utc(at),
            Some(Expiry::In(d)) => add(now, d),
            None => add(now, lifespan),
        };
        let issued_at = spec.issued_at.map_or(now, to_utc);
        let authenticated_at = spec.authenticated_at.map_or(issued_at, to_utc);
        let mut methods = vec![Factor::Password.method(issued_at)];
        if spec.aal2 {
            methods.push(Factor::Totp.method(issued_at));
        }
        let token = format!("ory_st_{}", ids::random_alphanumeric(TOKEN_RANDOM_LEN)?);
        let logout_token = format!("ory_lo_{}", ids::random_alphanumeric(TOKEN_RANDOM_LEN)?);
        let cookie = ids::random_alphanumeric(COOKIE_VALUE_LEN)?;
        let session = Session {
            id: ids::new_uuid()?,
            identity_id,
            token,
            cookie,
            active: !spec.inactive,
            aal: if spec.aal2 { Aal::Aal2 } else { Aal::Aal1 },
            methods,
            devices: vec![Device {
                id: ids::new_uuid()?,
                ip_address: Some("127.0.0.1".to_owned()),
                user_agent: Some("tower-kratos stand-in".to_owned()),
                // Kratos joins the Cf-Ipcity/Cf-Ipcountry headers; without them it stores "".
                location: Some(String::new()),
            }],
            expires_at,
            authenticated_at,
            issued_at,
            seq: self.next_seq,
            logout_token,
        };
        self.next_seq += 1;
        self.cookies.insert(
            session.cookie.clone(),
            IssuedCookie {
                session_token: session.token.clone(),
                expires_at,
            },
        );
        self.tokens
            .insert(session.token.clone(), session.id.clone());
        Ok(self.sessions.entry(session.id.clone()).or_insert(session))
    }

    fn new_identity(
        &mut self,
        id: Option<String>,
        now: OffsetDateTime,
    ) -> Result<String, getrandom::Error> {
        self.next_user += 1;
        let id = match id {
            Some(id) => id,
            None => ids::new_uuid()?,
        };
        let mut identity = Identity {
            id: id.clone(),
            external_id: None,
            traits: serde_json::Value::Null,
            active: true,
            has_second_factor: false,
            verifiable_addresses: Vec::new(),
            recovery_addresses: Vec::new(),
            created_at: now,
            updated_at: now,
            state_changed_at: now,
        };
        let email = format!("user-{}@example.org", self.next_user);
        identity.set_traits(serde_json::json!({ "email": email }), now)?;
        self.identities.insert(id.clone(), identity);
        Ok(id)
    }

    /// The demo user's identity (`demo@example.org`), created on first use. It has a second
    /// factor to complete, yet whoami accepts its aal1 sessions: Kratos's
    /// `session.whoami.required_aal: aal1`, which routes that ask for a second factor
    /// themselves need.
    pub(crate) fn demo_identity(
        &mut self,
        now: OffsetDateTime,
    ) -> Result<String, getrandom::Error> {
        if let Some(id) = self
            .demo_identity
            .as_ref()
            .filter(|id| self.identities.contains_key(*id))
        {
            return Ok(id.clone());
        }
        let id = self.new_identity(None, now)?;
        if let Some(identity) = self.identities.get_mut(&id) {
            identity.set_traits(serde_json::json!({ "email": DEMO_EMAIL }), now)?;
        }
        self.demo_identity = Some(id.clone());
        Ok(id)
    }

    /// Starts a login flow, dropping expired ones (and the oldest, past [`MAX_LOGIN_FLOWS`]).
    pub(crate) fn begin_login(&mut self, flow: LoginFlow, now: OffsetDateTime) {
        self.login_flows.retain(|_, kept| kept.expires_at > now);
        while self.login_flows.len() >= MAX_LOGIN_FLOWS {
            let Some(oldest) = self
                .login_flows
                .values()
                .min_by_key(|kept| kept.expires_at)
                .map(|kept| kept.id.clone())
            else {
                break;
            };
            self.login_flows.remove(&oldest);
        }
        self.login_flows.insert(flow.id.clone(), flow);
    }

    /// A login flow that can still be completed.
    pub(crate) fn login_flow(&self, id: &str, now: OffsetDateTime) -> Option<&LoginFlow> {
        self.login_flows
            .get(id)
            .filter(|flow| flow.expires_at > now)
    }

    /// Ends a login flow: it cannot be posted twice.
    pub(crate) fn end_login(&mut self, id: &str) {
        self.login_flows.remove(id);
    }

    /// The factors completed again in an existing session: `authenticated_at` moves to now
    /// (a refresh, a step-up), a second factor raises it to aal2. `issued_at` stays.
    pub(crate) fn authenticate(
        &mut self,
        session_id: &str,
        factors: &[Factor],
        now: OffsetDateTime,
    ) -> bool {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return false;
        };
        for factor in factors {
            session.methods.push(factor.method(now));
            if *factor == Factor::Totp {
                session.aal = Aal::Aal2;
            }
        }
        session.authenticated_at = now;
        true
    }

    /// Issues a new cookie value for the session's current expiry and makes it the session's
    /// current one. Earlier values keep working.
    pub(crate) fn issue_cookie(
        &mut self,
        session_id: &str,
    ) -> Result<Option<String>, getrandom::Error> {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return Ok(None);
        };
        let value = ids::random_alphanumeric(COOKIE_VALUE_LEN)?;
        self.cookies.insert(
            value.clone(),
            IssuedCookie {
                session_token: session.token.clone(),
                expires_at: session.expires_at,
            },
        );
        session.cookie.clone_from(&value);
        Ok(Some(value))
    }

    /// Applies Kratos's credential precedence: a non-empty `X-Session-Token` alone; else a cookie
    /// that decodes; else `Authorization: Bearer`.
    pub(crate) fn extract(&self, presented: &Presented) -> Extracted {
        let cookie = match &presented.cookie {
            None => CookieSeen::Absent,
            Some(value) => match self.cookies.get(value) {
                Some(issued) => CookieSeen::Decodable {
                    expires_at: issued.expires_at,
                },
                None => CookieSeen::Undecodable,
            },
        };
        let decoded = presented.cookie.as_ref().and_then(|v| self.cookies.get(v));
        let token = presented
            .session_token
            .clone()
            .or_else(|| decoded.map(|issued| issued.session_token.clone()))
            .or_else(|| presented.bearer.clone());
        Extracted { token, cookie }
    }

    /// The usable session the presented credentials resolve to (Kratos's
    /// `FetchFromRequest`): extracted by Kratos's precedence, found, and active at `now`.
    pub(crate) fn usable_session(
        &self,
        presented: &Presented,
        now: OffsetDateTime,
    ) -> Option<&Session> {
        self.extract(presented)
            .token
            .and_then(|token| self.by_token(&token))
            .filter(|session| self.is_active(session, now))
    }

    pub(crate) fn by_token(&self, token: &str) -> Option<&Session> {
        self.tokens.get(token).and_then(|id| self.sessions.get(id))
    }

    pub(crate) fn session(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id)
    }

    pub(crate) fn identity(&self, id: &str) -> Option<&Identity> {
        self.identities.get(id)
    }

    /// Kratos's `Session.IsActive`: not revoked, not expired, identity active.
    pub(crate) fn is_active(&self, session: &Session, now: OffsetDateTime) -> bool {
        session.active
            && session.expires_at > now
            && self
                .identities
                .get(&session.identity_id)
                .is_some_and(|identity| identity.active)
    }

    /// `required_aal: highest_available` (Kratos's default) is not met: the identity has a second
    /// factor but the session is aal1.
    pub(crate) fn needs_step_up(&self, session: &Session) -> bool {
        session.aal == Aal::Aal1
            && self
                .identities
                .get(&session.identity_id)
                .is_some_and(|identity| identity.has_second_factor)
    }

    /// The identity's other usable sessions, newest first (`GET /sessions`).
    pub(crate) fn other_active_sessions(
        &self,
        current: &Session,
        now: OffsetDateTime,
    ) -> Vec<&Session> {
        let mut others: Vec<&Session> = self
            .sessions
            .values()
            .filter(|s| {
                s.identity_id == current.identity_id
                    && s.id != current.id
                    && s.active
                    && s.expires_at >= now
            })
            .collect();
        others.sort_by_key(|s| std::cmp::Reverse(s.seq));
        others
    }

    /// Deactivates all the identity's sessions but `keep` (Kratos's
    /// `RevokeSessionsIdentityExcept`); returns how many matched (already inactive ones
    /// included, as on PostgreSQL).
    pub(crate) fn revoke_others(&mut self, identity_id: &str, keep: Option<&str>) -> usize {
        let mut count = 0;
        for session in self.sessions.values_mut() {
            if session.identity_id == identity_id && Some(session.id.as_str()) != keep {
                session.active = false;
                count += 1;
            }
        }
        count
    }

    /// Deactivates `session_id` if it belongs to `identity_id`; silently does nothing otherwise.
    pub(crate) fn revoke_of_identity(&mut self, identity_id: &str, session_id: &str) {
        if let Some(session) = self.sessions.get_mut(session_id) {
            if session.identity_id == identity_id {
                session.active = false;
            }
        }
    }

    /// Deactivates a session; false when it does not exist.
    pub(crate) fn revoke(&mut self, session_id: &str) -> bool {
        self.sessions
            .get_mut(session_id)
            .map(|session| session.active = false)
            .is_some()
    }

    /// Deactivates the session with this token; false when no session has it.
    pub(crate) fn revoke_by_token(&mut self, token: &str) -> bool {
        match self.tokens.get(token) {
            Some(id) => {
                let id = id.clone();
                self.revoke(&id)
            }
            None => false,
        }
    }

    /// Kratos's `ExtendSession`: sets `expires_at = now + lifespan` unless it is too early
    /// (`now <= expires_at - earliest_possible_extend`). False when the session does not exist.
    pub(crate) fn extend(
        &mut self,
        session_id: &str,
        now: OffsetDateTime,
        lifespan: Duration,
        earliest_possible_extend: Duration,
    ) -> bool {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return false;
        };
        if sub(session.expires_at, earliest_possible_extend) < now {
            session.expires_at = add(now, lifespan);
        }
        true
    }

    pub(crate) fn set_expires_at(&mut self, session_id: &str, at: OffsetDateTime) -> bool {
        self.sessions
            .get_mut(session_id)
            .map(|session| session.expires_at = to_utc(at))
            .is_some()
    }

    pub(crate) fn set_identity_active(
        &mut self,
        identity_id: &str,
        active: bool,
        now: OffsetDateTime,
    ) -> bool {
        let Some(identity) = self.identities.get_mut(identity_id) else {
            return false;
        };
        if identity.active != active {
            identity.active = active;
            identity.state_changed_at = now;
            identity.updated_at = now;
        }
        true
    }

    /// Permanently deletes the identity's sessions; returns how many there were.
    pub(crate) fn delete_identity_sessions(&mut self, identity_id: &str) -> usize {
        let doomed: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.identity_id == identity_id)
            .map(|s| s.id.clone())
            .collect();
        self.remove_sessions(&doomed)
    }

    /// Deactivates the selected sessions that are still active (the stored flag), oldest
    /// first, at most `limit`; returns how many it deactivated.
    pub(crate) fn disable_selected(&mut self, selection: &Selection, limit: usize) -> usize {
        let chosen = self.select(selection, true, limit);
        for id in &chosen {
            if let Some(session) = self.sessions.get_mut(id) {
                session.active = false;
            }
        }
        chosen.len()
    }

    /// Permanently deletes the selected sessions, oldest first, at most `limit`; returns how
    /// many it deleted.
    pub(crate) fn delete_selected(&mut self, selection: &Selection, limit: usize) -> usize {
        let chosen = self.select(selection, false, limit);
        self.remove_sessions(&chosen)
    }

    /// The ids of the selected sessions (only the active ones if asked), oldest first, at most
    /// `limit`.
    fn select(&self, selection: &Selection, only_active: bool, limit: usize) -> Vec<String> {
        let mut chosen: Vec<&Session> = self
            .sessions
            .values()
            .filter(|s| (s.active || !only_active) && selection.contains(s))
            .collect();
        chosen.sort_by_key(|s| s.seq);
        chosen
            .into_iter()
            .take(limit)
            .map(|s| s.id.clone())
            .collect()
    }

    /// Removes sessions and their tokens (cookie values stay known, as real cookies outlive
    /// their sessions); returns how many existed.
    fn remove_sessions(&mut self, ids: &[String]) -> usize {
        let mut removed = 0;
        for id in ids {
            if let Some(session) = self.sessions.remove(id) {
                self.tokens.remove(&session.token);
                removed += 1;
            }
        }
        removed
    }
}

/// The sessions a bulk call (`POST /admin/sessions`) is about.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Selection {
    /// `"identities": ["*"]`: every session of every identity.
    All,
    /// The sessions of these identities (canonical ids).
    Identities(HashSet<String>),
    /// These sessions (canonical ids).
    Sessions(HashSet<String>),
}

impl Selection {
    fn contains(&self, session: &Session) -> bool {
        match self {
            Self::All => true,
            Self::Identities(ids) => ids.contains(&session.identity_id),
            Self::Sessions(ids) => ids.contains(&session.id),
        }
    }
}

impl Identity {
    /// Replaces the traits; an `email` trait becomes the verifiable and recovery address, as the
    /// default identity schema declares.
    fn set_traits(
        &mut self,
        traits: serde_json::Value,
        now: OffsetDateTime,
    ) -> Result<(), getrandom::Error> {
        self.verifiable_addresses.clear();
        self.recovery_addresses.clear();
        if let Some(email) = traits.get("email").and_then(|e| e.as_str()) {
            self.verifiable_addresses.push(VerifiableAddress {
                id: ids::new_uuid()?,
                value: email.to_owned(),
                verified: false,
                via: "email",
                status: "pending",
                created_at: now,
                updated_at: now,
            });
            self.recovery_addresses.push(RecoveryAddress {
                id: ids::new_uuid()?,
                value: email.to_owned(),
                via: "email",
                created_at: now,
                updated_at: now,
            });
        }
        self.traits = traits;
        self.updated_at = now;
        Ok(())
    }
}

impl Factor {
    /// Its `authentication_methods` entry, completed at `now`.
    fn method(self, now: OffsetDateTime) -> AuthMethod {
        let (method, aal) = match self {
            Self::Password => ("password", "aal1"),
            Self::Totp => ("totp", "aal2"),
        };
        AuthMethod {
            method,
            aal,
            completed_at: now,
        }
    }
}

/// `at` in UTC (Kratos writes `Z` times), or unchanged if it cannot be represented in UTC.
pub(crate) fn to_utc(at: OffsetDateTime) -> OffsetDateTime {
    at.checked_to_offset(time::UtcOffset::UTC).unwrap_or(at)
}

/// `at + d`, saturating at the largest representable time instead of panicking.
pub(crate) fn add(at: OffsetDateTime, d: Duration) -> OffsetDateTime {
    time::Duration::try_from(d)
        .ok()
        .and_then(|d| at.checked_add(d))
        .unwrap_or_else(|| time::PrimitiveDateTime::MAX.assume_utc())
}

/// `at - d`, saturating at the smallest representable time instead of panicking.
pub(crate) fn sub(at: OffsetDateTime, d: Duration) -> OffsetDateTime {
    time::Duration::try_from(d)
        .ok()
        .and_then(|d| at.checked_sub(d))
        .unwrap_or_else(|| time::PrimitiveDateTime::MIN.assume_utc())
}
