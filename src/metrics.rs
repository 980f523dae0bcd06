//! Metrics (feature `metrics`): the names, units, descriptions and label sets of every series the
//! crate records, through the [`metrics`](https://docs.rs/metrics) facade. The application picks
//! the exporter (Prometheus, OpenTelemetry, StatsD...) and installs it as the global recorder.
//!
//! **Install the recorder before building the layers.** The hot-path series are recorded through
//! handles a layer takes from the recorder when it is built (a cached hit costs two atomic
//! increments, no label lookup); a layer built before any recorder is installed records nothing.
//!
//! Every series is described and registered at zero when a layer is built, each bounded label
//! combination included (the JWT layer's [`JWT_TOKENS`] when a JWT layer is), so dashboards and
//! alerts never query a series that does not exist yet.
//! Labels are bounded sets written down here ([`labels`]); no series carries a session id, an
//! identity id, a credential, a path or anything else a client sends.
//!
//! # The series
//!
//! | name | type | labels | what it counts |
//! |---|---|---|---|
//! | [`REQUESTS`] | counter | `outcome`, `reason` | the session layer's decision on each request |
//! | [`ROUTE_REFUSALS`] | counter | `unmet` | requests a route's [`Requirement`](crate::require::Requirement) refused (also counted as `authenticated` above) |
//! | [`SERVED_FROM`] | counter | `source` | where each authenticated request's session came from; sums to `REQUESTS{outcome="authenticated"}` |
//! | [`WHOAMI_DURATION`] | histogram (s) | `status_class` | whoami calls sent to Kratos, by how they ended; `_count` is the call count |
//! | [`WHOAMI_IN_FLIGHT`] | gauge | none | whoami calls running now |
//! | [`BACKOFF_OPEN`] | gauge | `api` | layers backing off from that Kratos API now (0 or 1 with one layer) |
//! | [`BACKOFF_TRANSITIONS`] | counter | `api`, `to` | the back-off opening and closing |
//! | [`EXTENSIONS`] | counter | `result` | session extensions the layer or the helpers attempted |
//! | [`LIFECYCLE_CALLS`] | counter | `call`, `result` | the lifecycle helpers' calls to Kratos |
//! | [`REVOCATIONS_PUBLISHED`] | counter | none | revocations made here, told to the other replicas |
//! | [`REVOCATIONS_HEARD`] | counter | none | revocations heard live on the shared channel (this replica's own too: each is heard once by every replica) |
//! | [`REVOCATION_LAG`] | histogram (s) | none | from a heard revocation's making (its record's time) to hearing it |
//! | [`SHARED_CACHE_IN_USE`] | gauge | none | shared caches (Redis) lookups read now: answering and subscribed |
//! | [`SHARED_CACHE_LOOKUPS`] | counter | `result` | Redis reads on a miss: `hit`, `miss` |
//! | [`SHARED_CACHE_ERRORS`] | counter | `kind` | Redis calls that failed or timed out (`call`), values that did not open (`unreadable`) |
//! | [`SHARED_CACHE_PAUSES`] | counter | `to` | the shared cache pausing after failures, and resuming |
//! | [`JWT_TOKENS`] | counter | `result`, `reason` | tokenized sessions the JWT layer decided |
//! | [`JWKS_FETCHES`] | counter | `result` | key set fetches by the JWT layer |
//! | [`CACHE_ENTRIES`] | gauge | none | entries in the session caches |
//! | [`CACHE_EVICTIONS`] | counter | `cause` | entries the session caches dropped before their end (`size`) or at it (`expired`) |
//! | [`WATCHED_CONNECTIONS`] | gauge | none | open connections watched to end with their session |
//!
//! `whoami` is an HTTP client call, so [`WHOAMI_DURATION`] follows OpenTelemetry's
//! `http.client.request.duration` (a histogram in seconds) under the crate's prefix, with
//! OpenTelemetry's status classes, `timeout`, and `error` for calls that got no status or a 200
//! whose body is not a session (OpenTelemetry's `error.type` for those): the
//! crate's own prefix keeps it apart from the application's HTTP client metrics, and a bounded
//! `status_class` in place of `http.response.status_code` keeps the series few.
//!
//! # Buckets
//! Durations are true histograms: the exporter picks the buckets. For the Prometheus exporter,
//! [`WHOAMI_BUCKETS`] and [`REVOCATION_LAG_BUCKETS`] fit these series
//! (`PrometheusBuilder::set_buckets_for_metric(Matcher::Full(WHOAMI_DURATION.into()), WHOAMI_BUCKETS)`);
//! without buckets it renders summaries, which cannot be aggregated across replicas.

