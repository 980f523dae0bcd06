//! The admin API: extending a session, disabling one, deleting an identity's sessions. Called
//! with this process's API key (Ory Network) or none (self-hosted Kratos's admin port).

use std::{fmt, time::Duration};

use http::{header, HeaderValue, StatusCode};
use reqwest::Url;

use super::{
    exchange::{admitted_exchange, failure, with_segments, Answer, Api, MAX_BODY_LEN},
    KratosClient, LifecycleError,
};
use crate::{outcome::Unavailable, session::Session};

/// The admin API: its base URL, its credential and its deadline.
pub(crate) struct AdminApi {
    base: Url,
    /// `Bearer <API key>` (Ory Network), marked sensitive; `None` for self-hosted Kratos, whose
    /// admin port has no authentication of its own.
    authorization: Option<HeaderValue>,
    timeout: Duration,
}

impl AdminApi {
    /// `authorization` must already be a valid, sensitive `Bearer …` header value.
    pub(crate) fn new(base: Url, authorization: Option<HeaderValue>, timeout: Duration) -> Self {
        Self {
            base,
            authorization,
            timeout,
        }
    }

    /// The deadline of one admin call.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminApi")
            .field("base", &self.base.as_str())
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "[redacted]"),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The most ids one `POST /admin/sessions` takes (Kratos's `manageSessions`).
pub(crate) const MAX_BULK_IDS: usize = 500;

/// What `POST /admin/sessions` answered: how many sessions it disabled or deleted, and, for
/// `"*"`, whether more are left for the same request to take.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct BulkAnswer {
    pub(crate) processed: u64,
    #[serde(default)]
    pub(crate) more: bool,
}

/// What `PATCH /admin/sessions/{id}/extend` answered (Kratos's `session/handler.go` `adminSessionExtend`: clients must accept both).
#[derive(Debug)]
pub(crate) enum ExtendAnswer {
    /// 200 with the session: stock self-hosted Kratos (`faster_session_extend` off).
    Session(Box<Session>),
    /// 204: Ory Network, or Kratos with `faster_session_extend` on.
    NoContent,
}

impl KratosClient {
    /// `PATCH {admin}/admin/sessions/{id}/extend`. `session_id` must be canonical
    /// ([`canonical_id`](super::canonical_id)).
    pub(crate) async fn extend_session(
        &self,
        session_id: &str,
    ) -> Result<ExtendAnswer, LifecycleError> {
        let answer = self
            .admin_call(
                reqwest::Method::PATCH,
                &["admin", "sessions", session_id, "extend"],
            )
            .await?;
        match answer.status {
            StatusCode::OK => serde_json::from_slice::<Session>(&answer.body)
                .map(|session| ExtendAnswer::Session(Box::new(session)))
                .map_err(|_| LifecycleError::Unavailable(Unavailable::InvalidBody)),
            StatusCode::NO_CONTENT => Ok(ExtendAnswer::NoContent),
            StatusCode::NOT_FOUND => Err(LifecycleError::NotFound),
            _ => Err(failure(Api::Admin, &answer)),
        }
    }

    /// `DELETE {admin}/admin/sessions/{id}`: deactivate one session.
    pub(crate) async fn disable_session(&self, session_id: &str) -> Result<(), LifecycleError> {
        self.admin_delete(&["admin", "sessions", session_id]).await
    }

    /// `DELETE {admin}/admin/identities/{id}/sessions`: delete every session of an identity.
    pub(crate) async fn delete_identity_sessions(
        &self,
        identity_id: &str,
    ) -> Result<(), LifecycleError> {
        self.admin_delete(&["admin", "identities", identity_id, "sessions"])
            .await
    }

    /// `POST {admin}/admin/sessions`: disable or delete the sessions of these identities, or
    /// these sessions (at most [`MAX_BULK_IDS`], canonical, or `["*"]` alone for identities).
    /// Kratos answers 200 `{"processed": n, "more": bool}`; anything else is a failure.
    pub(crate) async fn manage_sessions(
        &self,
        action: &'static str,
        field: &'static str,
        ids: &[&str],
    ) -> Result<BulkAnswer, LifecycleError> {
        let body = serde_json::json!({ "action": action, field: ids });
        let answer = self
            .admin_call_with(reqwest::Method::POST, &["admin", "sessions"], Some(body))
            .await?;
        match answer.status {
            StatusCode::OK => serde_json::from_slice::<BulkAnswer>(&answer.body)
                .map_err(|_| LifecycleError::Unavailable(Unavailable::InvalidBody)),
            _ => Err(failure(Api::Admin, &answer)),
        }
    }

    /// An admin `DELETE`: 204 is done, 404 is "no such session or identity" (Kratos's `session/handler.go`),
    /// anything else a failure. A 200 is not Kratos's answer (an error page from a proxy, say):
    /// nothing says the session was revoked, so it is not reported as done.
    async fn admin_delete(&self, path: &[&str]) -> Result<(), LifecycleError> {
        let answer = self.admin_call(reqwest::Method::DELETE, path).await?;
        match answer.status {
            StatusCode::NO_CONTENT => Ok(()),
            StatusCode::NOT_FOUND => Err(LifecycleError::NotFound),
            _ => Err(failure(Api::Admin, &answer)),
        }
    }

    /// One admin call with the API key (only here: never to the public API), within the admin
    /// deadline, behind the admin API's admission.
    async fn admin_call(
        &self,
        method: reqwest::Method,
        segments: &[&str],
    ) -> Result<Answer, LifecycleError> {
        self.admin_call_with(method, segments, None).await
    }

    /// [`admin_call`](Self::admin_call) with a JSON body.
    async fn admin_call_with(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        body: Option<serde_json::Value>,
    ) -> Result<Answer, LifecycleError> {
        let admin = self.admin().ok_or(LifecycleError::AdminNotConfigured)?;
        let mut request = self
            .inner
            .http
            .request(method, with_segments(&admin.base, segments))
            .header(header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        if let Some(authorization) = &admin.authorization {
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        admitted_exchange(
            &self.inner.admin_admission,
            request,
            admin.timeout,
            MAX_BODY_LEN,
        )
        .await
        .map_err(LifecycleError::Unavailable)
    }
}
