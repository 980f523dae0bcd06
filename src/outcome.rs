//! What a session lookup can end in. Each real situation has its own variant, so an outage is
//! never mistaken for "logged out" and a step-up is never mistaken for "denied".

use std::{borrow::Cow, fmt, time::Duration};

use http::StatusCode;

use crate::{
    credentials::MalformedCredential, defaults::DEFAULT_RETRY_AFTER, response::Refusal,
    session::KratosSession,
};

/// The result of checking a request's credential.
///
/// The layer puts it in the request's extensions when the request goes on without a session
/// (optional mode), and in the response's extensions when it rejects the request, so handlers,
/// logs and tests can see why.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// Kratos accepted the credential; the session is active and unexpired.
    Authenticated(KratosSession),
    /// The request carried no Kratos credential.
    Anonymous,
    /// The credential is not (or no longer) valid: Kratos answered 401, or the session it
    /// returned is inactive or expired, or the credential was malformed and Kratos was not asked.
    Unauthenticated(Unauthenticated),
    /// The session is valid but Kratos requires a higher assurance level (403
    /// `session_aal2_required`): the user must complete a second factor.
    AalRequired(AalRequired),
    /// The session is valid, but the route asks more of it
    /// ([`Requirement`](crate::require::Requirement)): a second factor, a recent sign-in, a
    /// condition of the app's. The user is signed in: never answered as a 401.
    Insufficient(Insufficient),
    /// Kratos could not give an answer: down, slow, rate limited, or answered nonsense. The
    /// caller may well be signed in; this must not be treated as "logged out".
    Unavailable(Unavailable),
    /// The request carries the session cookie, could change state (a method other than `GET`,
    /// `HEAD` and `OPTIONS`, or a WebSocket upgrade), and comes from another origin than the
    /// app's and the trusted ones: what a forged cross-site request looks like. Refused (403)
    /// without asking Kratos, in optional mode too, and never redirected to the login page. See
    /// [`KratosLayerBuilder::trusted_origin`](crate::authenticate::KratosLayerBuilder::trusted_origin).
    CrossOriginRequest,
}

impl Outcome {
    /// The session, when authenticated.
    pub fn session(&self) -> Option<&KratosSession> {
        match self {
            Self::Authenticated(session) => Some(session),
            _ => None,
        }
    }

    /// The status a rejection answers this outcome with: 401 (no credential, or not a valid
    /// one), 403 (a second factor is required, a route's requirement unmet, a cross-origin
    /// request), 503 (Kratos unavailable: never a 401, which would sign the user out).
    /// `Authenticated` is no refusal: 200.
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_kratos::{outcome::Unavailable, Outcome};
    ///
    /// assert_eq!(Outcome::Anonymous.status(), StatusCode::UNAUTHORIZED);
    /// let down = Outcome::Unavailable(Unavailable::Timeout);
    /// assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    /// // A default for outages whose cause named no delay of its own.
    /// assert_eq!(down.retry_after(), Some(tower_kratos::defaults::DEFAULT_RETRY_AFTER));
    /// ```
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Authenticated(_) => StatusCode::OK,
            Self::Anonymous | Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::AalRequired(_) | Self::Insufficient(_) | Self::CrossOriginRequest => {
                StatusCode::FORBIDDEN
            }
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// For Kratos unavailable, how long a client should wait before trying again: what Kratos
    /// (after a 429) or the back-off said, else [`DEFAULT_RETRY_AFTER`]. `None` for the other
    /// outcomes. ([`Unavailable::retry_after`] is only the named delay.)
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable(unavailable) => {
                Some(unavailable.retry_after().unwrap_or(DEFAULT_RETRY_AFTER))
            }
            _ => None,
        }
    }

    /// Where Kratos wants the browser sent to complete a second factor, for a step-up.
    pub fn redirect_browser_to(&self) -> Option<&str> {
        match self {
            Self::AalRequired(step_up) => step_up.redirect_browser_to.as_deref(),
            Self::Insufficient(insufficient) => insufficient.redirect_browser_to.as_deref(),
            _ => None,
        }
    }

    /// What happened, in a sentence safe to show the client.
    pub fn reason(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Self::Authenticated(_) => "The session is valid.",
            Self::Anonymous => "No session credential was found in the request.",
            Self::Unauthenticated(Unauthenticated::Malformed(_)) => {
                "The session credential in the request is malformed."
            }
            Self::Unauthenticated(Unauthenticated::TooLarge) => {
                "The session credential in the request is too large to be checked."
            }
            Self::Unauthenticated(Unauthenticated::TooOld) => {
                "The session is older than this app accepts: sign in again."
            }
            Self::Unauthenticated(Unauthenticated::Token(why)) => {
                return Cow::Owned(format!("The tokenized session was refused: {why}."))
            }
            Self::Insufficient(insufficient) => {
                return Cow::Owned(format!(
                    "The session does not meet this route's requirement: {}.",
                    insufficient.unmet
                ))
            }
            Self::Unauthenticated(_) => "The session is invalid, expired or revoked.",
            Self::AalRequired(_) => {
                "An active session was found but it does not fulfill the required \
                 Authenticator Assurance Level. Complete a second factor to continue."
            }
            Self::Unavailable(unavailable) => {
                return Cow::Owned(format!(
                    "The session service is unavailable ({unavailable}); try again later."
                ))
            }
            Self::CrossOriginRequest => {
                "The request came from another origin with the session cookie, and could \
                 change state: refused as a possible cross-site request forgery."
            }
        })
    }

    /// A short, stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Authenticated(_) => "authenticated",
            Self::Anonymous => "anonymous",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::AalRequired(_) => "aal_required",
            // Named by what is missing: the JSON error's `id`, for clients to act on.
            Self::Insufficient(insufficient) => insufficient.unmet.kind(),
            Self::Unavailable(_) => "unavailable",
            Self::CrossOriginRequest => "cross_origin_request",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Authenticated(session) => write!(f, "authenticated as session {}", session.id),
            Self::Anonymous => f.write_str("no credential"),
            Self::Unauthenticated(reason) => write!(f, "unauthenticated: {reason}"),
            Self::AalRequired(_) => {
                f.write_str("a higher authenticator assurance level is required")
            }
            Self::Insufficient(insufficient) => {
                write!(
                    f,
                    "the route's requirement is not met: {}",
                    insufficient.unmet
                )
            }
            Self::Unavailable(reason) => write!(f, "Kratos unavailable: {reason}"),
            Self::CrossOriginRequest => {
                f.write_str("a request from another origin with the session cookie")
            }
        }
    }
}

