//! Isolation under load: 10,000 requests over 1,000 sessions (one identity each) from 64
//! concurrent clients, through the layer in a real axum server on loopback, while a tenth of the
//! sessions are revoked through the crate midway. Every response must carry its own caller's
//! session and identity, and no revoked session may be served to a request sent after its
//! revocation returned. What the Kratos stand-in saw is asserted too: one whoami per live
//! session whatever the concurrency, and exactly the revocation calls made.
//!
//! The schedule (which session each request carries) comes from a seeded generator, so a failure
//! replays with the same schedule; only the interleaving is the scheduler's.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{routing::get, Json, Router};
use http::{HeaderMap, HeaderValue, StatusCode};
use kratos_stand_in::{Endpoint, KratosStandIn, TestSession};
use serde_json::{json, Value};
use tokio::{
    net::TcpListener,
    sync::{watch, Notify},
    task::JoinSet,
};
use tower_kratos::{lifecycle::SessionLifecycle, KratosIdentity, KratosLayer, KratosSession};

const SESSIONS: usize = 1_000;
const REQUESTS: usize = 10_000;
const CLIENTS: usize = 64;
/// Every tenth session is revoked.
const REVOKED: usize = SESSIONS / 10;
/// The revocations start once this many responses have arrived, and run while the load goes on.
const MIDWAY: usize = REQUESTS / 2;
/// The last requests are a roll call: every session once, in a shuffled order, sent only after
/// every revocation has returned. So each revoked session meets at least one request sent after
/// its revocation, however the scheduler interleaved the rest; the requests before are uniform
/// random picks.
const ROLL_CALL: usize = REQUESTS - SESSIONS;
const SEED: u64 = 0x6b72_6174_6f73;
/// Far longer than the test: any rejection of a cached session is the revocation's doing, never
/// an expired entry.
const CACHE_TTL: Duration = Duration::from_secs(600);
/// Every deadline of the layer (whoami, connect, admin, the wait for a lookup slot). A 503 from a
/// deadline would fail the test for a slow machine rather than a wrong answer, so they are far
/// above what a loaded 2-core CI runner needs.
const PATIENCE: Duration = Duration::from_secs(30);
/// More lookup slots than the clients and the revoker can ever use at once (each has at most one
/// request or call in flight), so no lookup waits in the layer's queue, and none can get the
/// 503 the default cap of 32 with its 1 s queue would give when a loaded machine is slow.
const LOOKUP_SLOTS: usize = 2 * CLIENTS;
/// Ends a hung run with a failure instead of hanging CI; not a speed assertion.
const GUARD: Duration = Duration::from_secs(120);

/// How a client carries its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Carrier {
    Token,
    Bearer,
    /// The session cookie among the app's own cookies.
    Cookie,
}

/// How a session is revoked; each revocation helper of [`SessionLifecycle`] in turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Revocation {
    /// `revoke_session` by another session of the same identity (its companion).
    RevokeSession,
    /// `revoke_other_sessions` by the companion, whose own session stays usable.
    RevokeOtherSessions,
    /// `disable_session` (admin).
    DisableSession,
    /// `revoke_identity_sessions` (admin): the companion goes too.
    RevokeIdentitySessions,
    /// `logout` with the session's own token, as the client sends it.
    Logout,
}

impl Revocation {
    const ALL: [Self; 5] = [
        Self::RevokeSession,
        Self::RevokeOtherSessions,
        Self::DisableSession,
        Self::RevokeIdentitySessions,
        Self::Logout,
    ];

    /// The Kratos endpoint it calls.
    fn endpoint(self) -> Endpoint {
        match self {
            Self::RevokeSession => Endpoint::RevokeMySession,
            Self::RevokeOtherSessions => Endpoint::RevokeMyOtherSessions,
            Self::DisableSession => Endpoint::AdminDisableSession,
            Self::RevokeIdentitySessions => Endpoint::AdminDeleteIdentitySessions,
            Self::Logout => Endpoint::LogoutApi,
        }
    }

