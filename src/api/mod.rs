//! The management API: list, search, read, page, rename, delete, fork and truncate
//! conversations over REST (contract section 8), as a plain tower `Service`.
//!
//! | request | answer |
//! |---|---|
//! | `GET /?limit=50&offset=0&q=words` | `200 {"conversations": [summary...], "total", "limit", "offset"}`, newest `updated_at` first |
//! | `GET /?after=ID&limit=20&order=desc&q=words` | `200 {"object": "list", "data": [summary...], "first_id", "last_id", "has_more"}`: by id (creation order), no `total`; chosen when `after` or `order` is given |
//! | `POST /` `{"title"?, "metadata"?, "messages"?}` or `{"metadata"?, "items"?}` | `201` summary (up to 20 Responses input items, stored as chat messages) |
//! | `DELETE /?all=true` | `200 {"object": "conversation.erasure", "deleted": N}`: every conversation of the caller; `403 owner_required` without an owner |
//! | `GET /{id}` | `200` summary plus `"messages"` |
//! | `GET /{id}/messages?limit=20&after=SEQ&order=asc` | `200 {"data": [message...], "has_more"}` |
//! | `PATCH /{id}` or `POST /{id}` `{"title"?, "metadata"?}` | `200` summary (`"metadata": null` clears it) |
//! | `DELETE /{id}` | `200 {"id", "object": "conversation.deleted", "deleted": true}` |
//! | `POST /{id}/fork` `{"at_sequence": N}` | `201` summary of the copy of messages `0..=N` |
//! | `DELETE /{id}/messages?from_sequence=N` | `200 {"id", "deleted_messages": K}` |
//! | `GET /{id}/items?after=ITEM&limit=20&order=desc` | `200 {"object": "list", "data": [item...], "first_id", "last_id", "has_more"}` |
//! | `POST /{id}/items` `{"items": [1 to 20]}` | `200` the same list shape, the items as stored, appended in one transaction |
//! | `GET /{id}/items/{item_id}` | `200` one item, `404 item_not_found` for any id the conversation does not hold |
//! | `DELETE /{id}/items/{item_id}` | `200` summary after the delete; a function call and its output go together ([`crate::items`] says what else) |
//!
//! Items are OpenAI's view of the stored chat messages ([`crate::items`]); their ids
//! (`msg_<seq>`, `fc_<seq>_<n>`, `fco_<seq>`) come from sequence numbers, which are
//! never handed out twice, so an item id is never reused. `first_id` and `last_id` are
//! `null` on an empty page.
//!
//! A summary is OpenAI's conversation object `{"id", "object": "conversation",
//! "created_at", "metadata"}` with `title`, `updated_at` and `message_count` beside it;
//! every time is in unix seconds, as OpenAI writes them. A message is the
//! stored message object plus `sequence_number`, `created_at`, `metadata`, and
//! `reasoning` / `reasoning_events` when there are any; messages in that shape are also
//! accepted when creating a conversation, so an exported conversation imports unchanged.
//!
//! Decisions where the contract is silent: a blank `q` lists everything; unknown query
//! parameters are ignored but unknown body fields are rejected; a body field set to
//! `null` counts as absent; titles may not be blank; limits count characters, not bytes;
//! request bodies are read up to 8 MiB.
//!
//! Every error is the OpenAI envelope: `400 invalid_conversation_id` for an id that is
//! not a UUID, `404 conversation_not_found` for an unknown id or another owner's, `400
//! invalid_request` with `param` for a bad parameter or field, `404 not_found` for an
//! unknown path, `405 method_not_allowed` with `Allow`, `413 request_too_large`, and
//! `503 conversation_store_unavailable` when the store fails (the cause goes to the log).
//!
//! `docs/openapi.yaml` in the repository is all of this as an OpenAPI 3.1 document, which
//! CI checks the example proxy against with schemathesis (`scripts/schemathesis.sh`).

mod handlers;
pub(crate) mod items;
pub(crate) mod query;
mod request;
mod response;
mod routes;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower_service::Service;

