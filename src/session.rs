//! The Kratos session model: lenient, so that new Kratos fields or enum values never break sign-in.
//!
//! Only [`Session::id`] is required, as in Kratos's OpenAPI spec. Every other field is optional or
//! defaulted, unknown fields are ignored, unknown enum values are kept as `Other(String)`, and a
//! timestamp that does not parse becomes `None` instead of failing the whole body.
//!
//! ```
//! use tower_kratos::session::{Aal, Session};
//!
//! let body = r#"{"id": "65dea6f4-5d15-4e61-9eb7-f30190c0b2e2", "active": true,
//!                "authenticator_assurance_level": "aal9", "something_new": [1, 2]}"#;
//! let session: Session = serde_json::from_str(body).unwrap();
//! assert_eq!(session.authenticator_assurance_level, Some(Aal::Other("aal9".into())));
//! assert!(session.identity.is_none());
//! ```

use std::{
    any::Any,
    fmt,
    ops::Deref,
    sync::{Arc, Weak},
    time::Duration,
};

use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

/// A Kratos session, as `GET /sessions/whoami` returns it.
///
/// Its `Debug` shows every field but [`tokenized`](Self::tokenized), a credential.
#[derive(Clone, Deserialize, Serialize)]
#[non_exhaustive]
pub struct Session {
    /// The session's id (a UUID). The only field Kratos's spec requires.
    pub id: String,
    /// Whether Kratos considers the session active. Absent counts as inactive.
    #[serde(default)]
    pub active: bool,
    /// When the session stops being valid.
    #[serde(default, with = "lenient_time")]
    pub expires_at: Option<OffsetDateTime>,
    /// When the last authentication factor was completed.
    #[serde(default, with = "lenient_time")]
    pub authenticated_at: Option<OffsetDateTime>,
    /// When the session was issued.
    #[serde(default, with = "lenient_time")]
    pub issued_at: Option<OffsetDateTime>,
    /// The assurance level the session reached.
    #[serde(default)]
    pub authenticator_assurance_level: Option<Aal>,
    /// The factors completed, oldest first. Kratos sends `null` when there are none.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub authentication_methods: Vec<AuthenticationMethod>,
    /// The identity the session belongs to. whoami always sends it; admin reads may not.
    #[serde(default)]
    pub identity: Option<Arc<Identity>>,
    /// The devices the session was used from.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub devices: Vec<Device>,
    /// The session as a JWT, when whoami was asked with `tokenize_as`. Whatever accepts the JWT
    /// takes it as the session: keep it as secret as the session token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenized: Option<Box<str>>,
    /// The layer whose cache holds this session, so that a connection opened with it can be
    /// watched (see [`live`](crate::live)). Never serialized or shown.
    #[serde(skip)]
    pub(crate) origin: Origin,
}

/// Where a session came from: a weak handle on the cache of the layer that validated it, set
/// when the cache stores the session. Opaque here, so the session model depends on nothing.
#[derive(Clone, Default)]
pub(crate) struct Origin(Option<Weak<dyn Any + Send + Sync>>);

impl Origin {
    pub(crate) fn new(cache: Weak<dyn Any + Send + Sync>) -> Self {
        Self(Some(cache))
    }

    /// The cache, while it lives.
    pub(crate) fn upgrade(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        self.0.as_ref().and_then(Weak::upgrade)
    }

