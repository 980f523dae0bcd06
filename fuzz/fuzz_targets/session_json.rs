//! Any bytes as a whoami body: parsing a `Session` must be `Ok` or a serde error, never a panic,
//! from bytes and from a `serde_json::Value`; a parsed session must be usable and serialize to a
//! body that parses back to it.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};
use tower_kratos::{KratosIdentity, KratosSession, Session};

fuzz_target!(|body: &[u8]| {
    let direct = serde_json::from_slice::<Session>(body);
    // The same body through `Value`, another path through serde: what parses directly parses
    // there too. (Not the converse: `Value` keeps the last of duplicate keys, a struct refuses
    // them.)
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let via_value = serde_json::from_value::<Session>(value);
        assert!(direct.is_err() || via_value.is_ok(), "{via_value:?}");
        if let Ok(session) = via_value {
            exercise(session);
        }
    }
    if let Ok(session) = direct {
        exercise(session);
    }
});

fn exercise(session: Session) {
    let _ = session.identity_id();
    let extremes = [
        OffsetDateTime::UNIX_EPOCH,
        OffsetDateTime::now_utc(),
        PrimitiveDateTime::new(Date::MIN, Time::MIDNIGHT).assume_utc(),
        PrimitiveDateTime::new(Date::MAX, Time::MAX).assume_utc(),
    ];
    for at in extremes {
        let _ = session.is_valid_at(at);
    }
    if let Some(level) = &session.authenticator_assurance_level {
        let _ = level.to_string();
    }
    for method in &session.authentication_methods {
        let _ = method.aal.as_ref().map(ToString::to_string);
    }
    if let Some(identity) = &session.identity {
        let _ = identity.traits_as::<serde_json::Value>();
        let _ = identity.traits_as::<std::collections::BTreeMap<String, String>>();
    }

    let json = serde_json::to_vec(&session).expect("a parsed session serializes");
    let again: Session = serde_json::from_slice(&json).expect("what the model writes, it reads");
    assert_eq!(again.id, session.id);
    assert_eq!(again.identity_id(), session.identity_id());
    assert_eq!(again.active, session.active);
    assert_eq!(again.expires_at, session.expires_at);
    assert_eq!(
        again.authenticator_assurance_level,
        session.authenticator_assurance_level
    );

    let shared = KratosSession::new(Arc::new(session));
    let _ = format!("{shared:?}");
    if let Some(identity) = KratosIdentity::of(&shared) {
        let _ = format!("{identity:?}");
    }
}
