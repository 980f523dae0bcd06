//! [`Requirement`]: what a route asks of a session, and its check.

use std::{fmt, sync::Arc, time::Duration};

use time::OffsetDateTime;

use crate::{
    outcome::{Insufficient, Outcome, Unauthenticated, Unmet},
    session::{Aal, KratosSession, Session},
};

/// What a route asks of a session beyond its existence. Requirements compose: each added
/// condition must hold, and layers of several requirements stack.
#[derive(Clone, Default)]
pub struct Requirement {
    second_factor: bool,
    signed_in_within: Option<Duration>,
    max_session_age: Option<Duration>,
    conditions: Vec<Condition>,
}

/// A condition of the app's, by name.
#[derive(Clone)]
struct Condition {
    name: &'static str,
    holds: Arc<dyn Fn(&KratosSession) -> bool + Send + Sync>,
}

impl fmt::Debug for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Requirement")
            .field("second_factor", &self.second_factor)
            .field("signed_in_within", &self.signed_in_within)
            .field("max_session_age", &self.max_session_age)
            .field(
                "conditions",
                &self.conditions.iter().map(|c| c.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Requirement {
    /// No requirement yet: any session meets it.
    pub fn new() -> Self {
        Self::default()
    }

    /// A second factor: the session's assurance level is `aal2` or higher. Browsers are sent
    /// to Kratos's login flow with `aal=aal2`.
    pub fn second_factor(mut self) -> Self {
        self.second_factor = true;
        self
    }

    /// A sign-in within `within` (the session's `authenticated_at`), for sensitive actions:
    /// Kratos's `privileged_session_max_age` idea, applied by the app. Browsers are sent to
    /// Kratos's login flow with `refresh=true`, which re-authenticates in the same session.
    pub fn signed_in_within(mut self, within: Duration) -> Self {
        self.signed_in_within = Some(within);
        self
    }

    /// At most this old, counted from the session's `issued_at` (see the module docs): an
    /// absolute cap that extensions do not move. Refused like an expired session.
    pub fn max_session_age(mut self, max: Duration) -> Self {
        self.max_session_age = Some(max);
        self
    }

    /// A condition of the app's on the session or its identity (its schema, a role in
    /// `metadata_public`, a verified address), by a name that says what it asks. Unmet, it is
    /// a 403 naming it; no Kratos flow meets it, so browsers are not redirected.
    ///
    /// ```
    /// use tower_kratos::require::Requirement;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Metadata { role: Option<String> }
    ///
    /// let admins = Requirement::new().condition("role admin", |session| {
    ///     session.identity.as_ref().is_some_and(|identity| {
    ///         identity.metadata_public.parse::<Metadata>()
    ///             .is_ok_and(|metadata| metadata.role.as_deref() == Some("admin"))
    ///     })
    /// });
    /// # let _ = admins;
    /// ```
    pub fn condition(
        mut self,
        name: &'static str,
        holds: impl Fn(&KratosSession) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.conditions.push(Condition {
            name,
            holds: Arc::new(holds),
        });
        self
    }

    /// Checks a session now: `Err` with the outcome to refuse it with. The maximum age comes
    /// first (only signing in again helps), then the second factor, the recent sign-in, and the
    /// conditions in the order they were added. The outcome names no Kratos flow here
    /// (`redirect_browser_to` is `None`); the layer made with
    /// [`KratosLayer::require`](crate::KratosLayer::require) fills it in.
    ///
    /// # Errors
    /// `Outcome::Unauthenticated(Unauthenticated::TooOld)`, or `Outcome::Insufficient` with
    /// what is missing.
    pub fn check(&self, session: &KratosSession) -> Result<(), Outcome> {
        let now = OffsetDateTime::now_utc();
        if let Some(max) = self.max_session_age {
            if !session.younger_than(max, now) {
                return Err(Outcome::Unauthenticated(Unauthenticated::TooOld));
            }
        }
        let unmet = if self.second_factor && !has_second_factor(session) {
            Some(Unmet::SecondFactor)
        } else if let Some(within) = self.signed_in_within.filter(|within| {
            !session
                .authenticated_at
                .is_some_and(|at| at + *within > now && at <= now + CLOCK_SKEW)
        }) {
            Some(Unmet::RecentSignIn { within })
        } else {
            self.conditions
                .iter()
                .find(|condition| !(condition.holds)(session))
                .map(|condition| Unmet::Condition {
                    name: condition.name,
                })
        };
        match unmet {
            Some(unmet) => Err(Outcome::Insufficient(Insufficient {
                unmet,
                redirect_browser_to: None,
            })),
            None => Ok(()),
        }
    }
}

/// How far in the future an `authenticated_at` may be and still count as recent: clocks differ
/// a little between Kratos and the app, never by minutes.
const CLOCK_SKEW: Duration = Duration::from_secs(5);

/// `aal2` or higher.
fn has_second_factor(session: &Session) -> bool {
    matches!(
        session.authenticator_assurance_level,
        Some(Aal::Aal2 | Aal::Aal3)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(body: serde_json::Value) -> KratosSession {
        KratosSession::new(Arc::new(serde_json::from_value(body).unwrap()))
    }

    fn ago(seconds: i64) -> String {
        (OffsetDateTime::now_utc() - time::Duration::seconds(seconds))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    }

    fn unmet(requirement: &Requirement, session: &KratosSession) -> Option<Outcome> {
        requirement.check(session).err()
    }

    #[test]
    fn each_requirement_met_and_unmet() {
        let aal1 = session(serde_json::json!({
            "id": "s", "active": true, "authenticator_assurance_level": "aal1",
            "authenticated_at": ago(600), "issued_at": ago(7200),
        }));
        let aal2 = session(serde_json::json!({
            "id": "s", "active": true, "authenticator_assurance_level": "aal2",
            "authenticated_at": ago(10), "issued_at": ago(60),
        }));
        let second = Requirement::new().second_factor();
        assert!(matches!(
            unmet(&second, &aal1),
            Some(Outcome::Insufficient(Insufficient {
                unmet: Unmet::SecondFactor,
                ..
            }))
        ));
        assert!(unmet(&second, &aal2).is_none());

        let recent = Requirement::new().signed_in_within(Duration::from_secs(300));
        assert!(matches!(
            unmet(&recent, &aal1),
            Some(Outcome::Insufficient(Insufficient {
                unmet: Unmet::RecentSignIn { .. },
                ..
            }))
        ));
        assert!(unmet(&recent, &aal2).is_none());

        let young = Requirement::new().max_session_age(Duration::from_secs(3600));
        assert!(matches!(
            unmet(&young, &aal1),
            Some(Outcome::Unauthenticated(Unauthenticated::TooOld))
        ));
        assert!(unmet(&young, &aal2).is_none());
        // An age that cannot be told is refused.
        let ageless = session(serde_json::json!({"id": "s", "active": true}));
        assert!(unmet(&young, &ageless).is_some());

        let condition = Requirement::new().condition("aal1 only", |session| {
            session.authenticator_assurance_level == Some(Aal::Aal1)
        });
        assert!(unmet(&condition, &aal1).is_none());
        assert!(matches!(
            unmet(&condition, &aal2),
            Some(Outcome::Insufficient(Insufficient {
                unmet: Unmet::Condition { name: "aal1 only" },
                ..
            }))
        ));
    }

    #[test]
    fn requirements_compose_and_the_age_comes_first() {
        let old_aal1 = session(serde_json::json!({
            "id": "s", "active": true, "authenticator_assurance_level": "aal1",
            "authenticated_at": ago(600), "issued_at": ago(7200),
        }));
        let all = Requirement::new()
            .second_factor()
            .signed_in_within(Duration::from_secs(60))
            .max_session_age(Duration::from_secs(3600));
        assert!(matches!(
            unmet(&all, &old_aal1),
            Some(Outcome::Unauthenticated(Unauthenticated::TooOld))
        ));
        let without_age = Requirement::new()
            .second_factor()
            .signed_in_within(Duration::from_secs(60));
        assert!(matches!(
            unmet(&without_age, &old_aal1),
            Some(Outcome::Insufficient(Insufficient {
                unmet: Unmet::SecondFactor,
                ..
            }))
        ));
    }
}
