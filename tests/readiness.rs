//! The tower contract with the inner service: the layer calls only an instance it polled ready,
//! on every path (a cache hit and a request without a credential call it at once; a miss calls
//! it after the whoami answer), and a clone it keeps for later is polled before its own call.
//!
//! The inner service here enforces that contract the way `tower::limit::ConcurrencyLimit` does:
//! a call to an instance that was not polled ready since its last call is answered 500 and
//! counted, so a test fails on the assertion, not on a panic inside the layer's future.

use test_support as support;

use std::{
    convert::Infallible,
    future::{ready, Ready},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response, StatusCode};
use kratos_stand_in::{Endpoint, KratosStandIn};
use support::{default_layer, get, with_token};
use tower::{Layer, Service, ServiceExt};

/// Answers 200 only when this instance was polled ready since its last call.
#[derive(Debug)]
struct StrictInner {
    polled: bool,
    calls: Arc<AtomicUsize>,
    unpolled_calls: Arc<AtomicUsize>,
}

impl Clone for StrictInner {
    fn clone(&self) -> Self {
        // A clone has not been polled: readiness belongs to the instance, as with a permit.
        Self {
            polled: false,
            calls: Arc::clone(&self.calls),
            unpolled_calls: Arc::clone(&self.unpolled_calls),
        }
    }
}

impl Service<Request<String>> for StrictInner {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.polled = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<String>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let status = if std::mem::take(&mut self.polled) {
            StatusCode::OK
        } else {
            self.unpolled_calls.fetch_add(1, Ordering::SeqCst);
            StatusCode::INTERNAL_SERVER_ERROR
        };
        let mut response = Response::new(String::new());
        *response.status_mut() = status;
        ready(Ok(response))
    }
}

/// Waits for `service` to be ready and calls it: the response future, not yet polled.
async fn call<S: Service<Request<String>>>(service: &mut S, request: Request<String>) -> S::Future
where
    S::Error: std::fmt::Debug,
{
    service.ready().await.expect("ready").call(request)
}

#[tokio::test]
async fn the_inner_service_is_called_only_after_it_was_polled_ready() {
    let kratos = KratosStandIn::start().await.expect("stand-in");
    kratos.set_latency(Duration::from_millis(50));
    let alice = kratos.create_session();
    let bob = kratos.create_session();
    let layer = default_layer(&kratos);
    let calls = Arc::new(AtomicUsize::new(0));
    let unpolled_calls = Arc::new(AtomicUsize::new(0));
    let mut service = layer.optional().layer(StrictInner {
        polled: false,
        calls: Arc::clone(&calls),
        unpolled_calls: Arc::clone(&unpolled_calls),
    });

    // A miss (alice) waits for whoami; meanwhile the same service instance takes a request
    // without a credential, which it decides at once.
    let miss = call(&mut service, with_token("/", &alice)).await;
    let anonymous = call(&mut service, get("/", &[]))
        .await
        .await
        .expect("response");
    assert_eq!(anonymous.status(), StatusCode::OK);
    assert_eq!(miss.await.expect("response").status(), StatusCode::OK);

    // Hits on the same instance, then a miss (bob) and a hit interleaved.
    for _ in 0..3 {
        let hit = call(&mut service, with_token("/", &alice))
            .await
            .await
            .expect("response");
        assert_eq!(hit.status(), StatusCode::OK);
    }
    let miss = call(&mut service, with_token("/", &bob)).await;
    let hit = call(&mut service, with_token("/", &alice))
        .await
        .await
        .expect("response");
    assert_eq!(hit.status(), StatusCode::OK);
    assert_eq!(miss.await.expect("response").status(), StatusCode::OK);

    assert_eq!(calls.load(Ordering::SeqCst), 7, "every request reached it");
    assert_eq!(
        unpolled_calls.load(Ordering::SeqCst),
        0,
        "called without poll_ready"
    );
    assert_eq!(
        kratos.calls(Endpoint::Whoami),
        2,
        "alice and bob, once each"
    );
}