impl Refusal for Outcome {
    fn status(&self) -> StatusCode {
        Outcome::status(self)
    }

    fn kind(&self) -> &'static str {
        Outcome::kind(self)
    }

    fn reason(&self) -> Cow<'_, str> {
        Outcome::reason(self)
    }

    fn retry_after(&self) -> Option<Duration> {
        Outcome::retry_after(self)
    }

    fn redirect_browser_to(&self) -> Option<&str> {
        Outcome::redirect_browser_to(self)
    }
}

/// Why a credential was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unauthenticated {
    /// The credential was malformed; Kratos was not asked.
    Malformed(MalformedCredential),
    /// Kratos answered 401 (unknown, revoked or expired session, or disabled identity: Kratos
    /// does not tell these apart).
    Rejected,
    /// Kratos answered 200 with a session that is not active.
    Inactive,
    /// The session's `expires_at` has passed.
    Expired,
    /// The session is older than the most the app accepts
    /// ([`KratosLayerBuilder::max_session_age`](crate::authenticate::KratosLayerBuilder::max_session_age), or a
    /// route's [`Requirement::max_session_age`](crate::require::Requirement::max_session_age)),
    /// counted from its `issued_at`: signing in again is the only remedy.
    TooOld,
    /// Kratos, or a proxy in front of it, refused the lookup as too large to read (431): the
    /// credential cannot be checked, so it is not accepted. The layer never sends more than
    /// [`MAX_FORWARDED_COOKIE_LEN`](crate::credentials::MAX_FORWARDED_COOKIE_LEN) of cookies.
    TooLarge,
    /// A tokenized session (a Kratos JWT) was not accepted by the JWT layer (feature `jwt`),
    /// for this reason. Kratos was not asked.
    Token(TokenRejected),
}

