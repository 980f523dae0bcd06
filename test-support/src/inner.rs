//! The inner services behind the layer: [`echo_session`] (the session it was given, echoed back)
//! and [`Recorder`] (what each request carried, kept for the test to read).

use std::{
    convert::Infallible,
    sync::{Arc, Mutex, PoisonError},
};

use http::{Request, Response, StatusCode};
use kratos_stand_in::KratosStandIn;
use tower::{util::BoxCloneService, Service, ServiceBuilder};
use tower_kratos::{rejection::ResponseBody, KratosLayer, KratosSession, Outcome};

use super::default_layer;

/// The response header in which [`echo_session`] reports the identity of the session it was
/// given.
pub const IDENTITY_HEADER: &str = "x-test-identity-id";

/// The layer in front of [`echo_session`], boxed so tests can clone it into tasks.
pub type App = BoxCloneService<Request<String>, Response<ResponseBody<String>>, Infallible>;

/// The handler behind the layer: 200 with the session id as the body and the identity id in
/// [`IDENTITY_HEADER`]; 500 if it was called without a session (which the required layer must
/// never allow).
pub async fn echo_session(request: Request<String>) -> Result<Response<String>, Infallible> {
    let response = match request.extensions().get::<KratosSession>() {
        Some(session) => Response::builder()
            .header(IDENTITY_HEADER, session.identity_id().unwrap_or_default())
            .body(session.id.clone()),
        None => Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body("the handler ran without a session".to_owned()),
    };
    Ok(response.expect("a valid response"))
}

/// `layer` in front of [`echo_session`].
pub fn app(layer: KratosLayer) -> App {
    BoxCloneService::new(ServiceBuilder::new().layer(layer).service_fn(echo_session))
}

/// [`default_layer`] for this stand-in in front of [`echo_session`].
pub fn default_app(kratos: &KratosStandIn) -> App {
    app(default_layer(kratos))
}

/// What one request carried into the inner service.
#[derive(Clone, Debug)]
pub struct Seen {
    pub session: Option<KratosSession>,
    pub outcome: Option<Outcome>,
}

/// An inner service that answers 200 `inner` and records the extensions each request carried.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    /// A recorder that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The service to wrap in the layer.
    pub fn service(
        &self,
    ) -> impl Service<Request<String>, Response = Response<String>, Error = Infallible, Future: Send>
           + Clone
           + Send
           + std::fmt::Debug
           + 'static {
        let seen = Arc::clone(&self.seen);
        tower::service_fn(move |request: Request<String>| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Seen {
                        session: request.extensions().get::<KratosSession>().cloned(),
                        outcome: request.extensions().get::<Outcome>().cloned(),
                    });
                Ok::<_, Infallible>(Response::new("inner".to_owned()))
            }
        })
    }

    /// Everything that reached the inner service, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The only request that reached the inner service.
    pub fn only(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(
            seen.len(),
            1,
            "exactly one request reaches the inner service"
        );
        seen.into_iter().next().expect("one")
    }
}
