//! `POST /admin/sessions` (Kratos's `manageSessions`): disable or delete sessions in bulk, by
//! identity, by session, or all of them (`"identities": ["*"]`) in batches.

use std::collections::HashSet;

use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::ids;
use super::json::KratosError;
use super::reply::{json_reply, Reply};
use super::shared::Shared;
use super::store::Selection;

/// The most explicit ids one call accepts.
const MAX_IDS: usize = 500;
/// Kratos's wildcard batch: the most rows one `"identities": ["*"]` call processes.
pub(crate) const DEFAULT_BATCH_SIZE: usize = 5_000;
/// `"identities": ["*"]`: every session of every identity.
const WILDCARD: &str = "*";

/// The request body. Go decodes `null` and a missing array alike, and the handler tells an
/// empty array from neither: all three are `None` or empty here.
#[derive(Deserialize)]
struct Body {
    action: Option<String>,
    identities: Option<Vec<String>>,
    sessions: Option<Vec<String>>,
}

/// What a call does to the sessions it selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// `active = false`, rows kept.
    Disable,
    /// Rows removed.
    Delete,
}

/// A valid request.
#[derive(Debug, PartialEq, Eq)]
struct Command {
    action: Action,
    selection: Selection,
}

/// The 200 body.
#[derive(Serialize)]
struct Outcome {
    processed: usize,
    more: bool,
}

/// Answers `POST /admin/sessions`: 200 `{"processed":n,"more":bool}`, or 400 for a body that
/// is not a valid request. A wildcard call processes at most `batch_size` sessions and says
/// `more` when it processed that many.
pub(crate) fn manage_sessions(shared: &Shared, body: &Bytes) -> Result<Reply, KratosError> {
    let command = parse(body)?;
    // A batch of none would never drain anything.
    let batch_size = shared.knobs().bulk_batch_size.max(1);
    let wildcard = command.selection == Selection::All;
    let limit = if wildcard { batch_size } else { usize::MAX };
    let processed = {
        let mut store = shared.store();
        match command.action {
            Action::Disable => store.disable_selected(&command.selection, limit),
            Action::Delete => store.delete_selected(&command.selection, limit),
        }
    };
    let outcome = Outcome {
        processed,
        more: wildcard && processed >= batch_size,
    };
    let body = serde_json::to_vec(&outcome)
        .map_err(|_| KratosError::new(StatusCode::INTERNAL_SERVER_ERROR))?;
    Ok(json_reply(StatusCode::OK, body))
}