    /// Whether this is that cache's handle.
    pub(crate) fn is(&self, cache: &Weak<dyn Any + Send + Sync>) -> bool {
        self.0.as_ref().is_some_and(|own| Weak::ptr_eq(own, cache))
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured, so a new field cannot be left out (or shown) without a decision here.
        let Self {
            id,
            active,
            expires_at,
            authenticated_at,
            issued_at,
            authenticator_assurance_level,
            authentication_methods,
            identity,
            devices,
            tokenized,
            origin: _,
        } = self;
        f.debug_struct("Session")
            .field("id", id)
            .field("active", active)
            .field("expires_at", expires_at)
            .field("authenticated_at", authenticated_at)
            .field("issued_at", issued_at)
            .field(
                "authenticator_assurance_level",
                authenticator_assurance_level,
            )
            .field("authentication_methods", authentication_methods)
            .field("identity", identity)
            .field("devices", devices)
            .field("tokenized", &tokenized.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl Session {
    /// The session as a JWT, when the layer asks whoami with
    /// [`tokenize_as`](crate::authenticate::KratosLayerBuilder::tokenize_as): to forward to internal services
    /// (`Authorization: Bearer`), which verify it with [`JwtLayer`](crate::jwt::JwtLayer) (feature
    /// `jwt`). A cached session never outlives its JWT's `exp` less
    /// [`tokenized_margin`](crate::authenticate::KratosLayerBuilder::tokenized_margin).
    pub fn tokenized(&self) -> Option<&str> {
        self.tokenized.as_deref()
    }

    /// The `exp` of the tokenized session's JWT, read without checking its signature: it came
    /// from Kratos with the session. `None` without a JWT, or when its claims are unreadable.
    pub(crate) fn tokenized_expires_at(&self) -> Option<OffsetDateTime> {
        use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
        #[derive(Deserialize)]
        struct Expiry {
            exp: serde_json::Value,
        }
        let payload = self.tokenized.as_deref()?.split('.').nth(1)?;
        let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let Expiry { exp } = serde_json::from_slice(&bytes).ok()?;
        numeric_date(&exp)
    }

    /// The identity's id, when the identity was sent.
    pub fn identity_id(&self) -> Option<&str> {
        self.identity.as_ref().map(|identity| identity.id.as_str())
    }

    /// When the session began: its `issued_at`, else (legacy data without one) when its first
    /// factor was completed. Extending a session or re-authenticating in it moves neither, so
    /// an age counted from here bounds how long one sign-in lasts.
    pub fn began_at(&self) -> Option<OffsetDateTime> {
        self.issued_at.or_else(|| {
            self.authentication_methods
                .first()
                .and_then(|method| method.completed_at)
        })
    }

    /// When the session reaches `max` of age, counted from [`began_at`](Self::began_at);
    /// `None` when its start is unknown.
    pub(crate) fn reaches_age_at(&self, max: Duration) -> Option<OffsetDateTime> {
        let max = time::Duration::try_from(max).unwrap_or(time::Duration::MAX);
        self.began_at().map(|began| began.saturating_add(max))
    }

    /// Whether the session began less than `max` before `now` (`false` when that cannot be
    /// told).
    pub(crate) fn younger_than(&self, max: Duration, now: OffsetDateTime) -> bool {
        self.reaches_age_at(max).is_some_and(|cap| now < cap)
    }

    /// The bytes this session holds on the heap, its `Arc` included: what it costs the cache
    /// to keep it. Counted from the lengths the parser allocated, not estimated.
    pub(crate) fn heap_bytes(&self) -> usize {
        let Self {
            id,
            active: _,
            expires_at: _,
            authenticated_at: _,
            issued_at: _,
            authenticator_assurance_level,
            authentication_methods,
            identity,
            devices,
            tokenized,
            origin: _,
        } = self;
        ARC_HEADER
            + size_of::<Self>()
            + id.capacity()
            + aal_bytes(authenticator_assurance_level.as_ref())
            + list_bytes(authentication_methods, |method| {
                optional(&method.method)
                    + aal_bytes(method.aal.as_ref())
                    + optional(&method.provider)
                    + optional(&method.organization)
            })
            + identity.as_deref().map_or(0, Identity::heap_bytes)
            + list_bytes(devices, |device| {
                optional(&device.id)
                    + optional(&device.ip_address)
                    + optional(&device.user_agent)
                    + optional(&device.location)
            })
            + optional(tokenized)
    }

    /// Whether the session is active and not past `expires_at` at `now`.
    ///
    /// A session without `expires_at` is judged by `active` alone.
    pub fn is_valid_at(&self, now: OffsetDateTime) -> bool {
        self.active && self.expires_at.is_none_or(|expires_at| expires_at > now)
    }
}

/// An `Arc`'s two counts, ahead of its value.
const ARC_HEADER: usize = 2 * size_of::<usize>();

fn optional(text: &Option<Box<str>>) -> usize {
    text.as_ref().map_or(0, |text| text.len())
}

fn aal_bytes(aal: Option<&Aal>) -> usize {
    match aal {
        Some(Aal::Other(other)) => other.capacity(),
        _ => 0,
    }
}

/// A list's buffer, and what each element holds beyond it.
fn list_bytes<T>(list: &Vec<T>, each: impl Fn(&T) -> usize) -> usize {
    list.capacity() * size_of::<T>() + list.iter().map(each).sum::<usize>()
}

/// An authenticator assurance level. Unknown values are kept, not rejected.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Aal {
    /// No factor completed.
    Aal0,
    /// One factor.
    Aal1,
    /// Two factors.
    Aal2,
    /// Three factors.
    Aal3,
    /// A value this crate does not know, including `""` from legacy data.
    Other(String),
}

impl Aal {
    /// The value as Kratos spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Aal0 => "aal0",
            Self::Aal1 => "aal1",
            Self::Aal2 => "aal2",
            Self::Aal3 => "aal3",
            Self::Other(other) => other,
        }
    }
}

