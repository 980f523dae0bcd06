//! Every default and limit of the crate's settings, in one place.
//!
//! Each builder setting documents its default here; a value past a limit is refused when the
//! layer is built ([`BuildError`](crate::BuildError)), never clamped in silence.

use std::time::Duration;

// The session layer and its Kratos calls.

/// The default cache TTL. See [`KratosLayerBuilder::cache_ttl`](crate::authenticate::KratosLayerBuilder::cache_ttl)
/// for what it means for revocation.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);

/// How long before a tokenized session's JWT expires its cache entry ends, by default.
pub const DEFAULT_TOKENIZED_MARGIN: Duration = Duration::from_secs(10);

/// The default number of cached sessions.
pub const DEFAULT_CACHE_CAPACITY: u64 = 10_000;

/// The longest [`cache_ttl`](crate::authenticate::KratosLayerBuilder::cache_ttl): a day. The
/// TTL is how long a revocation nobody tells the layer about goes unnoticed; past this, every
/// clock and timer the cache keeps would still count it, but no deployment means it.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);

/// The least byte budget [`cache_max_bytes`](crate::authenticate::KratosLayerBuilder::cache_max_bytes)
/// takes: a few hundred sessions, and room in each of the cache's shards for a large one.
pub const MIN_CACHE_BYTES: u64 = 1 << 20;

/// The default connect timeout for Kratos.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The default deadline for a whole whoami call.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest a 401 may be cached
/// ([`KratosLayerBuilder::cache_rejections`](crate::authenticate::KratosLayerBuilder::cache_rejections)).
pub const MAX_REJECTION_TTL: Duration = Duration::from_secs(60);

/// The default cap on whoami calls in flight
/// ([`KratosLayerBuilder::max_concurrent_lookups`](crate::authenticate::KratosLayerBuilder::max_concurrent_lookups)).
pub const DEFAULT_MAX_CONCURRENT_LOOKUPS: usize = 32;

/// How long a lookup waits for a slot by default
/// ([`KratosLayerBuilder::lookup_queue_timeout`](crate::authenticate::KratosLayerBuilder::lookup_queue_timeout)).
pub const DEFAULT_LOOKUP_QUEUE_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest a lookup may wait for a slot: every waiting request holds its memory.
pub(crate) const MAX_LOOKUP_QUEUE_TIMEOUT: Duration = Duration::from_secs(60);

/// The default shortest back-off window
/// ([`KratosLayerBuilder::backoff`](crate::authenticate::KratosLayerBuilder::backoff)).
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_secs(1);

/// The default longest back-off window: Ory's guidance for 429s
/// ([`KratosLayerBuilder::backoff`](crate::authenticate::KratosLayerBuilder::backoff)).
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The longest back-off window accepted.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How many failed whoami calls in a row open the back-off by default
/// ([`KratosLayerBuilder::backoff_after_failures`](crate::authenticate::KratosLayerBuilder::backoff_after_failures)).
pub const DEFAULT_BACKOFF_AFTER_FAILURES: u32 = 5;

/// The longest stale-if-error grace
/// ([`KratosLayerBuilder::stale_if_error`](crate::authenticate::KratosLayerBuilder::stale_if_error)).
pub const MAX_STALE_IF_ERROR: Duration = Duration::from_secs(3600);

/// The default deadline for one admin API call (extend, admin revocations).
pub const DEFAULT_ADMIN_TIMEOUT: Duration = Duration::from_secs(3);

/// The default time after a session's extension attempt before it is tried again.
pub const DEFAULT_EXTEND_COOLDOWN: Duration = Duration::from_secs(60);

/// The longest extension cooldown accepted: longer than a day would outlast most sessions.
pub const MAX_EXTEND_COOLDOWN: Duration = Duration::from_secs(24 * 60 * 60);

/// How long clients are told to wait when Kratos is unavailable and gave no `Retry-After` of its
/// own.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The longest admin API key accepted, in bytes (Ory Network's keys are under 100).
pub(crate) const MAX_ADMIN_API_KEY_LEN: usize = 4096;

// Refusals of a cached session.

/// How long after a recheck the entry it produced may be rechecked again: longer than a busy
/// page makes its requests in, shorter than a person takes to complete a second factor or a
/// sign-in (so someone who goes through the flow twice in a row is not held up by it).
pub const RECHECK_SPACING: Duration = Duration::from_secs(2);

// The shared cache in Redis (feature `redis`).

/// The shortest shared secret the builder accepts: 32 bytes, the key size of the hash and of the
/// seal derived from it.
pub const MIN_SHARED_CACHE_SECRET_LEN: usize = 32;

/// The key prefix when none is set.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "tower-kratos";

/// How long one Redis call may take before the request goes on without it.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(100);

// Tokenized sessions verified downstream (feature `jwt`).

/// The most leeway the layer takes on `exp`, `nbf` and `iat`.
pub const MAX_JWT_LEEWAY: Duration = Duration::from_secs(300);

/// The leeway when none is set: replicas' and Kratos's clocks differ by about a second.
pub const DEFAULT_JWT_LEEWAY: Duration = Duration::from_secs(5);

/// How often a key set URL is fetched again in the background, by default.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);

/// The shortest time between two fetches for unknown `kid`s, by default: short, since a token
/// signed with a key Kratos has just rotated in waits for that fetch (or is answered 503), and
/// long enough that a flood of made-up `kid`s costs the key set URL one request a second.
pub const DEFAULT_JWKS_MIN_REFETCH: Duration = Duration::from_secs(1);

/// The longest token read. Kratos's are well under 2 KiB; mapped claims add some.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

// The receiver of Kratos's web hook.

/// The shortest key [`KratosLayer::revocation_hook`](crate::KratosLayer::revocation_hook)
/// accepts, in bytes: 256 bits.
pub const MIN_HOOK_KEY_LEN: usize = 32;

/// The largest body the revocation hook reads, in bytes; larger ones are answered 413. The
/// template's body is under 120 bytes.
pub const MAX_HOOK_BODY_LEN: usize = 4 * 1024;