// Without the feature only the recording stubs below are used; the names stay for one source.
#![cfg_attr(not(feature = "metrics"), allow(dead_code, unreachable_pub))]

use crate::outcome::{Outcome, Unauthenticated, Unavailable, Unmet};

/// Every name under this prefix.
pub const PREFIX: &str = "tower_kratos_";

/// Counter: the session layer's decision on each request, by `outcome` ([`labels::OUTCOMES`])
/// and `reason` ([`labels::REQUEST_REASONS`]: `none` unless the outcome has one).
pub const REQUESTS: &str = "tower_kratos_requests_total";
/// Counter: requests a route's requirement refused, by `unmet` ([`labels::UNMET`]).
pub const ROUTE_REFUSALS: &str = "tower_kratos_route_refusals_total";
/// Counter: where each authenticated request's session came from, by `source`
/// ([`labels::SOURCES`]): `hit` (this process's cache), `shared` (Redis), `miss` (a whoami this
/// request made), `coalesced` (a whoami another request made, waited for), `stale` (an expired
/// entry served while Kratos is unavailable).
pub const SERVED_FROM: &str = "tower_kratos_served_from_total";
/// Histogram, seconds: whoami calls, by `status_class` ([`labels::STATUS_CLASSES`]).
pub const WHOAMI_DURATION: &str = "tower_kratos_whoami_duration_seconds";
/// Gauge: whoami calls running now.
pub const WHOAMI_IN_FLIGHT: &str = "tower_kratos_whoami_in_flight";
/// Gauge: layers backing off from Kratos now, by `api` ([`labels::BACKOFF_APIS`]); for
/// whoami, lookups are answered 503 (or stale) without asking it.
pub const BACKOFF_OPEN: &str = "tower_kratos_backoff_open";
/// Counter: the back-off's transitions, by `api` and `to` ([`labels::BACKOFF_TO`]).
pub const BACKOFF_TRANSITIONS: &str = "tower_kratos_backoff_transitions_total";
/// Counter: session extensions, by `result` ([`labels::EXTENSION_RESULTS`]).
pub const EXTENSIONS: &str = "tower_kratos_extensions_total";
/// Counter: lifecycle calls to Kratos, by `call` ([`labels::LIFECYCLE_CALLS`]) and `result`
/// ([`labels::LIFECYCLE_RESULTS`]).
pub const LIFECYCLE_CALLS: &str = "tower_kratos_lifecycle_calls_total";
/// Counter: revocations made here and published to the other replicas.
pub const REVOCATIONS_PUBLISHED: &str = "tower_kratos_revocations_published_total";
/// Counter: revocations heard live on the shared channel: every replica hears each one, its
/// own included (the records read on subscribing, a catch-up, are not counted).
pub const REVOCATIONS_HEARD: &str = "tower_kratos_revocations_heard_total";
/// Histogram, seconds: from a heard revocation's making to hearing it.
pub const REVOCATION_LAG: &str = "tower_kratos_revocation_lag_seconds";
/// Gauge: shared caches that lookups read now.
pub const SHARED_CACHE_IN_USE: &str = "tower_kratos_shared_cache_in_use";
/// Counter: shared cache reads on a miss, by `result` (`hit`, `miss`).
pub const SHARED_CACHE_LOOKUPS: &str = "tower_kratos_shared_cache_lookups_total";
/// Counter: shared cache errors, by `kind` ([`labels::SHARED_CACHE_ERRORS`]).
pub const SHARED_CACHE_ERRORS: &str = "tower_kratos_shared_cache_errors_total";
/// Counter: the shared cache pausing and resuming, by `to` (`paused`, `resumed`).
pub const SHARED_CACHE_PAUSES: &str = "tower_kratos_shared_cache_pause_transitions_total";
/// Counter: tokenized sessions the JWT layer decided, by `result` ([`labels::JWT_RESULTS`]) and
/// `reason` ([`labels::JWT_REASONS`]: a refusal's reason, else `none`).
pub const JWT_TOKENS: &str = "tower_kratos_jwt_tokens_total";
/// Counter: the JWT layer's key set fetches, by `result` (`ok`, `failed`).
pub const JWKS_FETCHES: &str = "tower_kratos_jwks_fetches_total";
/// Gauge: entries in the session caches.
pub const CACHE_ENTRIES: &str = "tower_kratos_cache_entries";
/// Counter: entries dropped by the session caches, by `cause` ([`labels::EVICTION_CAUSES`]).
pub const CACHE_EVICTIONS: &str = "tower_kratos_cache_evictions_total";
/// Gauge: open connections watched to end with their session.
pub const WATCHED_CONNECTIONS: &str = "tower_kratos_watched_connections";

