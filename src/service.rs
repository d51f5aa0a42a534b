//! [`ConversationService`]: decides what a request is, and for a chat request runs the
//! conversation path: read, decide the mode, load and splice history, call the inner
//! service, and hand its reply to [`respond`].

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderValue, Method, Request, Response};
use tokio::runtime::Handle;
use tower_service::Service;
use tracing::Instrument;
use uuid::Uuid;

use crate::body::ResponseBody;
use crate::chat::{ChatRequest, ConversationHeader, Mode, decide, trim_to_turn_boundary};
use crate::config::Config;
use crate::error::ApiError;
use crate::future::{ResponseFuture, respond};
use crate::in_place::built_in_box;
use crate::metrics::{self, Backend, LoadOutcome, RequestMode};
use crate::request_body::{RequestBody, declared_length, read_body};
use crate::responses;
use crate::store::{HistoryMessage, TurnTarget};
use crate::turn::PendingTurn;
use crate::{BoxError, CONVERSATION_ID};

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

    /// The instance that was polled ready, for a call the layer makes itself; a clone
    /// goes on serving.
    fn take_inner(&mut self) -> S
    where
        S: Clone,
    {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
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
    ResBody::Error: Send,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let config = self.config.clone();
        let path = request.uri().path();
        if self.is_chat_request(&request) {
            let inner = self.take_inner();
            // Split here, not in `chat`: a future keeps its arguments beside its locals,
            // so a request split inside it would be held twice.
            let (parts, body) = request.into_parts();
            return ResponseFuture::intercepted(built_in_box(|| chat(inner, config, parts, body)));
        }
        if request.method() == Method::POST && config.responses_paths.iter().any(|p| p == path) {
            let inner = self.take_inner();
            return ResponseFuture::intercepted(built_in_box(|| {
                responses::call::create(inner, config, request)
            }));
        }
        if responses::endpoints::route(request.method(), path, &config.responses_paths).is_some() {
            let (parts, _body) = request.into_parts();
            return ResponseFuture::intercepted(Box::pin(async move {
                Ok(responses::endpoints::serve(config, parts).await)
            }));
        }
        ResponseFuture::passthrough(self.inner.call(request.map(RequestBody::original)))
    }
}

impl<S> std::fmt::Debug for ConversationService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationService")
            .finish_non_exhaustive()
    }
}