/// Why the JWT layer (feature `jwt`) did not accept a tokenized session. Each is a 401; none
/// says more to the caller than its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenRejected {
    /// Not a compact JWS: wrong number of segments, bad base64, a header or claims that are not
    /// JSON objects, or longer than the layer reads.
    Malformed,
    /// An algorithm outside the allow-list (`none` and HMAC always), or one that does not fit
    /// the key's type and curve, or a critical header the layer does not understand.
    Algorithm,
    /// No key in the key set has the token's `kid` (after one refresh of a URL's key set).
    UnknownKey,
    /// The signature does not verify.
    Signature,
    /// Past its `exp` (with the leeway).
    Expired,
    /// Before its `nbf`, or issued (`iat`) in the future (with the leeway).
    NotYetValid,
    /// `iss` is not the configured Kratos public URL.
    Issuer,
    /// The audience does not match: none of `aud` is the configured audience, or the token
    /// has an audience and none is configured.
    Audience,
    /// A claim Kratos always sets is missing or of the wrong type (`sid`, `sub`, `exp`, `iat`).
    MissingClaim,
    /// The header or the claims name a member twice, at any depth (`{"sub":"a","sub":"b"}`).
    /// JSON parsers disagree on which one counts (the first, the last, an error), so a token
    /// that means one thing here could mean another to the next reader: refused, as RFC 7515
    /// §4 and RFC 7519 §4 allow.
    DuplicateMember,
    /// The session (`sid`) or its identity (`sub`) was revoked through this crate after the
    /// token was issued (with a shared cache, through any replica).
    Revoked,
}

impl TokenRejected {
    /// A short, stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::UnknownKey => "unknown_key",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Issuer => "issuer",
            Self::Audience => "audience",
            Self::MissingClaim => "missing_claim",
            Self::DuplicateMember => "duplicate_member",
            Self::Revoked => "revoked",
        }
    }
}

impl fmt::Display for TokenRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "the token is not a well-formed JWT",
            Self::Algorithm => "the token's algorithm is not accepted for its key",
            Self::UnknownKey => "the token's signing key is not known",
            Self::Signature => "the token's signature does not verify",
            Self::Expired => "the token has expired",
            Self::NotYetValid => "the token is not valid yet",
            Self::Issuer => "the token was not issued by the configured Kratos",
            Self::Audience => "the token is not meant for this service",
            Self::MissingClaim => "the token lacks a claim Kratos always sets",
            Self::DuplicateMember => "the token names a member twice",
            Self::Revoked => "the token's session has been revoked",
        })
    }
}

impl fmt::Display for Unauthenticated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "malformed credential ({why})"),
            Self::Rejected => f.write_str("Kratos rejected the credential"),
            Self::Inactive => f.write_str("the session is not active"),
            Self::Expired => f.write_str("the session has expired"),
            Self::TooLarge => f.write_str("the credential is too large for Kratos to check"),
            Self::TooOld => f.write_str("the session is older than the app accepts"),
            Self::Token(why) => write!(f, "tokenized session refused: {why}"),
        }
    }
}

/// Kratos's step-up answer (403 `session_aal2_required`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AalRequired {
    /// Where Kratos wants the browser sent to complete the second factor
    /// (`<kratos>/self-service/login/browser?aal=aal2`).
    pub redirect_browser_to: Option<String>,
}

impl AalRequired {
    /// A step-up answer with the given redirect.
    pub fn new(redirect_browser_to: Option<String>) -> Self {
        Self {
            redirect_browser_to,
        }
    }
}

/// A session that does not meet what a route asks of it: which requirement, and where a
/// browser meets it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Insufficient {
    /// What is missing.
    pub unmet: Unmet,
    /// Kratos's browser login flow that meets it: `aal=aal2` for a second factor,
    /// `refresh=true` for a recent sign-in; `None` for a condition of the app's, which no flow
    /// meets.
    pub redirect_browser_to: Option<String>,
}

/// Which of a route's requirements a session did not meet.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unmet {
    /// A second factor: the session's assurance level is below `aal2`.
    SecondFactor,
    /// A sign-in within this long: the session's last authentication is older.
    RecentSignIn {
        /// The route's window.
        within: Duration,
    },
    /// A condition of the app's, by the name it was given.
    Condition {
        /// The condition's name.
        name: &'static str,
    },
}

impl Unmet {
    /// A short, stable name for logs, metrics and custom rejections.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SecondFactor => "second_factor_required",
            Self::RecentSignIn { .. } => "recent_sign_in_required",
            Self::Condition { .. } => "condition_unmet",
        }
    }
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SecondFactor => f.write_str("a second factor"),
            Self::RecentSignIn { within } => {
                write!(f, "a sign-in within the last {} s", within.as_secs())
            }
            Self::Condition { name } => write!(f, "{name}"),
        }
    }
}

