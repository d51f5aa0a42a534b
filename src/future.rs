//! [`ResponseFuture`]: the future the service returns, and what becomes of the inner
//! service's reply to a stateful request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response};
use http_body::Body;
use pin_project_lite::pin_project;

use crate::CONVERSATION_ID;
use crate::body::{ResponseBody, store_json_reply};
use crate::turn::PendingTurn;

/// A boxed future for the intercepted path, which awaits the store as well as the inner
/// service.
pub(crate) type InterceptedFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, E>> + Send>>;

pin_project! {
    /// The future of [`ConversationService`](crate::ConversationService): the inner
    /// service's own future for requests the layer passes through (no allocation), or
    /// the chat path that loads history, calls the inner service and wraps the reply.
    pub struct ResponseFuture<F, B: Body, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B: Body, E> {
        Passthrough { #[pin] future: F },
        Intercepted { future: InterceptedFuture<B, E> },
    }
}

impl<F, B: Body, E> ResponseFuture<F, B, E> {
    pub(crate) fn passthrough(future: F) -> Self {
        Self {
            kind: Kind::Passthrough { future },
        }
    }

    pub(crate) fn intercepted(future: InterceptedFuture<B, E>) -> Self {
        Self {
            kind: Kind::Intercepted { future },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Passthrough { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(ResponseBody::forwarded)))
            }
            KindProj::Intercepted { future } => future.as_mut().poll(cx),
        }
    }
}

/// How a reply can be read.
enum ReplyKind {
    Stream,
    Json,
    /// Compressed, or neither SSE nor JSON: passed through and not stored.
    Unreadable(&'static str),
}

impl ReplyKind {
    fn of(headers: &HeaderMap) -> Self {
        let encoded = headers
            .get(CONTENT_ENCODING)
            .is_some_and(|encoding| !encoding.as_bytes().eq_ignore_ascii_case(b"identity"));
        if encoded {
            return Self::Unreadable(
                "the reply is compressed; place compression outside the layer",
            );
        }
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if essence == "text/event-stream" {
            Self::Stream
        } else if essence == "application/json" || essence.ends_with("+json") {
            Self::Json
        } else {
            Self::Unreadable("the reply is neither text/event-stream nor JSON")
        }
    }
}

/// Wraps the inner service's response to a stateful request.
///
/// Non-2xx responses pass untouched (no header, nothing stored); 2xx ones get
/// `X-Conversation-ID` and have their reply captured and `turn` stored.
pub(crate) async fn respond<B>(
    response: Response<B>,
    turn: PendingTurn,
    capture_limit: usize,
) -> Response<ResponseBody<B>>
where
    B: Body<Data = Bytes> + Send + 'static,
{
    if !response.status().is_success() {
        return response.map(ResponseBody::forwarded);
    }
    let (mut parts, body) = response.into_parts();
    if let Ok(value) = HeaderValue::try_from(turn.id.to_string()) {
        parts.headers.insert(CONVERSATION_ID, value);
    }
    match ReplyKind::of(&parts.headers) {
        ReplyKind::Stream => {
            // The layer holds back and may add bytes: the length is no longer known.
            parts.headers.remove(CONTENT_LENGTH);
            let body = ResponseBody::captured(body, turn, capture_limit);
            Response::from_parts(parts, body)
        }
        ReplyKind::Json => store_json_reply(parts, body, turn, capture_limit).await,
        ReplyKind::Unreadable(why) => {
            tracing::warn!("gen_ai.conversation.id" = %turn.id, why, "the turn is not stored");
            Response::from_parts(parts, ResponseBody::forwarded(body))
        }
    }
}