/// Handles one `POST` to a chat path.
async fn chat<S, ReqBody, ResBody>(
    mut inner: S,
    config: Arc<Config>,
    parts: http::request::Parts,
    body: ReqBody,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: http_body::Body<Data = Bytes>,
    ReqBody::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
{
    let declared = declared_length(&body);
    let bytes = match read_body(body, declared, config.request_body_limit).await {
        Ok(bytes) => bytes,
        Err(error) => {
            metrics::request(RequestMode::Error);
            return Ok(error.into_response());
        }
    };
    // A walk over the few headers a request has costs less than hashing the name for a
    // look-up.
    let header = ConversationHeader::from_values(
        parts
            .headers
            .iter()
            .filter(|(name, _)| **name == CONVERSATION_ID)
            .map(|(_, value)| value.as_bytes()),
    );
    let (id, target, chat) = match decide(config.policy, header, &bytes) {
        Err(error) => {
            metrics::request(RequestMode::Error);
            return Ok(ApiError::from(error).into_response());
        }
        Ok(Mode::New(id, chat)) => (id, TurnTarget::NewConversation, chat),
        Ok(Mode::Continue(id, chat)) => (id, TurnTarget::Existing, chat),
        // Stateless and unreadable requests go on with their original bytes.
        Ok(mode @ (Mode::Stateless | Mode::Passthrough)) => {
            metrics::request(match mode {
                Mode::Stateless => RequestMode::Stateless,
                _ => RequestMode::Passthrough,
            });
            // The mode holds no message: the bytes it borrowed move on, not copied.
            drop(mode);
            let request = Request::from_parts(parts, RequestBody::from_bytes(bytes));
            let response = inner.call(request).await?;
            return Ok(response.map(ResponseBody::forwarded));
        }
    };
    // The conversation path holds far more across its awaits than a stateless request
    // (the history load, the turn, the reply's capture): boxed on its own, it keeps the
    // future that every chat request allocates, and moves, to the size of the stateless
    // path.
    built_in_box(|| converse(inner, &config, parts, &bytes, id, target, chat)).await
}

/// Starts or continues conversation `id` with `chat`: loads and splices its history,
/// calls the inner service, and captures the reply for the store.
async fn converse<S, ReqBody, ResBody>(
    mut inner: S,
    config: &Config,
    mut parts: http::request::Parts,
    bytes: &Bytes,
    id: Uuid,
    target: TurnTarget,
    chat: ChatRequest<'_>,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
{
    // At DEBUG, as tower-http's request spans: an enabled span costs a turn about 8,000
    // instructions. The layer's own warnings and errors name the conversation themselves.
    let span = tracing::debug_span!(
        "conversation",
        "gen_ai.conversation.id" = %id,
        mode = match target {
            TurnTarget::NewConversation => "new",
            TurnTarget::Existing => "continue",
        },
    );
    async {
        let owner = config.owners.resolve(&parts);
        let backend = config.backend;
        let forwarded = match target {
            // A new conversation costs no database round trip before the first byte.
            TurnTarget::NewConversation => {
                metrics::request(RequestMode::New);
                bytes.clone()
            }
            TurnTarget::Existing => {
                let mut history = match load_history(config, backend, &owner, id).await {
                    Ok(history) => history,
                    Err(error) => {
                        metrics::request(RequestMode::Error);
                        return Ok(error.into_response());
                    }
                };
                metrics::request(RequestMode::Continue);
                if config.history_window.is_some() {
                    trim_to_turn_boundary(&mut history);
                }
                let spliced = Bytes::from(chat.splice(&history));
                parts.headers.remove(TRANSFER_ENCODING);
                parts
                    .headers
                    .insert(CONTENT_LENGTH, HeaderValue::from(spliced.len()));
                spliced
            }
        };
        let turn = PendingTurn {
            store: config.store.clone(),
            backend,
            owner,
            id,
            target,
            messages: chat.into_turn_messages(),
            timeout: config.storage_timeout,
            pending: config.writes.start(),
            // A service is always called inside the runtime that the store's driver needs.
            runtime: Handle::current(),
        };
        let request = Request::from_parts(parts, RequestBody::from_bytes(forwarded));
        let response = inner.call(request).await?;
        Ok(respond(response, turn, config.capture_limit).await)
    }
    .instrument(span)
    .await
}

/// Loads the history to splice, within the storage timeout: a pool that cannot reach
/// its database retries until its own acquire timeout (30 s by default in sqlx), and a
/// locked table makes a read wait for as long as the lock is held. The client hears
/// `503` as soon as the layer has waited as long as it would for a write.
async fn load_history(
    config: &Config,
    backend: Backend,
    owner: &str,
    id: Uuid,
) -> Result<Vec<HistoryMessage>, ApiError> {
    let started = Instant::now();
    let load = config.store.load_history(owner, id, config.history_window);
    let loaded = tokio::time::timeout(config.storage_timeout, load).await;
    let outcome = match &loaded {
        Ok(Ok(_)) => LoadOutcome::Loaded,
        Ok(Err(error)) => LoadOutcome::of(error),
        Err(_) => LoadOutcome::Timeout,
    };
    metrics::history_loaded(backend, outcome, started.elapsed());
    match loaded {
        Ok(loaded) => Ok(loaded?),
        Err(_) => {
            tracing::error!(
                "gen_ai.conversation.id" = %id,
                timeout = ?config.storage_timeout,
                "loading the history timed out"
            );
            Err(ApiError::store_unavailable())
        }
    }
}
