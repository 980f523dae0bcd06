//! The guide: everything the README leaves out, one chapter per topic.
//!
//! The README says what the crate is and gets an app running; these chapters are the long form.
//! Each is a module with no items, only documentation, so its Rust examples are compiled (and
//! most run, against the crate's Kratos stand-in) with the crate's own doctests: they cannot drift
//! from the API. Read them in order for a tour, or go to the one you need:
//!
//! | chapter | what it covers |
//! |---|---|
//! | [`getting_started`] | adding the crate, the reference app, the layer in front of axum and of plain hyper |
//! | [`configuration`] | every builder setting with its default, the cargo features and the TLS providers |
//! | [`outcomes`] | how the credential is found, what a lookup can end in, the default responses and replacing them |
//! | [`browsers`] | login redirects and `return_to`, step-up through Kratos's flows, browser logout |
//! | [`requirements`] | per-route requirements: a second factor, a recent sign-in, a maximum session age, conditions of your own |
//! | [`lifecycle`] | extending sessions, revoking them, listing them, logging out |
//! | [`revocations`] | revocations Kratos makes itself (its web hook), the bulk admin API, and what no hook reports |
//! | [`live`] | streams, WebSockets, gRPC streams and long handlers that end with their session |
//! | [`grpc`] | the layer in front of tonic, and the gRPC answers it gives |
//! | [`shared_cache`] | one cache for many replicas through Redis: what is shared, TLS, ACL, Cluster, Sentinel, managed services, sizing |
//! | [`tokenized_sessions`] | Kratos's session JWTs: asking for them at the edge, verifying them downstream |
//! | [`testing`] | testing your app against the Kratos stand-in: its routes, faults, a browser step-up |
//! | [`security`] | the security model: revocation lag, what is sent, kept and logged, the threat model, hostile-input testing |
//! | [`operations`] | when Kratos fails (back-off, bounded lookups, stale-if-error, the fault matrix), running in production, troubleshooting |
//! | [`performance`] | every measured figure, with the command that measures it and the machine it ran on |

#[doc = include_str!("getting_started.md")]
pub mod getting_started {}

#[doc = include_str!("configuration.md")]
pub mod configuration {}

#[doc = include_str!("outcomes.md")]
pub mod outcomes {}

#[doc = include_str!("browsers.md")]
pub mod browsers {}

#[doc = include_str!("requirements.md")]
pub mod requirements {}

#[doc = include_str!("lifecycle.md")]
pub mod lifecycle {}

#[doc = include_str!("revocations.md")]
pub mod revocations {}

#[doc = include_str!("live.md")]
pub mod live {}

#[doc = include_str!("grpc.md")]
pub mod grpc {}

#[doc = include_str!("shared_cache.md")]
pub mod shared_cache {}

#[doc = include_str!("tokenized_sessions.md")]
pub mod tokenized_sessions {}

#[doc = include_str!("testing.md")]
pub mod testing {}

#[doc = include_str!("security.md")]
pub mod security {}

#[doc = include_str!("operations.md")]
pub mod operations {}

#[doc = include_str!("performance.md")]
pub mod performance {}