    /// The revocations that act through a second session of the victim's identity.
    fn needs_companion(self) -> bool {
        matches!(
            self,
            Self::RevokeSession | Self::RevokeOtherSessions | Self::RevokeIdentitySessions
        )
    }
}

/// One of the 1,000 load sessions, and how its client uses it.
struct Caller {
    session: TestSession,
    email: String,
    carrier: Carrier,
    /// What the client sends: its one credential header.
    headers: HeaderMap,
    revocation: Option<Revocation>,
    /// A second session of the same identity, outside the load: the caller of the self-service
    /// revocations, and a bystander of the others.
    companion: Option<TestSession>,
}

impl Caller {
    /// Whether `body` is the echo of this caller's own session, identity and traits.
    fn check_echo(&self, body: &str) -> Result<(), String> {
        let echo: Value =
            serde_json::from_str(body).map_err(|error| format!("not JSON ({error}): {body}"))?;
        let expected = json!({
            "session_id": self.session.id,
            "identity_id": self.session.identity_id,
            "email": self.email,
        });
        if echo == expected {
            Ok(())
        } else {
            Err(format!("expected {expected}, got {echo}"))
        }
    }
}

fn credential_headers(carrier: Carrier, session: &TestSession) -> HeaderMap {
    let (name, value) = match carrier {
        Carrier::Token => ("x-session-token", session.token.clone()),
        Carrier::Bearer => ("authorization", format!("Bearer {}", session.token)),
        Carrier::Cookie => (
            "cookie",
            format!(
                "theme=dark; {}; csrf_token_5f3a=bm90LWEtc2Vzc2lvbg",
                session.cookie_header()
            ),
        ),
    };
    let mut headers = HeaderMap::new();
    headers.insert(name, HeaderValue::from_str(&value).expect("a header value"));
    headers
}

/// SplitMix64: a tiny, well-spread generator; seeded, so the schedule is the same every run.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Below `n`; the modulo bias is far below anything this test could notice.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Which caller each request is for: uniform random picks, then the roll call.
fn schedule() -> Vec<usize> {
    let mut random = SplitMix64(SEED);
    let mut order: Vec<usize> = (0..ROLL_CALL).map(|_| random.below(SESSIONS)).collect();
    let mut roll_call: Vec<usize> = (0..SESSIONS).collect();
    for i in (1..SESSIONS).rev() {
        roll_call.swap(i, random.below(i + 1));
    }
    order.extend(roll_call);
    order
}

/// 1,000 sessions, each with an identity and traits of its own; every tenth one to be revoked,
/// by each helper in turn. Logout needs a token, so those carry one; the others rotate through
/// token, Bearer and cookie.
fn create_callers(kratos: &KratosStandIn) -> Vec<Caller> {
    const CARRIERS: [Carrier; 3] = [Carrier::Token, Carrier::Bearer, Carrier::Cookie];
    (0..SESSIONS)
        .map(|i| {
            let email = format!("caller-{i}@example.org");
            let session = kratos.session().traits(json!({ "email": email })).create();
            let revocation = (i % 10 == 9).then(|| Revocation::ALL[(i / 10) % 5]);
            let carrier = match revocation {
                Some(Revocation::Logout) if (i / 50) % 2 == 0 => Carrier::Token,
                Some(Revocation::Logout) => Carrier::Bearer,
                _ => CARRIERS[i % 3],
            };
            let companion = revocation
                .filter(|how| how.needs_companion())
                .map(|_| kratos.session().identity(&session.identity_id).create());
            Caller {
                headers: credential_headers(carrier, &session),
                session,
                email,
                carrier,
                revocation,
                companion,
            }
        })
        .collect()
}

/// The handler: the session and identity the extractors give it.
async fn echo(session: KratosSession, identity: KratosIdentity) -> Json<Value> {
    Json(json!({
        "session_id": session.id,
        "identity_id": identity.id,
        "email": identity.traits.to_value()["email"],
    }))
}

