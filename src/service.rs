//! [`ConversationService`]: decides which requests to intercept and delegates.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response};
use tower_service::Service;

use crate::body::ResponseBody;
use crate::future::ResponseFuture;
use crate::intercept::intercept;
use crate::layer::Config;
use crate::request_body::RequestBody;

/// A boxed error, the bound the layer puts on body errors.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The service [`ConversationLayer`](crate::ConversationLayer) wraps around an inner
/// chat-completions service.
///
/// `POST` requests to a chat path take the conversation path (read, decide, splice,
/// capture); every other request is handed to the inner service as it came, with the
/// inner service's own future, so passing through costs no allocation.
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_conversations::ConversationLayer;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # let pool = sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap();
/// let service = ServiceBuilder::new()
///     .layer(ConversationLayer::new(pool))
///     .service(tower::service_fn(|_req: http::Request<tower_conversations::RequestBody<http_body_util::Full<bytes::Bytes>>>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::new())))
///     }));
/// # }
/// ```
#[derive(Clone)]
pub struct ConversationService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> ConversationService<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    fn is_chat_request<B>(&self, request: &Request<B>) -> bool {
        request.method() == Method::POST
            && self
                .config
                .chat_paths
                .iter()
                .any(|path| path == request.uri().path())
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ConversationService<S>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: http_body::Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError> + Send,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if !self.is_chat_request(&request) {
            return ResponseFuture::passthrough(
                self.inner.call(request.map(RequestBody::original)),
            );
        }
        // The clone goes on serving; the instance that was polled ready takes this call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::stateful(Box::pin(intercept(inner, self.config.clone(), request)))
    }
}

impl<S> std::fmt::Debug for ConversationService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationService")
            .finish_non_exhaustive()
    }
}