/// Checks the body as Kratos does: a known action, exactly one non-empty id list of at most
/// [`MAX_IDS`] UUIDs, the wildcard alone and only in `identities`.
fn parse(body: &[u8]) -> Result<Command, KratosError> {
    let body: Body =
        serde_json::from_slice(body).map_err(|_| bad("Unable to decode JSON payload."))?;
    let action = match body.action.as_deref() {
        Some("disable") => Action::Disable,
        Some("delete") => Action::Delete,
        _ => return Err(bad(r#"The "action" must be "disable" or "delete"."#)),
    };
    let identities = body.identities.unwrap_or_default();
    let sessions = body.sessions.unwrap_or_default();
    let selection = match (identities.is_empty(), sessions.is_empty()) {
        (false, true) if identities.iter().any(|id| id == WILDCARD) => {
            if identities.len() > 1 {
                return Err(bad(
                    r#"The wildcard "*" must be the only entry of "identities"."#,
                ));
            }
            Selection::All
        }
        (false, true) => Selection::Identities(uuids("identities", &identities)?),
        (true, false) => {
            if sessions.iter().any(|id| id == WILDCARD) {
                return Err(bad(
                    r#"The wildcard "*" is not accepted in "sessions"; use "identities": ["*"]."#,
                ));
            }
            Selection::Sessions(uuids("sessions", &sessions)?)
        }
        _ => {
            return Err(bad(
                r#"Exactly one of "identities" or "sessions" must be a non-empty list."#,
            ))
        }
    };
    Ok(Command { action, selection })
}

/// The canonical UUIDs of an id list; 400 past [`MAX_IDS`] entries or for one that is not a
/// UUID.
fn uuids(field: &str, raw: &[String]) -> Result<HashSet<String>, KratosError> {
    if raw.len() > MAX_IDS {
        return Err(bad(format!(
            r#"At most {MAX_IDS} IDs are accepted in "{field}", got {}."#,
            raw.len()
        )));
    }
    raw.iter()
        .map(|id| {
            ids::parse_uuid(id)
                .map_err(|message| bad(format!(r#"Invalid ID in "{field}": {message}"#)))
        })
        .collect()
}

fn bad(reason: impl Into<String>) -> KratosError {
    KratosError::new(StatusCode::BAD_REQUEST).reason(reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Endpoint, Fault, KratosStandIn, TestSession};
    use serde_json::{json, Value};

    const A: &str = "6ba7b810-9dad-41d1-80b4-00c04fd430c8";

    fn reason(body: Value) -> String {
        let bytes = serde_json::to_vec(&body).unwrap();
        let err = parse(&bytes).expect_err("refused");
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        err.reason.unwrap()
    }

    #[test]
    fn accepts_each_shape() {
        let set = |ids: &[&str]| ids.iter().map(|&id| id.to_owned()).collect();
        let parsed = |body: Value| parse(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(
            parsed(json!({"action": "disable", "identities": ["*"]})),
            Command {
                action: Action::Disable,
                selection: Selection::All
            }
        );
        // Any spelling Kratos's UUID library takes, canonicalised; duplicates are one.
        let upper = A.to_uppercase();
        assert_eq!(
            parsed(json!({"action": "delete", "sessions": [A, upper], "identities": null})),
            Command {
                action: Action::Delete,
                selection: Selection::Sessions(set(&[A]))
            }
        );
        assert_eq!(
            parsed(json!({"action": "delete", "identities": [A], "sessions": []})),
            Command {
                action: Action::Delete,
                selection: Selection::Identities(set(&[A]))
            }
        );
    }

    #[test]
    fn refuses_bad_bodies_with_a_reason() {
        assert_eq!(
            parse(b"not json").unwrap_err().reason.unwrap(),
            "Unable to decode JSON payload."
        );
        assert!(reason(json!({"identities": [A]})).contains("action"));
        assert!(reason(json!({"action": "Disable", "identities": [A]})).contains("action"));
        assert!(reason(json!({"action": "delete"})).contains("Exactly one"));
        assert!(reason(json!({"action": "delete", "identities": []})).contains("Exactly one"));
        let both = json!({"action": "delete", "identities": [A], "sessions": [A]});
        assert!(reason(both).contains("Exactly one"));
        assert!(reason(json!({"action": "delete", "identities": ["*", A]})).contains("only"));
        assert!(reason(json!({"action": "delete", "sessions": ["*"]})).contains("not accepted"));
        let bad_id = reason(json!({"action": "delete", "sessions": [A, "abc"]}));
        assert_eq!(
            bad_id,
            r#"Invalid ID in "sessions": uuid: incorrect UUID length 3 in string "abc""#
        );
        assert!(reason(json!({"action": "delete", "sessions": [1]})).contains("decode"));
        let ids = |n: usize| vec![A; n];
        assert!(parse(
            &serde_json::to_vec(&json!({"action": "delete", "identities": ids(MAX_IDS)})).unwrap()
        )
        .is_ok());
        let too_many = reason(json!({"action": "delete", "identities": ids(MAX_IDS + 1)}));
        assert!(too_many.contains("At most 500"), "{too_many}");
    }

    /// POSTs a body to `/admin/sessions`: the status and the JSON answer.
    async fn bulk(kratos: &KratosStandIn, body: Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/admin/sessions", kratos.admin_url()))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap(),
        )
    }

    async fn whoami(kratos: &KratosStandIn, session: &TestSession) -> u16 {
        crate::whoami_status(kratos, &session.token).await
    }

    #[tokio::test]
    async fn disable_keeps_rows_and_counts_only_active_ones() {
        let kratos = KratosStandIn::start().await.unwrap();
        let a1 = kratos.create_session();
        let a2 = kratos.session().identity(&a1.identity_id).create();
        let a3 = kratos
            .session()
            .identity(&a1.identity_id)
            .inactive()
            .create();
        let b = kratos.create_session();
        let body = json!({"action": "disable", "identities": [a1.identity_id]});
        let (status, answer) = bulk(&kratos, body.clone()).await;
        assert_eq!(
            (status, answer),
            (200, json!({"processed": 2, "more": false}))
        );
        for gone in [&a1, &a2, &a3] {
            assert_eq!(whoami(&kratos, gone).await, 401);
            assert!(!kratos.session_state(&gone.id).unwrap().active);
        }
        assert_eq!(whoami(&kratos, &b).await, 200);
        // Nothing was active any more.
        assert_eq!(
            bulk(&kratos, body).await.1,
            json!({"processed": 0, "more": false})
        );
        assert_eq!(kratos.calls(Endpoint::AdminSessionsBulk), 2);
    }

    #[tokio::test]
    async fn delete_removes_rows_by_session_id() {
        let kratos = KratosStandIn::start().await.unwrap();
        let a = kratos.create_session();
        let b = kratos.session().inactive().create();
        let c = kratos.create_session();
        let unknown = "00000000-0000-4000-8000-000000000000";
        let body = json!({"action": "delete", "sessions": [a.id, b.id, unknown]});
        assert_eq!(
            bulk(&kratos, body).await,
            (200, json!({"processed": 2, "more": false}))
        );
        assert!(kratos.session_state(&a.id).is_none());
        assert!(kratos.session_state(&b.id).is_none());
        assert_eq!(whoami(&kratos, &a).await, 401);
        assert_eq!(whoami(&kratos, &c).await, 200);
    }

    #[tokio::test]
    async fn wildcard_drains_in_batches() {
        let kratos = KratosStandIn::start().await.unwrap();
        kratos.set_bulk_batch_size(2);
        let sessions: Vec<TestSession> = (0..4).map(|_| kratos.create_session()).collect();
        let disable = json!({"action": "disable", "identities": ["*"]});
        // 4 sessions, batches of 2: an exact multiple costs one extra call that processes 0.
        for expected in [
            json!({"processed": 2, "more": true}),
            json!({"processed": 2, "more": true}),
            json!({"processed": 0, "more": false}),
        ] {
            assert_eq!(bulk(&kratos, disable.clone()).await, (200, expected));
        }
        for session in &sessions {
            assert_eq!(whoami(&kratos, session).await, 401);
        }
        // Deleting counts the disabled rows too: 3 then 1.
        kratos.set_bulk_batch_size(3);
        let delete = json!({"action": "delete", "identities": ["*"]});
        assert_eq!(
            bulk(&kratos, delete.clone()).await.1,
            json!({"processed": 3, "more": true})
        );
        assert_eq!(
            bulk(&kratos, delete).await.1,
            json!({"processed": 1, "more": false})
        );
        assert!(sessions
            .iter()
            .all(|s| kratos.session_state(&s.id).is_none()));
    }

    #[tokio::test]
    async fn refusals_faults_and_admin_token_apply() {
        let kratos = KratosStandIn::builder()
            .admin_token("secret")
            .start()
            .await
            .unwrap();
        let session = kratos.create_session();
        let body = json!({"action": "delete", "identities": ["*"]});
        assert_eq!(bulk(&kratos, body.clone()).await.0, 401);
        let authorized = |body: Value| {
            reqwest::Client::new()
                .post(format!("{}/admin/sessions", kratos.admin_url()))
                .bearer_auth("secret")
                .body(body.to_string())
                .send()
        };
        let refused = authorized(json!({"action": "delete", "sessions": ["*"]}))
            .await
            .unwrap();
        assert_eq!(refused.status(), 400);
        let refused: Value = serde_json::from_slice(&refused.bytes().await.unwrap()).unwrap();
        assert_eq!(refused["error"]["code"], 400);
        assert_eq!(refused["error"]["status"], "Bad Request");
        kratos.set_fault(
            Endpoint::AdminSessionsBulk,
            Fault::RateLimited {
                retry_after: Some(3),
            },
        );
        let limited = authorized(body.clone()).await.unwrap();
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()["retry-after"], "3");
        kratos.set_fault(
            Endpoint::AdminSessionsBulk,
            Fault::Status(StatusCode::BAD_GATEWAY),
        );
        assert_eq!(authorized(body.clone()).await.unwrap().status(), 502);
        assert!(
            kratos.session_state(&session.id).is_some(),
            "faults act before the route"
        );
        kratos.clear_faults();
        assert_eq!(authorized(body).await.unwrap().status(), 200);
        assert!(kratos.session_state(&session.id).is_none());
        assert_eq!(kratos.calls(Endpoint::AdminSessionsBulk), 5);
    }
}