impl fmt::Display for Aal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Aal {
    fn from(value: &str) -> Self {
        match value {
            "aal0" => Self::Aal0,
            "aal1" => Self::Aal1,
            "aal2" => Self::Aal2,
            "aal3" => Self::Aal3,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl<'de> Deserialize<'de> for Aal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        Ok(Self::from(value.as_str()))
    }
}

impl Serialize for Aal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One completed authentication factor.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[non_exhaustive]
pub struct AuthenticationMethod {
    /// The method, e.g. `password`, `oidc`, `totp`; an open set (legacy data has `v0.6_legacy_session`).
    #[serde(default)]
    pub method: Option<Box<str>>,
    /// The level this factor counts for. Legacy data has `""`.
    #[serde(default)]
    pub aal: Option<Aal>,
    /// When the factor was completed. Legacy data has `0001-01-01T00:00:00Z`.
    #[serde(default, with = "lenient_time")]
    pub completed_at: Option<OffsetDateTime>,
    /// The OIDC or SAML provider, for those methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Box<str>>,
    /// The organization the factor was completed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<Box<str>>,
}

/// The identity a session belongs to.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[non_exhaustive]
pub struct Identity {
    /// The identity's id (a UUID).
    pub id: String,
    /// An id from an external system, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<Box<str>>,
    /// The identity schema's id.
    #[serde(default)]
    pub schema_id: Option<Box<str>>,
    /// Where the identity schema can be fetched.
    #[serde(default)]
    pub schema_url: Option<Box<str>>,
    /// `active` or `inactive`; an open set.
    #[serde(default)]
    pub state: Option<Box<str>>,
    /// The identity's traits, as the schema defines them, kept as their JSON text: read them as
    /// your own type with [`Identity::traits_as`] (or the `KratosTraits<T>` extractor), or as a
    /// [`serde_json::Value`] with [`RawJson::to_value`].
    #[serde(default)]
    pub traits: RawJson,
    /// Public metadata, as its JSON text; `null` when unset.
    #[serde(default)]
    pub metadata_public: RawJson,
    /// Addresses that can be verified.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub verifiable_addresses: Vec<VerifiableAddress>,
    /// Addresses usable for account recovery.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub recovery_addresses: Vec<RecoveryAddress>,
    /// The organization the identity belongs to.
    #[serde(default)]
    pub organization_id: Option<Box<str>>,
    /// When the identity was created.
    #[serde(default, with = "lenient_time")]
    pub created_at: Option<OffsetDateTime>,
    /// When the identity was last updated.
    #[serde(default, with = "lenient_time")]
    pub updated_at: Option<OffsetDateTime>,
}

impl Identity {
    /// The traits deserialized into your own type.
    ///
    /// # Errors
    /// When the traits do not match `T`. The error may quote a trait's value: it is the
    /// identity's personal data, so keep it out of responses and logs.
    ///
    /// ```
    /// # use tower_kratos::session::Session;
    /// #[derive(serde::Deserialize)]
    /// struct Traits { email: String }
    ///
    /// let session: Session = serde_json::from_str(
    ///     r#"{"id": "s", "identity": {"id": "i", "traits": {"email": "ada@example.org"}}}"#,
    /// ).unwrap();
    /// let traits: Traits = session.identity.unwrap().traits_as().unwrap();
    /// assert_eq!(traits.email, "ada@example.org");
    /// ```
    pub fn traits_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        self.traits.parse()
    }