/// Every series name above, for dashboards and their tests.
pub const NAMES: &[&str] = &[
    REQUESTS,
    ROUTE_REFUSALS,
    SERVED_FROM,
    WHOAMI_DURATION,
    WHOAMI_IN_FLIGHT,
    BACKOFF_OPEN,
    BACKOFF_TRANSITIONS,
    EXTENSIONS,
    LIFECYCLE_CALLS,
    REVOCATIONS_PUBLISHED,
    REVOCATIONS_HEARD,
    REVOCATION_LAG,
    SHARED_CACHE_IN_USE,
    SHARED_CACHE_LOOKUPS,
    SHARED_CACHE_ERRORS,
    SHARED_CACHE_PAUSES,
    JWT_TOKENS,
    JWKS_FETCHES,
    CACHE_ENTRIES,
    CACHE_EVICTIONS,
    WATCHED_CONNECTIONS,
];

/// Prometheus buckets for [`WHOAMI_DURATION`], in seconds: OpenTelemetry's default HTTP
/// duration buckets, from 5 ms (a cached Ory Network answer) to the request timeout's range.
pub const WHOAMI_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Prometheus buckets for [`REVOCATION_LAG`], in seconds: a healthy pub/sub hop is milliseconds;
/// over a second is worth an alert.
pub const REVOCATION_LAG_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The bounded label values, per label. A series carries no other.
pub mod labels {
    /// `outcome` of [`REQUESTS`](super::REQUESTS): [`Outcome::kind`](crate::Outcome::kind). A
    /// route requirement's refusal is not among them: its request was authenticated, and the
    /// refusal is counted in [`ROUTE_REFUSALS`](super::ROUTE_REFUSALS).
    pub const OUTCOMES: &[&str] = &[
        "authenticated",
        "anonymous",
        "unauthenticated",
        "aal_required",
        "unavailable",
        "cross_origin_request",
    ];
    /// `reason` of [`REQUESTS`](super::REQUESTS): `none`, why a request was unauthenticated, or
    /// why Kratos was unavailable ([`Unavailable::kind`](crate::outcome::Unavailable::kind)).
    pub const REQUEST_REASONS: &[&str] = &[
        "none",
        "malformed",
        "rejected",
        "inactive",
        "expired",
        "too_old",
        "too_large",
        "token",
        "timeout",
        "transport",
        "rate_limited",
        "status",
        "invalid_body",
        "interrupted",
        "backing_off",
        "overloaded",
        "signing_keys",
    ];
    /// `unmet` of [`ROUTE_REFUSALS`](super::ROUTE_REFUSALS): [`Unmet::kind`](crate::outcome::Unmet::kind),
    /// `too_old` for a route's maximum session age, `no_session` for a request an optional
    /// layer let on without one, `other` for any other outcome a recheck at Kratos ended in.
    pub const UNMET: &[&str] = &[
        "second_factor_required",
        "recent_sign_in_required",
        "condition_unmet",
        "too_old",
        "no_session",
        "other",
    ];
    /// `source` of [`SERVED_FROM`](super::SERVED_FROM).
    pub const SOURCES: &[&str] = &["hit", "shared", "miss", "coalesced", "stale"];
    /// `status_class` of [`WHOAMI_DURATION`](super::WHOAMI_DURATION).
    pub const STATUS_CLASSES: &[&str] = &["2xx", "3xx", "4xx", "5xx", "timeout", "error"];
    /// `api` of [`BACKOFF_OPEN`](super::BACKOFF_OPEN) and
    /// [`BACKOFF_TRANSITIONS`](super::BACKOFF_TRANSITIONS): the back-off in front of whoami, of
    /// the public lifecycle calls, or of the admin API (each has its own).
    pub const BACKOFF_APIS: &[&str] = &["whoami", "public", "admin"];
    /// `to` of [`BACKOFF_TRANSITIONS`](super::BACKOFF_TRANSITIONS).
    pub const BACKOFF_TO: &[&str] = &["open", "closed"];
    /// `result` of [`EXTENSIONS`](super::EXTENSIONS): one per attempt (the sum is the attempts):
    /// [`SessionExtension::kind`](crate::lifecycle::SessionExtension::kind) (`extended`;
    /// `not_extended`, too early; `gone`, refused with 404; `by_another_replica`, skipped;
    /// `failed`, the admin API failed), or `paused`, not sent while extensions are paused after
    /// a failure.
    pub const EXTENSION_RESULTS: &[&str] = &[
        "extended",
        "not_extended",
        "gone",
        "by_another_replica",
        "failed",
        "paused",
    ];
    /// `call` of [`LIFECYCLE_CALLS`](super::LIFECYCLE_CALLS).
    /// (The session extensions are counted in [`EXTENSIONS`](super::EXTENSIONS).)
    pub const LIFECYCLE_CALLS: &[&str] = &[
        "list_sessions",
        "revoke_session",
        "revoke_other_sessions",
        "logout",
        "logout_browser",
        "disable_session",
        "revoke_identity_sessions",
        "manage_sessions",
    ];
    /// `result` of [`LIFECYCLE_CALLS`](super::LIFECYCLE_CALLS): `ok`; `refused`, Kratos (or the
    /// crate, before asking) said no; `unavailable`, Kratos could not answer.
    pub const LIFECYCLE_RESULTS: &[&str] = &["ok", "refused", "unavailable"];
    /// `result` of [`SHARED_CACHE_LOOKUPS`](super::SHARED_CACHE_LOOKUPS).
    pub const SHARED_CACHE_RESULTS: &[&str] = &["hit", "miss"];
    /// `kind` of [`SHARED_CACHE_ERRORS`](super::SHARED_CACHE_ERRORS).
    pub const SHARED_CACHE_ERRORS: &[&str] = &["call", "unreadable"];
    /// `to` of [`SHARED_CACHE_PAUSES`](super::SHARED_CACHE_PAUSES).
    pub const PAUSE_TO: &[&str] = &["paused", "resumed"];
    /// `result` of [`JWT_TOKENS`](super::JWT_TOKENS): verified now, served from the layer's
    /// cache of verified tokens, refused (401), or undecided for want of keys (503).
    /// `anonymous`: no bearer token (let on by an optional layer, else 401).
    pub const JWT_RESULTS: &[&str] = &["verified", "cached", "refused", "unavailable", "anonymous"];
    /// `reason` of [`JWT_TOKENS`](super::JWT_TOKENS): `none`, or
    /// [`TokenRejected::kind`](crate::outcome::TokenRejected::kind).
    pub const JWT_REASONS: &[&str] = &[
        "none",
        "malformed",
        "algorithm",
        "unknown_key",
        "signature",
        "expired",
        "not_yet_valid",
        "issuer",
        "audience",
        "missing_claim",
        "duplicate_member",
        "revoked",
    ];
    /// `result` of [`JWKS_FETCHES`](super::JWKS_FETCHES).
    pub const FETCH_RESULTS: &[&str] = &["ok", "failed"];
    /// `cause` of [`CACHE_EVICTIONS`](super::CACHE_EVICTIONS).
    pub const EVICTION_CAUSES: &[&str] = &["size", "expired"];
}

