//! The caller's own sessions on the public API, called with the caller's credential (and only
//! it): list them, revoke one or all but the current one, log an API client out.

use http::{header, StatusCode};
use serde::Deserialize;

use super::{
    exchange::{
        admitted_exchange, failure, with_segments, Answer, Api, MAX_BODY_LEN, MAX_LIST_BODY_LEN,
    },
    page::next_page,
    KratosClient, LifecycleError, Page, SessionList,
};
use crate::{
    credentials::{Credential, CredentialSource, MalformedCredential},
    outcome::Unavailable,
    session::Session,
};

/// Kratos's answer to `DELETE /sessions/{id}` for the caller's own session (Kratos's `session/handler.go`).
const CANNOT_REVOKE_CURRENT: &str = "current session";

impl KratosClient {
    /// `DELETE {public}/sessions/{id}` as the caller: revoke another of the caller's sessions.
    pub(crate) async fn revoke_my_session(
        &self,
        credential: &Credential,
        session_id: &str,
    ) -> Result<(), LifecycleError> {
        let url = self.public_url(&["sessions", session_id]);
        let request = self.inner.http.delete(url);
        let answer = self.as_caller(request, credential, MAX_BODY_LEN).await?;
        // Only Kratos's own 204 says the session was revoked (Kratos's `session/handler.go`).
        match answer.status {
            StatusCode::NO_CONTENT => Ok(()),
            StatusCode::BAD_REQUEST if refuses_current_session(&answer.body) => {
                Err(LifecycleError::CurrentSession)
            }
            _ => Err(failure(Api::Public, &answer)),
        }
    }

    /// `DELETE {public}/sessions` as the caller: revoke all the caller's other sessions.
    pub(crate) async fn revoke_my_other_sessions(
        &self,
        credential: &Credential,
    ) -> Result<u64, LifecycleError> {
        #[derive(Deserialize)]
        struct Count {
            count: u64,
        }
        let request = self.inner.http.delete(self.public_url(&["sessions"]));
        let answer = self.as_caller(request, credential, MAX_BODY_LEN).await?;
        match answer.status {
            StatusCode::OK => serde_json::from_slice::<Count>(&answer.body)
                .map(|count| count.count)
                .map_err(|_| LifecycleError::Unavailable(Unavailable::InvalidBody)),
            _ => Err(failure(Api::Public, &answer)),
        }
    }

