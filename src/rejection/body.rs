//! The response body: the inner service's, or the rejection's. An inner body served with a
//! session may be watched: it ends when the session does (see [`live`](crate::live)).

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::cache::{Ended, Seed, Watch};

pin_project! {
    /// The response body: the inner service's, or the rejection's.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Rejection { body: Option<Bytes> },
        Live { #[pin] body: B, live: Live },
    }
}

/// A body that ends with its session: watched from the first time it waits (a body that never
/// waits is never watched), ended then with gRPC's UNAUTHENTICATED trailers or a plain end.
struct Live {
    state: LiveState,
    grpc: bool,
}

enum LiveState {
    /// Not waited yet.
    Seed(Seed),
    Watching(Watch),
    /// Not watched: its layer watches nothing (or there is no runtime).
    Unwatched,
    /// The session ended, and so did the body.
    Ended,
}

impl Live {
    fn ended(&self) -> bool {
        matches!(self.state, LiveState::Ended)
    }

    /// The session's end, if it has come.
    fn poll_ended(&mut self, cx: &mut Context<'_>) -> Option<Ended> {
        match &self.state {
            LiveState::Watching(watch) => match watch.poll_ended(cx) {
                Poll::Ready(ended) => Some(ended),
                Poll::Pending => None,
            },
            _ => None,
        }
    }

    /// The body waits: watch it from now on, and tell whether the session has already ended.
    fn watch(&mut self, cx: &mut Context<'_>) -> Option<Ended> {
        if let LiveState::Seed(_) = self.state {
            let LiveState::Seed(seed) = std::mem::replace(&mut self.state, LiveState::Unwatched)
            else {
                return None;
            };
            if let Some(watch) = seed.watch() {
                self.state = LiveState::Watching(watch);
            }
        }
        self.poll_ended(cx)
    }

    /// The body's last frame for a session that ended: gRPC's trailers, else none.
    fn end<E>(&mut self, ended: Ended) -> Poll<Option<Result<Frame<Bytes>, E>>> {
        self.state = LiveState::Ended;
        tracing::debug!(
            reason = ended.reason(),
            "a streamed response ended with its session"
        );
        if !self.grpc {
            return Poll::Ready(None);
        }
        let mut trailers = HeaderMap::with_capacity(2);
        // UNAUTHENTICATED: the session behind the call is gone.
        trailers.insert("grpc-status", HeaderValue::from_static("16"));
        trailers.insert("grpc-message", HeaderValue::from_static(ended.reason()));
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// The inner body of a response with these headers, ended with the session it was served
    /// for. gRPC (not gRPC-Web, whose trailers travel in the body) ends with trailers.
    pub(crate) fn live(body: B, seed: Seed, headers: &HeaderMap) -> Self {
        let grpc = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                value.starts_with("application/grpc") && !value.starts_with("application/grpc-web")
            });
        Self {
            kind: Kind::Live {
                body,
                live: Live {
                    state: LiveState::Seed(seed),
                    grpc,
                },
            },
        }
    }

    pub(crate) fn rejection(body: Bytes) -> Self {
        Self {
            kind: Kind::Rejection {
                body: (!body.is_empty()).then_some(body),
            },
        }
    }
}

impl<B: Body<Data = Bytes>> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Rejection { body } => {
                Poll::Ready(body.take().map(|data| Ok(Frame::data(data))))
            }
            KindProj::Live { body, live } => {
                match live.state {
                    LiveState::Ended => return Poll::Ready(None),
                    LiveState::Unwatched => return body.poll_frame(cx),
                    LiveState::Seed(_) | LiveState::Watching(_) => {}
                }
                if let Some(ended) = live.poll_ended(cx) {
                    return live.end(ended);
                }
                let polled = body.poll_frame(cx);
                if polled.is_pending() {
                    if let Some(ended) = live.watch(cx) {
                        return live.end(ended);
                    }
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Rejection { body } => body.is_none(),
            Kind::Live { body, live } => live.ended() || body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } | Kind::Live { body, .. } => body.size_hint(),
            Kind::Rejection { body } => {
                SizeHint::with_exact(body.as_ref().map_or(0, |data| data.len() as u64))
            }
        }
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "inner",
            Kind::Rejection { .. } => "rejection",
            Kind::Live { .. } => "live",
        };
        f.debug_struct("ResponseBody").field("kind", &kind).finish()
    }
}
