//! [`SessionEnd`]: a future that resolves when the request's session ends.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{request::Parts, Request};

use crate::{
    cache::{Ended, Seed, Watch},
    session::KratosSession,
};

/// Resolves, with the reason, when the session the layer served the request with ends:
/// revoked (on this replica or, with a shared cache, on any), or past its `expires_at` or the
/// layer's [`max_session_age`](crate::authenticate::KratosLayerBuilder::max_session_age) without
/// an extension. For a handler's own long-running work: `select!` on it.
///
/// An extractor (feature `axum`) on routes with a required session; for plain hyper or tonic,
/// [`SessionEnd::of`] on the request. Dropping it stops the watch. On a layer built with
/// [`watch_connections(false)`](crate::authenticate::KratosLayerBuilder::watch_connections) it
/// never resolves.
///
/// ```
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use tower_kratos::{live::SessionEnd, KratosLayer, KratosSession};
///
/// /// A report that takes a while: abandoned if the session ends first.
/// async fn report(_session: KratosSession, end: SessionEnd) -> String {
///     tokio::select! {
///         ended = end => format!("stopped: {ended}"),
///         () = tokio::time::sleep(Duration::from_millis(10)) => "the report".to_owned(),
///     }
/// }
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let kratos = kratos_stand_in::KratosStandIn::start().await?;
/// let kratos_layer = KratosLayer::builder(kratos.public_url()).build()?;
/// let app = Router::new().route("/report", get(report)).layer(kratos_layer);
/// # let session = kratos.create_session();
/// # use tower::ServiceExt;
/// # let request = http::Request::get("/report")
/// #     .header("x-session-token", &session.token)
/// #     .body(axum::body::Body::empty())?;
/// # let response = app.oneshot(request).await?;
/// # assert_eq!(response.status(), 200);
/// # Ok(()) }
/// ```
#[must_use = "a SessionEnd does nothing unless polled"]
pub struct SessionEnd {
    /// `None`: not watched (the layer watches no connections), so it never ends.
    watch: Option<Watch>,
}

impl SessionEnd {
    /// The end of the session the layer served this request with: `None` when the request has
    /// no session (no layer, or an optional one let it on without). Call it in the handler:
    /// the request's headers still hold the credential the session is watched with.
    ///
    /// ```
    /// use http::{Request, Response};
    /// use tower_kratos::live::SessionEnd;
    ///
    /// async fn handler(request: Request<()>) -> Response<String> {
    ///     let Some(end) = SessionEnd::of(&request) else {
    ///         return Response::new("no session".to_owned());
    ///     };
    ///     // Keep `end` with the work that must stop with the session, e.g. a WebSocket
    ///     // upgraded with tokio-tungstenite: on `end`, send a close frame (1008, the reason).
    ///     # drop(end);
    ///     Response::new("watched".to_owned())
    /// }
    /// # let _ = handler;
    /// ```
    pub fn of<B>(request: &Request<B>) -> Option<Self> {
        Self::from_headers(request.headers(), request.extensions())
    }

    /// [`SessionEnd::of`] for a request taken apart.
    pub fn of_parts(parts: &Parts) -> Option<Self> {
        Self::from_headers(&parts.headers, &parts.extensions)
    }

    fn from_headers(headers: &http::HeaderMap, extensions: &http::Extensions) -> Option<Self> {
        let session = extensions.get::<KratosSession>()?;
        Some(Self {
            watch: Seed::of_request(session, headers).and_then(Seed::watch),
        })
    }

    /// Whether the session has ended already, without waiting.
    pub fn ended(&self) -> Option<Ended> {
        self.watch.as_ref()?.ended()
    }

    /// Whether the session is watched: `false` on a layer built with
    /// [`watch_connections(false)`](crate::authenticate::KratosLayerBuilder::watch_connections).
    pub fn is_watched(&self) -> bool {
        self.watch.is_some()
    }
}

impl Future for SessionEnd {
    type Output = Ended;

    /// Ready once the session has ended; polled again, ready again with the same reason.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended> {
        match &self.watch {
            Some(watch) => watch.poll_ended(cx),
            None => Poll::Pending,
        }
    }
}

impl fmt::Debug for SessionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionEnd")
            .field("watched", &self.is_watched())
            .field("ended", &self.ended())
            .finish()
    }
}

#[cfg(feature = "axum")]
mod extractor {
    use axum_core::extract::FromRequestParts;
    use http::request::Parts;

    use super::SessionEnd;
    use crate::{
        extract::{from_layer, not_authenticated, SessionRejection},
        session::KratosSession,
    };

    /// On a route whose session is required: as [`KratosSession`]'s extractor, a request
    /// without one is answered with the layer's rejection.
    impl<S: Send + Sync> FromRequestParts<S> for SessionEnd {
        type Rejection = SessionRejection;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Self, Self::Rejection> {
            if from_layer::<KratosSession>(parts)?.is_none() {
                return Err(not_authenticated(parts));
            }
            SessionEnd::of_parts(parts).ok_or_else(|| not_authenticated(parts))
        }
    }
}