/// The `(outcome, reason)` pairs of [`REQUESTS`], in the order [`request_index`] numbers them.
const REQUEST_PAIRS: &[(&str, &str)] = &[
    ("authenticated", "none"),
    ("anonymous", "none"),
    ("cross_origin_request", "none"),
    ("aal_required", "none"),
    ("unauthenticated", "malformed"),
    ("unauthenticated", "rejected"),
    ("unauthenticated", "inactive"),
    ("unauthenticated", "expired"),
    ("unauthenticated", "too_old"),
    ("unauthenticated", "too_large"),
    ("unauthenticated", "token"),
    ("unavailable", "timeout"),
    ("unavailable", "transport"),
    ("unavailable", "rate_limited"),
    ("unavailable", "status"),
    ("unavailable", "invalid_body"),
    ("unavailable", "interrupted"),
    ("unavailable", "backing_off"),
    ("unavailable", "overloaded"),
    ("unavailable", "signing_keys"),
];

/// The row of [`REQUEST_PAIRS`] an outcome is counted in. A route's refusal (`Insufficient`) is
/// counted by the requirement's layer, not here: its request was authenticated.
fn request_index(outcome: &Outcome) -> Option<usize> {
    Some(match outcome {
        Outcome::Authenticated(_) => 0,
        Outcome::Anonymous => 1,
        Outcome::CrossOriginRequest => 2,
        Outcome::AalRequired(_) => 3,
        Outcome::Unauthenticated(reason) => match reason {
            Unauthenticated::Malformed(_) => 4,
            Unauthenticated::Rejected => 5,
            Unauthenticated::Inactive => 6,
            Unauthenticated::Expired => 7,
            Unauthenticated::TooOld => 8,
            Unauthenticated::TooLarge => 9,
            Unauthenticated::Token(_) => 10,
        },
        Outcome::Unavailable(reason) => match reason {
            Unavailable::Timeout => 11,
            Unavailable::Transport => 12,
            Unavailable::RateLimited { .. } => 13,
            Unavailable::Status(_) => 14,
            Unavailable::InvalidBody => 15,
            Unavailable::Interrupted => 16,
            Unavailable::BackingOff { .. } => 17,
            Unavailable::Overloaded => 18,
            Unavailable::SigningKeys { .. } => 19,
        },
        Outcome::Insufficient(_) => return None,
    })
}