/// Serves `/me` behind the layer on `127.0.0.1:0` until the test's runtime ends.
async fn serve(layer: KratosLayer) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let app = Router::new().route("/me", get(echo)).layer(layer);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// One request and its answer, as a client saw them.
struct Exchange {
    caller: usize,
    /// Taken just before the request was handed to the HTTP client: no later than it was sent.
    sent_at: Instant,
    answered_at: Instant,
    status: StatusCode,
    body: String,
}

/// When a session's revocation call began, and when it returned (taken just after, so no
/// earlier than it returned).
#[derive(Clone, Copy, Debug)]
struct Revoked {
    started: Instant,
    returned: Instant,
}

/// What the clients and the revoker share.
struct Load {
    http: reqwest::Client,
    url: String,
    callers: Vec<Caller>,
    schedule: Vec<usize>,
    next: AtomicUsize,
    answered: AtomicUsize,
    midway: Notify,
}

/// One client: takes the next request of the schedule until there are none left.
async fn client(load: Arc<Load>, mut revocations_done: watch::Receiver<bool>) -> Vec<Exchange> {
    let mut exchanges = Vec::new();
    loop {
        let index = load.next.fetch_add(1, Ordering::Relaxed);
        if index >= REQUESTS {
            return exchanges;
        }
        if index >= ROLL_CALL {
            revocations_done
                .wait_for(|done| *done)
                .await
                .expect("the revoker finished");
        }
        let caller = load.schedule[index];
        let sent_at = Instant::now();
        let response = load
            .http
            .get(&load.url)
            .headers(load.callers[caller].headers.clone())
            .send()
            .await
            .unwrap_or_else(|error| panic!("request {index}: {error}"));
        let status = response.status();
        let body = response.text().await.expect("the response body");
        exchanges.push(Exchange {
            caller,
            sent_at,
            answered_at: Instant::now(),
            status,
            body,
        });
        if load.answered.fetch_add(1, Ordering::AcqRel) + 1 == MIDWAY {
            // A stored permit: the revoker wakes even if it is not waiting yet.
            load.midway.notify_one();
        }
    }
}

/// Revokes the chosen sessions one after the other, from midway on, while the clients go on.
async fn revoker(
    load: Arc<Load>,
    sessions: SessionLifecycle,
    done: watch::Sender<bool>,
) -> Vec<Option<Revoked>> {
    load.midway.notified().await;
    let mut revoked = vec![None; SESSIONS];
    for (index, caller) in load.callers.iter().enumerate() {
        let Some(how) = caller.revocation else {
            continue;
        };
        let started = Instant::now();
        revoke(&sessions, caller, how).await;
        revoked[index] = Some(Revoked {
            started,
            returned: Instant::now(),
        });
    }
    done.send_replace(true);
    revoked
}

async fn revoke(sessions: &SessionLifecycle, caller: &Caller, how: Revocation) {
    let victim = &caller.session;
    let companion = || {
        let companion = caller.companion.as_ref().expect("a companion session");
        credential_headers(Carrier::Token, companion)
    };
    let result = match how {
        Revocation::RevokeSession => sessions.revoke_session(&companion(), &victim.id).await,
        Revocation::RevokeOtherSessions => sessions
            .revoke_other_sessions(&companion())
            .await
            .map(|count| assert_eq!(count, 1, "the victim is the companion's only other session")),
        Revocation::DisableSession => sessions.disable_session(&victim.id).await,
        Revocation::RevokeIdentitySessions => {
            sessions.revoke_identity_sessions(&victim.identity_id).await
        }
        Revocation::Logout => sessions.logout(&caller.headers).await,
    };
    result.unwrap_or_else(|error| panic!("{how:?} of session {}: {error}", victim.id));
}

