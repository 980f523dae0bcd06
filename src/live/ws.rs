//! axum WebSockets that close with their session (feature `ws`): [`WebSocketUpgrade`] in place
//! of axum's, and the [`WebSocket`] it hands your callback.

use std::{fmt, future::Future};

use axum::{
    extract::ws::{self, close_code, CloseFrame, Message},
    response::{IntoResponse, Response},
};
use axum_core::extract::FromRequestParts;
use http::request::Parts;

use super::SessionEnd;
use crate::cache::Ended;

/// axum's [`WebSocketUpgrade`](ws::WebSocketUpgrade), on a route with a required session: the
/// socket it upgrades to is closed with code 1008 (policy violation) and the reason ("session
/// revoked", "session expired") when the session ends. Without a session the request is
/// answered with the layer's rejection, as [`KratosSession`](crate::KratosSession)'s extractor
/// does; a request that is no WebSocket upgrade, with axum's answer.
///
/// ```
/// use axum::{extract::ws::Message, response::Response, routing::get, Router};
/// use tower_kratos::{live::{WebSocket, WebSocketUpgrade}, KratosLayer};
///
/// async fn echo(upgrade: WebSocketUpgrade) -> Response {
///     upgrade.on_upgrade(|mut socket: WebSocket| async move {
///         // `recv` ends with `None` once the session has ended and the close frame is sent.
///         while let Some(Ok(message)) = socket.recv().await {
///             if let Message::Text(text) = message {
///                 if socket.send(Message::Text(text)).await.is_err() {
///                     break;
///                 }
///             }
///         }
///     })
/// }
///
/// # fn main() -> Result<(), tower_kratos::BuildError> {
/// let kratos = KratosLayer::builder("http://127.0.0.1:4433").build()?;
/// let app: Router = Router::new().route("/live/ws", get(echo)).layer(kratos);
/// # let _ = app;
/// # Ok(()) }
/// ```
pub struct WebSocketUpgrade {
    upgrade: ws::WebSocketUpgrade,
    end: SessionEnd,
}

impl fmt::Debug for WebSocketUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketUpgrade")
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // The session first: an upgrade without one is the layer's to answer.
        let end = SessionEnd::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let upgrade = ws::WebSocketUpgrade::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self { upgrade, end })
    }
}

impl WebSocketUpgrade {
    /// Finishes the upgrade; `callback` gets the socket once it is open. As axum's
    /// [`on_upgrade`](ws::WebSocketUpgrade::on_upgrade).
    pub fn on_upgrade<C, Fut>(self, callback: C) -> Response
    where
        C: FnOnce(WebSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let end = self.end;
        self.upgrade
            .on_upgrade(move |socket| callback(WebSocket::new(socket, end)))
    }

    /// axum's upgrade, to set what it offers (subprotocols, buffer and message sizes).
    ///
    /// ```
    /// # use axum::response::Response;
    /// # use tower_kratos::live::WebSocketUpgrade;
    /// async fn chat(upgrade: WebSocketUpgrade) -> Response {
    ///     upgrade
    ///         .configure(|upgrade| upgrade.protocols(["chat"]).max_message_size(64 * 1024))
    ///         .on_upgrade(|_socket| async {})
    /// }
    /// # let _ = chat;
    /// ```
    pub fn configure(
        mut self,
        configure: impl FnOnce(ws::WebSocketUpgrade) -> ws::WebSocketUpgrade,
    ) -> Self {
        self.upgrade = configure(self.upgrade);
        self
    }
}

/// axum's [`WebSocket`](ws::WebSocket), closed with code 1008 (policy violation) and the
/// reason when its session ends: [`recv`](Self::recv) sends the close frame and returns `None`,
/// [`send`](Self::send) sends it and fails. Waiting in `recv` (directly or in a `select!`)
/// closes it the moment the session ends; a socket only sent to closes on its next send.
pub struct WebSocket {
    socket: ws::WebSocket,
    end: SessionEnd,
    closed: Option<Ended>,
}

impl fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocket")
            .field("end", &self.end)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// The error [`WebSocket::send`] fails with once the session has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionEnded(pub Ended);

impl fmt::Display for SessionEnded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the WebSocket was closed: {}", self.0)
    }
}

impl std::error::Error for SessionEnded {}

impl WebSocket {
    fn new(socket: ws::WebSocket, end: SessionEnd) -> Self {
        Self {
            socket,
            end,
            closed: None,
        }
    }

    /// The next message; `None` once the socket is closed, by the peer or because the session
    /// ended (the close frame sent first).
    pub async fn recv(&mut self) -> Option<Result<Message, axum::Error>> {
        if self.closed.is_some() {
            return None;
        }
        tokio::select! {
            biased;
            ended = &mut self.end => {
                self.close(ended).await;
                None
            }
            message = self.socket.recv() => message,
        }
    }

    /// Sends a message, unless the session has ended: then the close frame is sent instead and
    /// this fails with [`SessionEnded`].
    pub async fn send(&mut self, message: Message) -> Result<(), axum::Error> {
        if let Some(ended) = self.closed.or_else(|| self.end.ended()) {
            self.close(ended).await;
            return Err(axum::Error::new(SessionEnded(ended)));
        }
        self.socket.send(message).await
    }

    /// Why the socket was closed for its session, once it was.
    pub fn closed_for(&self) -> Option<Ended> {
        self.closed
    }

    /// The session's end, to wait on alongside other work (`select!`).
    pub fn session_end(&mut self) -> &mut SessionEnd {
        &mut self.end
    }

    /// axum's socket and the session's end, for code that needs the socket itself (a split
    /// into sender and receiver): closing it when `SessionEnd` resolves is then yours.
    pub fn into_parts(self) -> (ws::WebSocket, SessionEnd) {
        (self.socket, self.end)
    }

    async fn close(&mut self, ended: Ended) {
        if self.closed.replace(ended).is_some() {
            return;
        }
        let frame = CloseFrame {
            code: close_code::POLICY,
            reason: ended.reason().into(),
        };
        // The peer may be gone already: the socket is over either way.
        let _ = self.socket.send(Message::Close(Some(frame))).await;
        tracing::debug!(
            reason = ended.reason(),
            "a WebSocket was closed with its session"
        );
    }
}
