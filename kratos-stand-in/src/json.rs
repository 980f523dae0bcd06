//! The JSON Kratos writes: sessions, identities and herodot error envelopes.
//!
//! Field order and presence follow Kratos's Go structs (see the real payloads in
//! `tests/fixtures/`): times are RFC 3339 in UTC with up to nanoseconds and `Z`, `identity` is
//! `null` when not expanded, `devices` is always an array, empty address lists are omitted.

use http::StatusCode;
use serde::Serialize;
use time::OffsetDateTime;

use super::store::{AuthMethod, Device, Identity, RecoveryAddress, Session, VerifiableAddress};

/// How much of a session to write.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Expand {
    pub(crate) identity: Option<IdentityView>,
    pub(crate) devices: bool,
}

/// Which identity serialisation: self-service (no `metadata_admin`) or admin (with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IdentityView {
    Public,
    Admin,
}

#[derive(Serialize)]
struct SessionJson<'a> {
    id: &'a str,
    active: bool,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    authenticated_at: OffsetDateTime,
    authenticator_assurance_level: &'static str,
    authentication_methods: &'a [AuthMethod],
    #[serde(with = "time::serde::rfc3339")]
    issued_at: OffsetDateTime,
    identity: Option<IdentityJson<'a>>,
    devices: &'a [Device],
}

#[derive(Serialize)]
struct IdentityJson<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_id: Option<&'a str>,
    schema_id: &'static str,
    schema_url: String,
    state: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    state_changed_at: OffsetDateTime,
    traits: &'a serde_json::Value,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    verifiable_addresses: &'a [VerifiableAddress],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    recovery_addresses: &'a [RecoveryAddress],
    metadata_public: Option<()>,
    /// `Some(None)` writes `"metadata_admin": null` (admin view); `None` leaves the key out.
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata_admin: Option<Option<()>>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    organization_id: Option<()>,
}

/// A session as Kratos serialises it. `active` is the computed `IsActive()`, as in Kratos's
/// `MarshalJSON`, so an expired session says `false`.
pub(crate) fn session<'a>(
    session: &'a Session,
    identity: Option<&'a Identity>,
    active: bool,
    expand: Expand,
    public_url: &str,
) -> impl Serialize + 'a {
    SessionJson {
        id: &session.id,
        active,
        expires_at: session.expires_at,
        authenticated_at: session.authenticated_at,
        authenticator_assurance_level: session.aal.as_str(),
        authentication_methods: &session.methods,
        issued_at: session.issued_at,
        identity: expand
            .identity
            .zip(identity)
            .map(|(view, identity)| IdentityJson {
                id: &identity.id,
                external_id: identity.external_id.as_deref(),
                schema_id: "default",
                // base64url("default"), as Kratos builds schema URLs.
                schema_url: format!("{public_url}/schemas/ZGVmYXVsdA"),
                state: if identity.active {
                    "active"
                } else {
                    "inactive"
                },
                state_changed_at: identity.state_changed_at,
                traits: &identity.traits,
                verifiable_addresses: &identity.verifiable_addresses,
                recovery_addresses: &identity.recovery_addresses,
                metadata_public: None,
                metadata_admin: (view == IdentityView::Admin).then_some(None),
                created_at: identity.created_at,
                updated_at: identity.updated_at,
                organization_id: None,
            }),
        devices: if expand.devices {
            &session.devices
        } else {
            &[]
        },
    }
}

/// whoami's session with `tokenize_as`: the session's fields, then `tokenized` (the last field
/// Kratos's `Session` struct writes).
#[derive(Serialize)]
pub(crate) struct TokenizedSession<'a, S> {
    #[serde(flatten)]
    pub(crate) session: S,
    pub(crate) tokenized: &'a str,
}