/// Why Kratos could not answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unavailable {
    /// No complete answer within the request timeout.
    Timeout,
    /// The connection failed (refused, reset, TLS, DNS...).
    Transport,
    /// Kratos (or Ory Network) answered 429. The layer then backs off: new lookups are not sent
    /// for a while.
    RateLimited {
        /// How long Kratos asked callers to wait, when it said: Ory Network's
        /// `x-ratelimit-reset` (seconds until its window resets), else `Retry-After` in seconds;
        /// capped at the layer's back-off window, after which it asks Kratos again.
        retry_after: Option<Duration>,
    },
    /// A status that is not part of whoami's contract (5xx, 3xx, an unexpected 4xx).
    Status(StatusCode),
    /// A 200 whose body is not a session, or a body larger than the crate accepts.
    InvalidBody,
    /// The lookup task stopped before it finished (the runtime is shutting down).
    Interrupted,
    /// Kratos was not asked: it rate-limited or kept failing lately, and the layer is leaving it
    /// alone for a while (see [`KratosLayerBuilder::backoff`](crate::authenticate::KratosLayerBuilder::backoff)).
    BackingOff {
        /// How long until the layer asks Kratos again (at least one probe lookup).
        retry_after: Duration,
    },
    /// Kratos was not asked: the configured number of whoami calls were already running and
    /// none finished within the queue timeout (see
    /// [`KratosLayerBuilder::max_concurrent_lookups`](crate::authenticate::KratosLayerBuilder::max_concurrent_lookups)).
    Overloaded,
    /// The JWT layer (feature `jwt`) could not get the keys to decide a token: its key set URL
    /// has not answered with a usable key set yet, or the token names a `kid` the keys had do
    /// not hold and the fetch that would look for it failed, or may not be made yet (a fetch
    /// for unknown `kid`s is made at most once per `JwtLayerBuilder::jwks_min_refetch`). Such a
    /// token may be signed with a key Kratos has just rotated in: never answered as a 401.
    SigningKeys {
        /// How long until the layer may fetch the key set again.
        retry_after: Duration,
    },
}

impl Unavailable {
    /// A short, stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Transport => "transport",
            Self::RateLimited { .. } => "rate_limited",
            Self::Status(_) => "status",
            Self::InvalidBody => "invalid_body",
            Self::Interrupted => "interrupted",
            Self::BackingOff { .. } => "backing_off",
            Self::Overloaded => "overloaded",
            Self::SigningKeys { .. } => "signing_keys",
        }
    }

    /// Whether Kratos was not asked at all: the layer held the call back (backing off, too
    /// many calls in flight).
    pub(crate) fn not_sent(&self) -> bool {
        matches!(self, Self::BackingOff { .. } | Self::Overloaded)
    }

    /// How long callers should wait, when that is known: Kratos's own wait after a 429, what
    /// is left of the layer's back-off window, or of the JWT layer's hold-back between two key
    /// set fetches.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            Self::BackingOff { retry_after } | Self::SigningKeys { retry_after } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out"),
            Self::Transport => f.write_str("connection failed"),
            Self::RateLimited { .. } => f.write_str("rate limited (429)"),
            Self::Status(status) => write!(f, "unexpected status {status}"),
            Self::InvalidBody => f.write_str("answer is not a session"),
            Self::Interrupted => f.write_str("lookup interrupted"),
            Self::BackingOff { .. } => f.write_str("backing off after recent failures"),
            Self::Overloaded => f.write_str("too many lookups in flight"),
            Self::SigningKeys { .. } => f.write_str("the token signing keys could not be had"),
        }
    }
}

/// Put in a request's extensions, next to its [`KratosSession`], when the session was served
/// from an expired cache entry because Kratos could not be asked (stale-if-error, see
/// [`KratosLayerBuilder::stale_if_error`](crate::authenticate::KratosLayerBuilder::stale_if_error)).
///
/// Kratos has not confirmed the session for [`age`](Self::age): a revocation made elsewhere in
/// that time is not reflected. Handlers of sensitive operations (payments, changing credentials)
/// can refuse such requests:
///
/// ```
/// use http::{Request, StatusCode};
/// use tower_kratos::outcome::StaleSession;
///
/// fn check<B>(request: &Request<B>) -> Result<(), StatusCode> {
///     match request.extensions().get::<StaleSession>() {
///         // Not now: ask the client to come back when Kratos can confirm the session.
///         Some(_stale) => Err(StatusCode::SERVICE_UNAVAILABLE),
///         None => Ok(()),
///     }
/// }
/// # assert!(check(&Request::new(())).is_ok());
/// ```
///
/// With axum, extract it as `Option<axum::Extension<StaleSession>>`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StaleSession {
    /// How long ago Kratos last confirmed the session (when that whoami call was sent).
    pub age: Duration,
    /// How long ago the cache entry stopped being fresh (zero if it was evicted before its
    /// time); always less than the configured grace.
    pub stale_for: Duration,
    /// Why Kratos could not be asked this time.
    pub cause: Unavailable,
}
