//! The session model parses every real Kratos session body in `tests/fixtures/`.

use std::{fs, path::Path};

use time::macros::datetime;
use tower_kratos::session::{Aal, Session};

fn fixture(name: &str) -> Session {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let body = fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_slice(&body).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

#[test]
fn every_fixture_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut parsed = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "json") {
            let session = fixture(path.file_name().unwrap().to_str().unwrap());
            assert!(!session.id.is_empty(), "{}", path.display());
            parsed += 1;
        }
    }
    assert_eq!(parsed, 5, "all five fixtures are read");
}

#[test]
fn docs_example_has_every_field_typed() {
    let session = fixture("whoami-docs-example.json");
    assert_eq!(session.id, "65dea6f4-5d15-4e61-9eb7-f30190c0b2e2");
    assert!(session.active);
    assert_eq!(
        session.expires_at,
        Some(datetime!(2022-12-31 13:50:30.427292 UTC))
    );
    assert_eq!(session.authenticator_assurance_level, Some(Aal::Aal1));
    assert_eq!(session.authentication_methods.len(), 1);
    assert_eq!(
        session.authentication_methods[0].method.as_deref(),
        Some("password")
    );
    let identity = session
        .identity
        .as_ref()
        .expect("whoami expands the identity");
    assert_eq!(identity.id, "969d7a6e-b8a9-49ea-bf7b-9e2732a41a81");
    assert_eq!(identity.state.as_deref(), Some("active"));
    assert_eq!(
        identity.verifiable_addresses[0].status.as_deref(),
        Some("sent")
    );
    assert_eq!(identity.recovery_addresses.len(), 1);
    assert!(identity.metadata_public.is_null());

    #[derive(serde::Deserialize)]
    struct Traits {
        email: String,
        name: String,
    }
    let traits: Traits = identity.traits_as().unwrap();
    assert_eq!(
        (traits.email.as_str(), traits.name.as_str()),
        ("user@example.org", "User")
    );
    assert_eq!(session.devices[0].location.as_deref(), Some("Berlin, DE"));
    // Past its expiry, the session is not valid whatever `active` says.
    assert!(!session.is_valid_at(time::OffsetDateTime::now_utc()));
    assert!(session.is_valid_at(datetime!(2022-12-15 0:00 UTC)));
}

#[test]
fn legacy_data_is_tolerated() {
    let session = fixture("session-migratest-068f6bb6-d15f-436d-94f7-b3fd0489c9ef.json");
    assert!(!session.active);
    assert_eq!(session.authenticator_assurance_level, Some(Aal::Aal2));
    // Legacy AMR entries carry aal "" and the zero time.
    let method = &session.authentication_methods[0];
    assert_eq!(method.aal, Some(Aal::Other(String::new())));
    assert_eq!(method.completed_at, Some(datetime!(0001-01-01 0:00 UTC)));
    assert_eq!(session.identity.as_ref().unwrap().organization_id, None);
    assert!(session.devices.is_empty());
}

#[test]
fn only_the_id_is_required_and_odd_values_do_not_fail() {
    let minimal: Session = serde_json::from_str(r#"{"id":"x"}"#).unwrap();
    assert!(
        !minimal.active,
        "a session that does not say it is active is not"
    );
    assert!(minimal.identity.is_none());

    let odd: Session = serde_json::from_str(
        r#"{"id":"x","active":true,"expires_at":"not a time","authentication_methods":null,
            "devices":null,"identity":null,"authenticator_assurance_level":"aal7","new":{}}"#,
    )
    .unwrap();
    assert_eq!(odd.expires_at, None);
    assert_eq!(
        odd.authenticator_assurance_level,
        Some(Aal::Other("aal7".into()))
    );

    assert!(serde_json::from_str::<Session>(r#"{"active":true}"#).is_err());
    assert!(serde_json::from_str::<Session>("[]").is_err());
}