/// A herodot error: `{"error":{id?,code,status,request?,reason?,details?,message}}`, plus the
/// top-level `redirect_browser_to` that Kratos's AAL error adds.
#[derive(Clone, Debug)]
pub(crate) struct KratosError {
    pub(crate) status: StatusCode,
    pub(crate) id: Option<&'static str>,
    pub(crate) reason: Option<String>,
    pub(crate) message: String,
    pub(crate) redirect_browser_to: Option<String>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: ErrorJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redirect_browser_to: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    code: u16,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details<'a>>,
    message: &'a str,
}

#[derive(Serialize)]
struct Details<'a> {
    redirect_browser_to: &'a str,
}

impl KratosError {
    /// The herodot default error for `status` (its stock message, no reason).
    pub(crate) fn new(status: StatusCode) -> Self {
        let message = match status.as_u16() {
            400 => "The request was malformed or contained invalid parameters",
            401 => "The request could not be authorized",
            403 => "The requested action was forbidden",
            404 => "The requested resource could not be found",
            409 => "The resource could not be created due to a conflict",
            415 => "The request is using an unknown content type",
            500 => "An internal server error occurred, please contact the system administrator",
            _ => status.canonical_reason().unwrap_or("Unknown error"),
        };
        Self {
            status,
            id: None,
            reason: None,
            message: message.to_owned(),
            redirect_browser_to: None,
        }
    }

    pub(crate) fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub(crate) fn message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// Kratos's "step-up needed" error (`NewErrAALNotSatisfied`).
    pub(crate) fn aal2_required(public_url: &str) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            id: Some("session_aal2_required"),
            reason: Some(
                "An active session was found but it does not fulfill the requested Authenticator \
                 Assurance Level. Please verify yourself with a second factor to resolve this issue."
                    .to_owned(),
            ),
            message: "Session does not fulfill the requested Authenticator Assurance Level"
                .to_owned(),
            redirect_browser_to: Some(format!(
                "{public_url}/self-service/login/browser?aal=aal2"
            )),
        }
    }

    /// The 400 for a `tokenize_as` naming no template (`driver/config/config.go`
    /// `TokenizeTemplate`).
    pub(crate) fn unknown_tokenizer_template(name: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST)
            .reason(format!("Unable to find tokenizer template \"{name}\"."))
    }

    /// The body; `request_id` is the request's `X-Request-ID`, which herodot copies in.
    pub(crate) fn body(&self, request_id: Option<&str>) -> Vec<u8> {
        let redirect = self.redirect_browser_to.as_deref();
        let envelope = Envelope {
            error: ErrorJson {
                id: self.id,
                code: self.status.as_u16(),
                status: self.status.canonical_reason().unwrap_or(""),
                request: request_id,
                reason: self.reason.as_deref(),
                details: redirect.map(|to| Details {
                    redirect_browser_to: to,
                }),
                message: &self.message,
            },
            redirect_browser_to: redirect,
        };
        // Only strings and integers: serialising cannot fail, but never panic over it.
        serde_json::to_vec(&envelope).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_body_is_byte_exact() {
        let err = KratosError::new(StatusCode::UNAUTHORIZED)
            .reason("No valid session credentials found in the request.");
        assert_eq!(
            String::from_utf8(err.body(None)).expect("utf-8"),
            r#"{"error":{"code":401,"status":"Unauthorized","reason":"No valid session credentials found in the request.","message":"The request could not be authorized"}}"#
        );
        assert_eq!(
            String::from_utf8(err.body(Some("rid"))).expect("utf-8"),
            r#"{"error":{"code":401,"status":"Unauthorized","request":"rid","reason":"No valid session credentials found in the request.","message":"The request could not be authorized"}}"#
        );
    }

    #[test]
    fn times_are_rfc3339_utc_with_trimmed_nanoseconds() {
        #[derive(Serialize)]
        struct T {
            #[serde(with = "time::serde::rfc3339")]
            t: OffsetDateTime,
        }
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_672_494_630_427_292_000).expect("t");
        let json = serde_json::to_string(&T { t }).expect("json");
        assert_eq!(json, r#"{"t":"2022-12-31T13:50:30.427292Z"}"#);
    }
}