    /// The bytes this identity holds on the heap, its `Arc` included.
    fn heap_bytes(&self) -> usize {
        let Self {
            id,
            external_id,
            schema_id,
            schema_url,
            state,
            traits,
            metadata_public,
            verifiable_addresses,
            recovery_addresses,
            organization_id,
            created_at: _,
            updated_at: _,
        } = self;
        ARC_HEADER
            + size_of::<Self>()
            + id.capacity()
            + optional(external_id)
            + optional(schema_id)
            + optional(schema_url)
            + optional(state)
            + traits.get().len()
            + metadata_public.get().len()
            + list_bytes(verifiable_addresses, |address| {
                optional(&address.id)
                    + optional(&address.value)
                    + optional(&address.via)
                    + optional(&address.status)
            })
            + list_bytes(recovery_addresses, |address| {
                optional(&address.id) + optional(&address.value) + optional(&address.via)
            })
            + optional(organization_id)
    }
}

/// A JSON value kept as its compact text, for the parts of a session whose shape is the
/// deployment's (an identity's traits and metadata): one allocation the size of the text,
/// where a parsed [`serde_json::Value`] takes ten times that in maps and strings. Read it as
/// your own type with [`parse`](Self::parse) (what [`Identity::traits_as`] does), or as a
/// `Value` with [`to_value`](Self::to_value).
///
/// ```
/// use tower_kratos::session::RawJson;
///
/// let traits: RawJson = serde_json::from_str(r#"{ "email": "ada@example.org" }"#).unwrap();
/// assert_eq!(traits.get(), r#"{"email":"ada@example.org"}"#);
/// assert_eq!(traits.to_value()["email"], "ada@example.org");
///
/// #[derive(serde::Deserialize)]
/// struct Traits { email: String }
/// assert_eq!(traits.parse::<Traits>().unwrap().email, "ada@example.org");
/// ```
#[derive(Clone)]
pub struct RawJson(Box<serde_json::value::RawValue>);

impl RawJson {
    /// The JSON text, compact.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The value read as `T`.
    ///
    /// # Errors
    /// When the JSON does not match `T`. The error may quote a value from the JSON.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// The value as a [`serde_json::Value`] (parsed on each call).
    pub fn to_value(&self) -> serde_json::Value {
        // The text was written from a `Value`: it parses back.
        serde_json::from_str(self.0.get()).unwrap_or_default()
    }

    /// Whether the value is JSON's `null`.
    pub fn is_null(&self) -> bool {
        self.0.get() == "null"
    }

    /// The text of `value`, compact.
    fn of(value: &serde_json::Value) -> Self {
        // Writing a `Value` fails only for a map with non-string keys, which a `Value` cannot
        // hold.
        serde_json::value::to_raw_value(value).map_or_else(|_| Self::default(), Self)
    }
}

impl Default for RawJson {
    /// `null`.
    fn default() -> Self {
        Self::of(&serde_json::Value::Null)
    }
}