    /// `GET {public}/sessions` as the caller: one page of the caller's other active sessions.
    pub(crate) async fn list_my_sessions(
        &self,
        credential: &Credential,
        page: &Page,
    ) -> Result<SessionList, LifecycleError> {
        let mut url = self.public_url(&["sessions"]);
        {
            let mut query = url.query_pairs_mut();
            if let Some(size) = page.size() {
                query.append_pair("page_size", &size.to_string());
            }
            if let Some(token) = page.token() {
                query.append_pair("page_token", token);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let request = self.inner.http.get(url);
        let answer = self
            .as_caller(request, credential, MAX_LIST_BODY_LEN)
            .await?;
        if answer.status != StatusCode::OK {
            return Err(failure(Api::Public, &answer));
        }
        let sessions = serde_json::from_slice::<Vec<Session>>(&answer.body)
            .map_err(|_| LifecycleError::Unavailable(Unavailable::InvalidBody))?;
        let total = answer
            .headers
            .get("x-total-count")
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.trim().parse().ok());
        let next = next_page(&answer.headers, page.size());
        Ok(SessionList {
            sessions,
            total,
            next,
        })
    }

    /// `DELETE {public}/self-service/logout/api` with `{"session_token": …}`.
    pub(crate) async fn logout_api(&self, credential: &Credential) -> Result<(), LifecycleError> {
        if credential.source() == CredentialSource::Cookie {
            return Err(LifecycleError::NotATokenSession);
        }
        let token = std::str::from_utf8(credential.key_material().1)
            .map_err(|_| LifecycleError::Malformed(MalformedCredential::NotText))?;
        let body = serde_json::json!({ "session_token": token }).to_string();
        let inner = &self.inner;
        let request = inner
            .http
            .delete(self.public_url(&["self-service", "logout", "api"]))
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
        let answer = admitted_exchange(
            &inner.self_service_admission,
            request,
            inner.request_timeout,
            MAX_BODY_LEN,
        )
        .await
        .map_err(LifecycleError::Unavailable)?;
        // Only Kratos's own 204 says the token was logged out (Kratos's `selfservice/flow/logout/handler.go`).
        match answer.status {
            StatusCode::NO_CONTENT => Ok(()),
            // "The provided Ory Session Token could not be found, is invalid, or otherwise
            // malformed" (Kratos's `selfservice/flow/logout/handler.go`): to the caller, the same as a 401.
            StatusCode::FORBIDDEN => Err(LifecycleError::Unauthenticated),
            _ => Err(failure(Api::Public, &answer)),
        }
    }

    /// Kratos's browser logout, completed here for the caller's cookie (Kratos's `selfservice/flow/logout/handler.go`): create the
    /// logout flow (`GET /self-service/logout/browser`, which names the session's logout
    /// token), then complete it (`GET /self-service/logout?token=…`), both with the cookie and
    /// `Accept: application/json`, so Kratos answers JSON and 204 rather than redirecting. The
    /// logout URL Kratos names is not followed: it is built on Kratos's own idea of its public
    /// URL, which need not be the one this process reaches it at.
    ///
    /// `Ok` holds the `Set-Cookie` headers of Kratos's 204, the session cookie's clearing
    /// among them.
    pub(crate) async fn logout_browser(
        &self,
        credential: &Credential,
    ) -> Result<Vec<http::HeaderValue>, LifecycleError> {
        #[derive(Deserialize)]
        struct LogoutFlow {
            logout_token: String,
        }
        let flow_url = self.public_url(&["self-service", "logout", "browser"]);
        let answer = self
            .as_caller(self.inner.http.get(flow_url), credential, MAX_BODY_LEN)
            .await?;
        if answer.status != StatusCode::OK {
            return Err(failure(Api::Public, &answer));
        }
        let token = serde_json::from_slice::<LogoutFlow>(&answer.body)
            .ok()
            .map(|flow| flow.logout_token)
            .filter(|token| is_logout_token(token))
            .ok_or(LifecycleError::Unavailable(Unavailable::InvalidBody))?;
        let mut logout_url = self.public_url(&["self-service", "logout"]);
        logout_url.query_pairs_mut().append_pair("token", &token);
        let answer = self
            .as_caller(self.inner.http.get(logout_url), credential, MAX_BODY_LEN)
            .await?;
        // Only Kratos's 204 says the session was revoked (`updateLogoutFlow`).
        match answer.status {
            StatusCode::NO_CONTENT => Ok(answer
                .headers
                .get_all(header::SET_COOKIE)
                .iter()
                .cloned()
                .collect()),
            _ => Err(failure(Api::Public, &answer)),
        }
    }

    fn public_url(&self, segments: &[&str]) -> reqwest::Url {
        with_segments(&self.inner.public_url, segments)
    }

    /// Sends a public API call with the caller's credential (only it) and
    /// `Accept: application/json`, within the request timeout, behind the admission.
    async fn as_caller(
        &self,
        request: reqwest::RequestBuilder,
        credential: &Credential,
        limit: usize,
    ) -> Result<Answer, LifecycleError> {
        // Unreachable for credentials built by this crate (they are validated).
        let (name, value) = credential
            .to_kratos_header()
            .ok_or(LifecycleError::Malformed(
                MalformedCredential::InvalidCharacters,
            ))?;
        let request = request
            .header(name, value)
            .header(header::ACCEPT, "application/json");
        let inner = &self.inner;
        admitted_exchange(
            &inner.self_service_admission,
            request,
            inner.request_timeout,
            limit,
        )
        .await
        .map_err(LifecycleError::Unavailable)
    }
}

/// Whether a logout token from Kratos is one to put in a URL: Kratos's are `ory_lo_` and 32
/// alphanumerics (older ones unprefixed, Kratos's `x/token_prefixes.go`); anything else is not Kratos's
/// answer.
fn is_logout_token(token: &str) -> bool {
    (1..=512).contains(&token.len())
        && token
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

/// Whether a 400 is Kratos's "cannot revoke current session".
fn refuses_current_session(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Envelope {
        error: Message,
    }
    #[derive(Deserialize)]
    struct Message {
        #[serde(default)]
        message: String,
        #[serde(default)]
        reason: String,
    }
    serde_json::from_slice::<Envelope>(body).is_ok_and(|envelope| {
        let Message { message, reason } = envelope.error;
        [message, reason]
            .iter()
            .any(|text| text.to_ascii_lowercase().contains(CANNOT_REVOKE_CURRENT))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_token_like_logout_tokens_are_used() {
        assert!(is_logout_token("ory_lo_abcDEF0123456789abcDEF0123456789"));
        assert!(is_logout_token("MP2YWEMeM8MxjkGKpH4dqOQ4Q4DlSPaj"));
        assert!(!is_logout_token(""));
        assert!(!is_logout_token("a&return_to=https://evil.example"));
        assert!(!is_logout_token(&"a".repeat(513)));
    }

    #[test]
    fn only_kratoss_current_session_400_is_current_session() {
        assert!(refuses_current_session(
            br#"{"error":{"code":400,"status":"Bad Request","message":"cannot revoke current session"}}"#
        ));
        assert!(!refuses_current_session(
            br#"{"error":{"code":400,"message":"invalid UUID length: 3"}}"#
        ));
        assert!(!refuses_current_session(b"current session"));
    }
}