/// The row of [`labels::UNMET`] a route's refusal is counted in.
fn route_refusal_index(outcome: &Outcome) -> usize {
    match outcome {
        Outcome::Insufficient(insufficient) => match insufficient.unmet {
            Unmet::SecondFactor => 0,
            Unmet::RecentSignIn { .. } => 1,
            Unmet::Condition { .. } => 2,
        },
        Outcome::Unauthenticated(Unauthenticated::TooOld) => 3,
        Outcome::Anonymous => 4,
        _ => 5,
    }
}

/// Where an authenticated request's session came from (the `source` of [`SERVED_FROM`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServedFrom {
    Hit = 0,
    Shared = 1,
    Miss = 2,
    Coalesced = 3,
    Stale = 4,
}

/// How a whoami call ended, as OpenTelemetry's status class.
pub(crate) fn status_class(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Authenticated(_)
        | Outcome::Unauthenticated(Unauthenticated::Inactive | Unauthenticated::Expired) => "2xx",
        Outcome::Unavailable(Unavailable::Timeout) => "timeout",
        Outcome::Unavailable(Unavailable::Status(status)) => match status.as_u16() {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "error",
        },
        Outcome::Unavailable(Unavailable::RateLimited { .. })
        | Outcome::Unauthenticated(_)
        | Outcome::AalRequired(_) => "4xx",
        // A 200 whose body is not a session is no answer either.
        Outcome::Unavailable(_) | Outcome::Anonymous | Outcome::CrossOriginRequest => "error",
        Outcome::Insufficient(_) => "error",
    }
}

#[cfg(feature = "metrics")]
pub(crate) use recording::*;
#[cfg(not(feature = "metrics"))]
pub(crate) use silent::*;

#[cfg(feature = "metrics")]
mod recording {
    use std::{fmt, time::Duration};

    use ::metrics::{
        counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
        Unit,
    };

    use super::*;

    /// One layer's handles for the per-request series, taken once when it is built: a request
    /// increments an atomic, with no label lookup.
    #[derive(Clone)]
    pub(crate) struct LayerMetrics {
        requests: Box<[Counter]>,
        served: Box<[Counter]>,
        route_refusals: Box<[Counter]>,
    }