use crate::BoxError;
use crate::owner::OwnerResolver;
use crate::store::ConversationStore;
use handlers::Call;
use query::QueryParams;

/// The management endpoints as a tower [`Service`], mountable under `/v1/conversations`.
///
/// It answers paths relative to where it is mounted (`/`, `/{id}`, `/{id}/messages`,
/// `/{id}/fork`), as a router that nests it passes them; served without a router,
/// [`served_at`](Self::served_at) names the prefix it strips itself. Each request acts for
/// the owner its [`OwnerResolver`] names and sees only that owner's conversations. See
/// the [module docs](self) for the endpoints and their JSON.
///
/// # Example
///
/// ```
/// use axum::{Router, body::Body};
/// use http::{Request, StatusCode};
/// use tower::ServiceExt;
/// use tower_conversations::ConversationApi;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # // One connection, so that every query sees the same in-memory database.
/// # let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1)
/// #     .connect("sqlite::memory:").await?;
/// tower_conversations::migrate(&pool).await?;
/// let app: Router = Router::new().nest_service("/v1/conversations", ConversationApi::new(pool));
///
/// let create = Request::post("/v1/conversations").body(Body::from(r#"{"title": "Trip"}"#))?;
/// let response = app.oneshot(create).await?;
/// assert_eq!(response.status(), StatusCode::CREATED);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ConversationApi {
    store: Arc<dyn ConversationStore>,
    owners: OwnerResolver,
    served_at: Option<Arc<str>>,
}

impl ConversationApi {
    /// The API over `store`, everyone in one shared space.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let pool = sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap();
    /// let api = tower_conversations::ConversationApi::new(pool);
    /// # }
    /// ```
    pub fn new(store: impl ConversationStore) -> Self {
        Self {
            store: Arc::new(store),
            owners: OwnerResolver::default(),
            served_at: None,
        }
    }

    /// Serves the API at `path` (`"/v1/conversations"` as a rule) on a server with no
    /// router in front, such as hyper's `serve_connection`: the API strips `path` itself
    /// and answers `404` to anything outside it. Leave it unset when a router nests the
    /// API (axum's `nest_service`), which strips the path before the API sees it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let pool = sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap();
    /// // Requests reach it as `/v1/conversations/{id}`, with nothing stripped.
    /// let api = tower_conversations::ConversationApi::new(pool).served_at("/v1/conversations");
    /// # }
    /// ```
    pub fn served_at(mut self, path: &str) -> Self {
        self.served_at = Some(Arc::from(path.trim_end_matches('/')));
        self
    }

    /// Who each request acts for; use the same resolver as the layer (or build both
    /// with [`ConversationLayer::api`](crate::ConversationLayer::api)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let pool = sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap();
    /// use tower_conversations::{ConversationApi, OwnerResolver};
    /// let api = ConversationApi::new(pool).owner_resolver(OwnerResolver::new(|parts| {
    ///     parts.headers.get("x-user").and_then(|v| v.to_str().ok()).map(str::to_owned)
    /// }));
    /// # }
    /// ```
    pub fn owner_resolver(mut self, owners: OwnerResolver) -> Self {
        self.owners = owners;
        self
    }
}

impl<B> Service<Request<B>> for ConversationApi
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let store = self.store.clone();
        let owners = self.owners.clone();
        let served_at = self.served_at.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let endpoint =
                match routes::route(&parts.method, parts.uri.path(), served_at.as_deref()) {
                    Ok(endpoint) => endpoint,
                    Err(unrouted) => return Ok(unrouted.into_response()),
                };
            let owner = owners.resolve(&parts);
            let call = Call {
                store: store.as_ref(),
                owner: &owner,
                query: QueryParams::parse(parts.uri.query()),
                body,
            };
            Ok(handlers::handle(endpoint, call)
                .await
                .unwrap_or_else(|error| error.into_response()))
        })
    }
}

impl std::fmt::Debug for ConversationApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationApi")
            .field("owners", &self.owners)
            .field("served_at", &self.served_at)
            .finish_non_exhaustive()
    }
}