impl From<serde_json::Value> for RawJson {
    fn from(value: serde_json::Value) -> Self {
        Self::of(&value)
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for RawJson {}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Through a `Value`, so the text kept is compact whatever the body's layout, and any
        // self-describing format can carry it.
        serde_json::Value::deserialize(deserializer).map(|value| Self::of(&value))
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// An address that can be verified (email or phone).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[non_exhaustive]
pub struct VerifiableAddress {
    /// The address's id.
    #[serde(default)]
    pub id: Option<Box<str>>,
    /// The address itself.
    #[serde(default)]
    pub value: Option<Box<str>>,
    /// Whether it was verified.
    #[serde(default)]
    pub verified: bool,
    /// `email` or `sms`; an open set.
    #[serde(default)]
    pub via: Option<Box<str>>,
    /// `pending`, `sent` or `completed`; an open set.
    #[serde(default)]
    pub status: Option<Box<str>>,
    /// When it was verified.
    #[serde(default, with = "lenient_time")]
    pub verified_at: Option<OffsetDateTime>,
}

/// An address usable for account recovery.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[non_exhaustive]
pub struct RecoveryAddress {
    /// The address's id.
    #[serde(default)]
    pub id: Option<Box<str>>,
    /// The address itself.
    #[serde(default)]
    pub value: Option<Box<str>>,
    /// `email` or `sms`; an open set.
    #[serde(default)]
    pub via: Option<Box<str>>,
}

/// A device the session was used from.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[non_exhaustive]
pub struct Device {
    /// The device's id.
    #[serde(default)]
    pub id: Option<Box<str>>,
    /// The IP address seen.
    #[serde(default)]
    pub ip_address: Option<Box<str>>,
    /// The user agent seen.
    #[serde(default)]
    pub user_agent: Option<Box<str>>,
    /// A coarse location, when Kratos had one.
    #[serde(default)]
    pub location: Option<Box<str>>,
}

/// A validated session, shared: cloning it clones an [`Arc`], never the session body.
///
/// The layer puts this in the request's extensions when Kratos accepted the caller's credential.
/// With the `axum` feature it is also an extractor.
#[derive(Clone, Debug)]
pub struct KratosSession(Arc<Session>);

impl KratosSession {
    /// Wraps a session.
    pub fn new(session: Arc<Session>) -> Self {
        Self(session)
    }

    /// The shared session.
    pub fn shared(&self) -> &Arc<Session> {
        &self.0
    }

    /// This session, from `origin` (copied only if shared).
    pub(crate) fn with_origin(self, origin: Origin) -> Self {
        let mut session = self.0;
        Arc::make_mut(&mut session).origin = origin;
        Self(session)
    }
}

impl Deref for KratosSession {
    type Target = Session;

    fn deref(&self) -> &Session {
        &self.0
    }
}

/// The identity of the request's session, shared (no copy of the traits per request).
#[derive(Clone, Debug)]
pub struct KratosIdentity(Arc<Identity>);

impl KratosIdentity {
    /// The identity of `session`, when it has one.
    pub fn of(session: &KratosSession) -> Option<Self> {
        session.identity.clone().map(Self)
    }

    /// The shared identity.
    pub fn shared(&self) -> &Arc<Identity> {
        &self.0
    }
}

impl Deref for KratosIdentity {
    type Target = Identity;

    fn deref(&self) -> &Identity {
        &self.0
    }
}

fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let mut list = Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default();
    // serde grows a Vec by doubling; a session lives in the cache for minutes, so give back the
    // spare capacity (about 1.2 KB per docs-example session, measured by benches/memory.rs).
    list.shrink_to_fit();
    Ok(list)
}

/// RFC 3339 timestamps that never fail the body: `null`, a missing key, a non-string or an
/// unparseable string all become `None`.
mod lenient_time {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::{format_description::well_known::Rfc3339, OffsetDateTime};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(value
            .as_str()
            .and_then(|text| OffsetDateTime::parse(text, &Rfc3339).ok()))
    }

    pub(super) fn serialize<S: Serializer>(
        value: &Option<OffsetDateTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value.and_then(|at| at.format(&Rfc3339).ok()) {
            Some(text) => serializer.serialize_str(&text),
            None => serializer.serialize_none(),
        }
    }
}
/// A JWT's NumericDate (`exp`, `iat`, `nbf`): seconds since the epoch, possibly fractional.
/// Read here for the cache's edge and by the JWT layer's checks alike.
pub(crate) fn numeric_date(value: &serde_json::Value) -> Option<OffsetDateTime> {
    let seconds = value.as_f64()?;
    if !seconds.is_finite() {
        return None;
    }
    // Whole seconds are what Kratos writes; a fraction is dropped, towards the past.
    #[allow(clippy::cast_possible_truncation)]
    let whole = seconds.floor() as i64;
    OffsetDateTime::from_unix_timestamp(whole).ok()
}