    impl fmt::Debug for LayerMetrics {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("LayerMetrics")
        }
    }

    impl LayerMetrics {
        /// Describes every series and registers each bounded label combination at zero, then
        /// takes the hot path's handles.
        pub(crate) fn new() -> Self {
            describe_all();
            register_all();
            Self {
                requests: REQUEST_PAIRS
                    .iter()
                    .map(|&(outcome, reason)| {
                        counter!(REQUESTS, "outcome" => outcome, "reason" => reason)
                    })
                    .collect(),
                served: labels::SOURCES
                    .iter()
                    .map(|&source| counter!(SERVED_FROM, "source" => source))
                    .collect(),
                route_refusals: labels::UNMET
                    .iter()
                    .map(|&unmet| counter!(ROUTE_REFUSALS, "unmet" => unmet))
                    .collect(),
            }
        }

        /// One request decided by the session layer; an authenticated one is also counted by
        /// where its session came from.
        #[inline]
        pub(crate) fn decided(&self, outcome: &Outcome, served: ServedFrom) {
            if let Some(index) = request_index(outcome) {
                self.requests[index].increment(1);
            }
            if let Outcome::Authenticated(_) = outcome {
                self.served[served as usize].increment(1);
            }
        }

        /// One request a route's requirement refused with `outcome`.
        pub(crate) fn route_refused(&self, outcome: &Outcome) {
            self.route_refusals[route_refusal_index(outcome)].increment(1);
        }
    }

    /// What each series is: its kind, unit and description.
    const DESCRIPTIONS: &[(Kind, &str, Unit, &str)] = &[
        (
            Kind::Counter,
            REQUESTS,
            Unit::Count,
            "Requests the session layer decided, by outcome and reason.",
        ),
        (
            Kind::Counter,
            ROUTE_REFUSALS,
            Unit::Count,
            "Requests a route requirement refused, by the unmet requirement.",
        ),
        (
            Kind::Counter,
            SERVED_FROM,
            Unit::Count,
            "Authenticated requests by where the session came from.",
        ),
        (
            Kind::Histogram,
            WHOAMI_DURATION,
            Unit::Seconds,
            "Duration of whoami calls to Kratos, by status class.",
        ),
        (
            Kind::Gauge,
            WHOAMI_IN_FLIGHT,
            Unit::Count,
            "whoami calls to Kratos running now.",
        ),
        (
            Kind::Gauge,
            BACKOFF_OPEN,
            Unit::Count,
            "Layers backing off from Kratos now.",
        ),
        (
            Kind::Counter,
            BACKOFF_TRANSITIONS,
            Unit::Count,
            "Back-off transitions, by the state entered.",
        ),
        (
            Kind::Counter,
            EXTENSIONS,
            Unit::Count,
            "Session extensions attempted, by result.",
        ),
        (
            Kind::Counter,
            LIFECYCLE_CALLS,
            Unit::Count,
            "Lifecycle calls to Kratos, by call and result.",
        ),
        (
            Kind::Counter,
            REVOCATIONS_PUBLISHED,
            Unit::Count,
            "Revocations made here and published to the other replicas.",
        ),
        (
            Kind::Counter,
            REVOCATIONS_HEARD,
            Unit::Count,
            "Revocations made by other replicas, heard here.",
        ),
        (
            Kind::Histogram,
            REVOCATION_LAG,
            Unit::Seconds,
            "From a heard revocation's making to hearing it.",
        ),
        (
            Kind::Gauge,
            SHARED_CACHE_IN_USE,
            Unit::Count,
            "Shared caches (Redis) that lookups read now.",
        ),
        (
            Kind::Counter,
            SHARED_CACHE_LOOKUPS,
            Unit::Count,
            "Shared cache reads on a miss, by result.",
        ),
        (
            Kind::Counter,
            SHARED_CACHE_ERRORS,
            Unit::Count,
            "Shared cache errors, by kind.",
        ),
        (
            Kind::Counter,
            SHARED_CACHE_PAUSES,
            Unit::Count,
            "Shared cache pause transitions, by the state entered.",
        ),
        (
            Kind::Counter,
            JWT_TOKENS,
            Unit::Count,
            "Tokenized sessions the JWT layer decided, by result and reason.",
        ),
        (
            Kind::Counter,
            JWKS_FETCHES,
            Unit::Count,
            "JWT key set fetches, by result.",
        ),
        (
            Kind::Gauge,
            CACHE_ENTRIES,
            Unit::Count,
            "Entries in the session caches.",
        ),
        (
            Kind::Counter,
            CACHE_EVICTIONS,
            Unit::Count,
            "Entries dropped by the session caches, by cause.",
        ),
        (
            Kind::Gauge,
            WATCHED_CONNECTIONS,
            Unit::Count,
            "Open connections watched to end with their session.",
        ),
    ];

    #[derive(Clone, Copy)]
    enum Kind {
        Counter,
        Gauge,
        Histogram,
    }

    fn describe_all() {
        for &(kind, name, unit, description) in DESCRIPTIONS {
            match kind {
                Kind::Counter => describe_counter!(name, unit, description),
                Kind::Gauge => describe_gauge!(name, unit, description),
                Kind::Histogram => describe_histogram!(name, unit, description),
            }
        }
    }

    /// Every series that has a bounded label set, at zero.
    fn register_all() {
        for &class in labels::STATUS_CLASSES {
            let _registered = histogram!(WHOAMI_DURATION, "status_class" => class);
        }
        gauge!(WHOAMI_IN_FLIGHT).increment(0.0);
        for &api in labels::BACKOFF_APIS {
            gauge!(BACKOFF_OPEN, "api" => api).increment(0.0);
            for &to in labels::BACKOFF_TO {
                counter!(BACKOFF_TRANSITIONS, "api" => api, "to" => to).absolute(0);
            }
        }
        for &result in labels::EXTENSION_RESULTS {
            counter!(EXTENSIONS, "result" => result).absolute(0);
        }
        for &call in labels::LIFECYCLE_CALLS {
            for &result in labels::LIFECYCLE_RESULTS {
                counter!(LIFECYCLE_CALLS, "call" => call, "result" => result).absolute(0);
            }
        }
        counter!(REVOCATIONS_PUBLISHED).absolute(0);
        counter!(REVOCATIONS_HEARD).absolute(0);
        let _registered = histogram!(REVOCATION_LAG);
        gauge!(SHARED_CACHE_IN_USE).increment(0.0);
        for &result in labels::SHARED_CACHE_RESULTS {
            counter!(SHARED_CACHE_LOOKUPS, "result" => result).absolute(0);
        }
        for &kind in labels::SHARED_CACHE_ERRORS {
            counter!(SHARED_CACHE_ERRORS, "kind" => kind).absolute(0);
        }
        for &to in labels::PAUSE_TO {
            counter!(SHARED_CACHE_PAUSES, "to" => to).absolute(0);
        }
        for &result in labels::FETCH_RESULTS {
            counter!(JWKS_FETCHES, "result" => result).absolute(0);
        }
        gauge!(CACHE_ENTRIES).increment(0.0);
        for &cause in labels::EVICTION_CAUSES {
            counter!(CACHE_EVICTIONS, "cause" => cause).absolute(0);
        }
        gauge!(WATCHED_CONNECTIONS).increment(0.0);
    }

    /// The JWT layer's series, registered when one is built.
    #[cfg_attr(not(feature = "jwt"), allow(dead_code))]
    pub(crate) fn register_jwt() {
        describe_all();
        for &(result, reason) in &[
            ("verified", "none"),
            ("cached", "none"),
            ("unavailable", "none"),
            ("anonymous", "none"),
        ] {
            counter!(JWT_TOKENS, "result" => result, "reason" => reason).absolute(0);
        }
        for &reason in &labels::JWT_REASONS[1..] {
            counter!(JWT_TOKENS, "result" => "refused", "reason" => reason).absolute(0);
        }
        for &result in labels::FETCH_RESULTS {
            counter!(JWKS_FETCHES, "result" => result).absolute(0);
        }
    }

    /// One whoami call ended after `took`.
    pub(crate) fn whoami_done(outcome: &Outcome, took: Duration) {
        histogram!(WHOAMI_DURATION, "status_class" => status_class(outcome)).record(took);
    }

    /// A whoami call in flight, until the guard is dropped.
    pub(crate) fn whoami_in_flight() -> InFlight {
        gauge!(WHOAMI_IN_FLIGHT).increment(1.0);
        InFlight(())
    }

    /// Counts one whoami call in flight while it lives.
    #[derive(Debug)]
    pub(crate) struct InFlight(());

    impl Drop for InFlight {
        fn drop(&mut self) {
            gauge!(WHOAMI_IN_FLIGHT).decrement(1.0);
        }
    }

    /// The back-off in front of `api` opened (`true`) or closed.
    pub(crate) fn backoff(api: &'static str, open: bool) {
        let to = if open { "open" } else { "closed" };
        counter!(BACKOFF_TRANSITIONS, "api" => api, "to" => to).increment(1);
        let gauge = gauge!(BACKOFF_OPEN, "api" => api);
        if open {
            gauge.increment(1.0);
        } else {
            gauge.decrement(1.0);
        }
    }

    /// A back-off in front of `api` was dropped open.
    pub(crate) fn backoff_dropped(api: &'static str) {
        gauge!(BACKOFF_OPEN, "api" => api).decrement(1.0);
    }

    /// A session extension ended with `result` (one of [`labels::EXTENSION_RESULTS`]).
    pub(crate) fn extension(result: &'static str) {
        counter!(EXTENSIONS, "result" => result).increment(1);
    }

    /// A lifecycle call to Kratos ended.
    pub(crate) fn lifecycle_call(call: &'static str, result: &'static str) {
        counter!(LIFECYCLE_CALLS, "call" => call, "result" => result).increment(1);
    }

    /// A revocation made here was published to the other replicas.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn revocation_published() {
        counter!(REVOCATIONS_PUBLISHED).increment(1);
    }

    /// A revocation made elsewhere was heard, `lag` after it was made.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn revocation_heard(lag: Duration) {
        counter!(REVOCATIONS_HEARD).increment(1);
        histogram!(REVOCATION_LAG).record(lag);
    }

    /// A shared cache read on a miss found an entry (`true`) or none.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn shared_cache_lookup(hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        counter!(SHARED_CACHE_LOOKUPS, "result" => result).increment(1);
    }

    /// A shared cache error of `kind` (one of [`labels::SHARED_CACHE_ERRORS`]).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn shared_cache_error(kind: &'static str) {
        counter!(SHARED_CACHE_ERRORS, "kind" => kind).increment(1);
    }

    /// A shared cache paused after failures (`true`) or resumed.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn shared_cache_paused(paused: bool) {
        let to = if paused { "paused" } else { "resumed" };
        counter!(SHARED_CACHE_PAUSES, "to" => to).increment(1);
    }

    /// A shared cache came into use (`true`: answering and subscribed) or went out of it.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn shared_cache_in_use(in_use: bool) {
        gauge!(SHARED_CACHE_IN_USE).increment(if in_use { 1.0 } else { -1.0 });
    }

    /// The JWT layer decided a token: `result` and `reason` from [`labels::JWT_RESULTS`] and
    /// [`labels::JWT_REASONS`].
    #[cfg_attr(not(feature = "jwt"), allow(dead_code))]
    pub(crate) fn jwt_token(result: &'static str, reason: &'static str) {
        counter!(JWT_TOKENS, "result" => result, "reason" => reason).increment(1);
    }

    /// The JWT layer fetched its key set.
    #[cfg_attr(not(feature = "jwt"), allow(dead_code))]
    pub(crate) fn jwks_fetch(ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        counter!(JWKS_FETCHES, "result" => result).increment(1);
    }

    /// A session cache's entry count changed by `delta`.
    pub(crate) fn cache_entries(delta: f64) {
        gauge!(CACHE_ENTRIES).increment(delta);
    }

    /// A session cache dropped an entry for `cause` (one of [`labels::EVICTION_CAUSES`]).
    pub(crate) fn cache_eviction(cause: &'static str) {
        counter!(CACHE_EVICTIONS, "cause" => cause).increment(1);
    }

    /// The number of watched connections changed by `delta`.
    pub(crate) fn watched_connections(delta: f64) {
        gauge!(WATCHED_CONNECTIONS).increment(delta);
    }
}