/// Everything wrong with one exchange, if anything.
fn check(exchange: &Exchange, caller: &Caller, revoked: Option<Revoked>) -> Option<String> {
    let who = format!(
        "request for session {} ({:?}, {:?})",
        caller.session.id, caller.carrier, caller.revocation
    );
    match (exchange.status, revoked) {
        (StatusCode::OK, _) => {
            if let Err(mismatch) = caller.check_echo(&exchange.body) {
                return Some(format!("{who} was served another caller: {mismatch}"));
            }
            match revoked {
                Some(revoked) if exchange.sent_at > revoked.returned => Some(format!(
                    "{who} was served though sent {:?} after its revocation returned",
                    exchange.sent_at - revoked.returned
                )),
                _ => None,
            }
        }
        (StatusCode::UNAUTHORIZED, Some(revoked)) if exchange.answered_at > revoked.started => {
            let body: Value = serde_json::from_str(&exchange.body).unwrap_or_default();
            (body["error"]["code"] != 401)
                .then(|| format!("{who}: a 401 that is not the layer's: {}", exchange.body))
        }
        (StatusCode::UNAUTHORIZED, Some(_)) => {
            Some(format!("{who} was refused before its revocation began"))
        }
        (status, _) => Some(format!(
            "{who} got {status} instead of 200: {}",
            exchange.body
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_session_is_served_to_another_caller_or_after_its_revocation_returned() {
    let started = Instant::now();
    let kratos = KratosStandIn::start().await.expect("stand-in");
    let callers = create_callers(&kratos);
    let layer = KratosLayer::builder(kratos.public_url())
        .admin_url(kratos.admin_url())
        .cache_ttl(CACHE_TTL)
        .max_concurrent_lookups(LOOKUP_SLOTS)
        .lookup_queue_timeout(PATIENCE)
        .request_timeout(PATIENCE)
        .connect_timeout(PATIENCE)
        .admin_timeout(PATIENCE)
        .build()
        .expect("layer")
        .required();
    let sessions = layer.lifecycle();
    let addr = serve(layer).await;
    let load = Arc::new(Load {
        // One pooled client for all 64; never a proxy from the environment between it and loopback.
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("HTTP client"),
        url: format!("http://{addr}/me"),
        callers,
        schedule: schedule(),
        next: AtomicUsize::new(0),
        answered: AtomicUsize::new(0),
        midway: Notify::new(),
    });

    let (done, revocations_done) = watch::channel(false);
    let revoker = tokio::spawn(revoker(Arc::clone(&load), sessions, done));
    let mut clients = JoinSet::new();
    for _ in 0..CLIENTS {
        clients.spawn(client(Arc::clone(&load), revocations_done.clone()));
    }
    let run = async {
        let mut exchanges = Vec::with_capacity(REQUESTS);
        while let Some(client) = clients.join_next().await {
            exchanges.extend(client.expect("a client"));
        }
        (exchanges, revoker.await.expect("the revoker"))
    };
    let (exchanges, revoked) = tokio::time::timeout(GUARD, run)
        .await
        .expect("the load ended (a hang, not slowness, trips this)");
    let callers = &load.callers;
    assert_eq!(exchanges.len(), REQUESTS);
    assert_eq!(revoked.iter().flatten().count(), REVOKED);

    // What the clients saw.
    let failures: Vec<String> = exchanges
        .iter()
        .filter_map(|exchange| {
            check(
                exchange,
                &callers[exchange.caller],
                revoked[exchange.caller],
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {REQUESTS} exchanges went wrong; the first:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
    let after_revocation = |index: usize| {
        exchanges
            .iter()
            .filter(|exchange| exchange.caller == index)
            .filter(|exchange| revoked[index].is_some_and(|r| exchange.sent_at > r.returned))
            .count()
    };
    for (index, caller) in callers.iter().enumerate() {
        if caller.revocation.is_some() {
            assert!(
                after_revocation(index) > 0,
                "the roll call asks every revoked session after its revocation"
            );
        }
    }
    let refused = exchanges
        .iter()
        .filter(|exchange| exchange.status == StatusCode::UNAUTHORIZED)
        .count();

    // The companions: the self-service callers keep their sessions, the identity-wide revocation
    // took its companion too.
    let mut companions = 0;
    for caller in callers {
        let (Some(how), Some(companion)) = (caller.revocation, &caller.companion) else {
            continue;
        };
        companions += 1;
        let response = load
            .http
            .get(&load.url)
            .headers(credential_headers(Carrier::Token, companion))
            .send()
            .await
            .expect("companion request");
        let status = response.status();
        let body = response.text().await.expect("companion body");
        if how == Revocation::RevokeIdentitySessions {
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{how:?} companion: {body}"
            );
        } else {
            assert_eq!(status, StatusCode::OK, "{how:?} companion: {body}");
            let echo: Value = serde_json::from_str(&body).expect("JSON");
            assert_eq!(echo["session_id"], companion.id.as_str());
            assert_eq!(echo["identity_id"], caller.session.identity_id.as_str());
            assert_eq!(echo["email"], caller.email.as_str());
        }
    }

    // What Kratos saw. Every live session was asked about once, however many of its requests
    // came at once: the cache and its coalescing held under load.
    let asked_more_than_once: Vec<(&str, usize)> = callers
        .iter()
        .filter(|caller| caller.revocation.is_none())
        .map(|caller| {
            let calls = kratos.calls_for_session(Endpoint::Whoami, &caller.session.id);
            (caller.session.id.as_str(), calls)
        })
        .filter(|(_, calls)| *calls != 1)
        .collect();
    assert!(
        asked_more_than_once.is_empty(),
        "{} live sessions with other than one whoami, e.g. (session, calls): {:?}",
        asked_more_than_once.len(),
        &asked_more_than_once[..asked_more_than_once.len().min(5)]
    );
    // Overall: a first whoami per session; for a revoked session, one per refused request (a 401
    // is not cached) and at most one answered for a call in flight across its revocation; for a
    // companion, the lookup of `revoke_other_sessions` and its check above.
    let whoami = kratos.calls(Endpoint::Whoami);
    assert!(whoami >= SESSIONS, "{whoami} whoami calls");
    let bound = SESSIONS + REVOKED + refused + 2 * companions;
    assert!(whoami <= bound, "{whoami} whoami calls, at most {bound}");

    // Exactly one revocation call per revoked session, to the endpoint of its helper.
    for how in Revocation::ALL {
        let planned: Vec<&Caller> = callers
            .iter()
            .filter(|caller| caller.revocation == Some(how))
            .collect();
        assert_eq!(planned.len(), REVOKED / Revocation::ALL.len());
        assert_eq!(kratos.calls(how.endpoint()), planned.len(), "{how:?}");
        for caller in planned {
            // The stand-in counts a call for the session its credential or path names.
            let about = match how {
                Revocation::RevokeSession | Revocation::RevokeOtherSessions => {
                    &caller.companion.as_ref().expect("companion").id
                }
                Revocation::RevokeIdentitySessions => &caller.session.identity_id,
                Revocation::DisableSession | Revocation::Logout => &caller.session.id,
            };
            assert_eq!(
                kratos.calls_for_session(how.endpoint(), about),
                1,
                "{how:?}"
            );
        }
    }
    // And Kratos agrees on who is revoked: every 401 above was Kratos's answer, not a mix-up.
    for caller in callers {
        let active = kratos
            .session_state(&caller.session.id)
            .is_some_and(|state| state.active);
        assert_eq!(active, caller.revocation.is_none(), "{}", caller.session.id);
    }

    let revocations = revoked.iter().flatten();
    let (first, last) = (
        revocations.clone().map(|r| r.started).min().expect("one"),
        revocations.map(|r| r.returned).max().expect("one"),
    );
    let overlapping = exchanges
        .iter()
        .filter(|exchange| exchange.sent_at < last && exchange.answered_at > first)
        .count();
    println!(
        "{REQUESTS} requests ({refused} refused) over {SESSIONS} sessions from {CLIENTS} \
         clients; {REVOKED} revocations in {:?}, overlapped by {overlapping} requests; \
         {whoami} whoami calls (bound {bound}); {:?} in all",
        last - first,
        started.elapsed()
    );
}