/// Without the feature: nothing is recorded, and every call here compiles to nothing.
#[cfg(not(feature = "metrics"))]
mod silent {
    use std::time::Duration;

    use super::*;

    #[derive(Clone, Debug)]
    pub(crate) struct LayerMetrics;

    impl LayerMetrics {
        #[inline(always)]
        pub(crate) fn new() -> Self {
            Self
        }
        #[inline(always)]
        pub(crate) fn decided(&self, _: &Outcome, _: ServedFrom) {}
        #[inline(always)]
        pub(crate) fn route_refused(&self, _: &Outcome) {}
    }

    #[derive(Debug)]
    pub(crate) struct InFlight;

    #[inline(always)]
    pub(crate) fn register_jwt() {}
    #[inline(always)]
    pub(crate) fn whoami_done(_: &Outcome, _: Duration) {}
    #[inline(always)]
    pub(crate) fn whoami_in_flight() -> InFlight {
        InFlight
    }
    #[inline(always)]
    pub(crate) fn backoff(_: &'static str, _: bool) {}
    #[inline(always)]
    pub(crate) fn backoff_dropped(_: &'static str) {}
    #[inline(always)]
    pub(crate) fn extension(_: &'static str) {}
    #[inline(always)]
    pub(crate) fn lifecycle_call(_: &'static str, _: &'static str) {}
    #[inline(always)]
    pub(crate) fn revocation_published() {}
    #[inline(always)]
    pub(crate) fn revocation_heard(_: Duration) {}
    #[inline(always)]
    pub(crate) fn shared_cache_lookup(_: bool) {}
    #[inline(always)]
    pub(crate) fn shared_cache_error(_: &'static str) {}
    #[inline(always)]
    pub(crate) fn shared_cache_paused(_: bool) {}
    #[inline(always)]
    pub(crate) fn shared_cache_in_use(_: bool) {}
    #[inline(always)]
    pub(crate) fn jwt_token(_: &'static str, _: &'static str) {}
    #[inline(always)]
    pub(crate) fn jwks_fetch(_: bool) {}
    #[inline(always)]
    pub(crate) fn cache_entries(_: f64) {}
    #[inline(always)]
    pub(crate) fn cache_eviction(_: &'static str) {}
    #[inline(always)]
    pub(crate) fn watched_connections(_: f64) {}
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_request_pair_uses_documented_labels() {
        for &(outcome, reason) in REQUEST_PAIRS {
            assert!(labels::OUTCOMES.contains(&outcome), "{outcome}");
            assert!(labels::REQUEST_REASONS.contains(&reason), "{reason}");
        }
    }

    #[test]
    fn request_rows_match_the_outcome_kinds() {
        let outcomes = [
            Outcome::Anonymous,
            Outcome::CrossOriginRequest,
            Outcome::Unauthenticated(Unauthenticated::Rejected),
            Outcome::Unauthenticated(Unauthenticated::TooOld),
            Outcome::Unavailable(Unavailable::Timeout),
            Outcome::Unavailable(Unavailable::Overloaded),
            Outcome::Unavailable(Unavailable::BackingOff {
                retry_after: Duration::from_secs(1),
            }),
        ];
        for outcome in outcomes {
            let index = request_index(&outcome).expect("counted");
            assert_eq!(REQUEST_PAIRS[index].0, outcome.kind());
            if let Outcome::Unavailable(reason) = &outcome {
                assert_eq!(REQUEST_PAIRS[index].1, reason.kind());
            }
        }
    }

    #[test]
    fn names_carry_the_prefix() {
        for name in NAMES {
            assert!(name.starts_with(PREFIX), "{name}");
        }
    }
}
