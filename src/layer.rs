//! [`ConversationLayer`]: what to intercept and how, as a cheap-to-clone configuration.

use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use crate::api::ConversationApi;
use crate::chat::ModePolicy;
use crate::config::Config;
use crate::metrics::Backend;
use crate::owner::OwnerResolver;
use crate::responses::MaxTokensField;
use crate::service::ConversationService;
use crate::store::{ConversationStore, TurnStore};

/// Gives an OpenAI-compatible chat-completions service server-side conversation memory.
///
/// Chat-completion requests (`POST` to one of the chat paths) are read, given their
/// stored history and answered with `X-Conversation-ID`; the streamed or JSON reply is
/// captured and stored as the turn's assistant message. Every other request reaches the
/// inner service untouched. See the crate docs for the full behaviour table.
///
/// Cloning is cheap: the configuration is shared.
///
/// # Example
///
/// ```no_run
/// use axum::{Router, routing::post};
/// use tower_conversations::ConversationLayer;
///
/// # async fn chat() -> &'static str { "" }
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = sqlx::SqlitePool::connect("sqlite://conversations.db?mode=rwc").await?;
/// tower_conversations::migrate(&pool).await?;
///
/// let app: Router = Router::new()
///     .route("/v1/chat/completions", post(chat))
///     .layer(ConversationLayer::new(pool));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ConversationLayer {
    pub(crate) config: Arc<Config>,
}

impl ConversationLayer {
    /// A layer storing conversations in `store`: a [`sqlx::PgPool`], a
    /// [`sqlx::SqlitePool`], or any [`ConversationStore`].
    pub fn new(store: impl ConversationStore) -> Self {
        let backend = Backend::of(&store);
        Self {
            config: Arc::new(Config::new(Arc::new(store), backend)),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(Arc::make_mut(&mut self.config));
        self
    }

    /// The paths whose `POST` requests are chat completions (default
    /// `/v1/chat/completions`). Replaces the list.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let pool = sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap();
    /// let layer = tower_conversations::ConversationLayer::new(pool)
    ///     .chat_paths(["/v1/chat/completions", "/openai/v1/chat/completions"]);
    /// # }
    /// ```
    pub fn chat_paths<I, P>(self, paths: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let paths = paths.into_iter().map(Into::into).collect();
        self.with(|c| c.chat_paths = paths)
    }

    /// The paths of OpenAI's Responses API (default `/v1/responses`): `POST` creates a
    /// response through the first chat path, and `GET`/`DELETE` `{path}/{id}` and `GET
    /// {path}/{id}/input_items` read and delete stored ones. Replaces the list; an empty
    /// list turns the Responses API off (its requests then reach the inner service).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let pool = sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap();
    /// let layer = tower_conversations::ConversationLayer::new(pool)
    ///     .responses_paths(["/v1/responses", "/openai/v1/responses"]);
    /// # }
    /// ```
    pub fn responses_paths<I, P>(self, paths: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let paths = paths.into_iter().map(Into::into).collect();
        self.with(|c| c.responses_paths = paths)
    }

    /// Which chat field a response's `max_output_tokens` becomes (default
    /// `max_completion_tokens`; [`MaxTokensField::MaxTokens`] for servers that know only
    /// `max_tokens`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let pool = sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap();
    /// use tower_conversations::{ConversationLayer, MaxTokensField};
    /// let layer = ConversationLayer::new(pool).max_tokens_field(MaxTokensField::MaxTokens);
    /// # }
    /// ```
    pub fn max_tokens_field(self, field: MaxTokensField) -> Self {
        self.with(|c| c.max_tokens_field = field)
    }

    /// How a request's mode is decided (default [`ModePolicy::SystemMessage`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let pool = sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap();
    /// use tower_conversations::{ConversationLayer, ModePolicy};
    /// let layer = ConversationLayer::new(pool).policy(ModePolicy::Header);
    /// # }
    /// ```
    pub fn policy(self, policy: ModePolicy) -> Self {
        self.with(|c| c.policy = policy)
    }

    /// Who each request acts for (default: one shared space). Give the same resolver to
    /// the management API, or build it with [`ConversationLayer::api`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let pool = sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap();
    /// use tower_conversations::{ConversationLayer, OwnerResolver};
    /// let layer = ConversationLayer::new(pool).owner_resolver(OwnerResolver::new(|parts| {
    ///     parts.headers.get("x-user").and_then(|v| v.to_str().ok()).map(str::to_owned)
    /// }));
    /// # }
    /// ```
    pub fn owner_resolver(self, owners: OwnerResolver) -> Self {
        self.with(|c| c.owners = owners)
    }

    /// Largest chat request body read, in bytes (default 32 MiB); larger ones get `413`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let pool = sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap();
    /// let layer = tower_conversations::ConversationLayer::new(pool).request_body_limit(1 << 20);
    /// # }
    /// ```
    pub fn request_body_limit(self, bytes: usize) -> Self {
        self.with(|c| c.request_body_limit = bytes)
    }

    /// Largest reply captured for storage, in bytes (default 16 MiB). A longer reply
    /// still reaches the client whole, is not stored, and ends with `storage_failed`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let pool = sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap();
    /// let layer = tower_conversations::ConversationLayer::new(pool).capture_limit(4 << 20);
    /// # }
    /// ```
    pub fn capture_limit(self, bytes: usize) -> Self {
        self.with(|c| c.capture_limit = bytes)
    }

    /// How long the database may take (default 5 s): storing a turn longer than this
    /// ends the reply with `storage_failed`, and loading a conversation's history longer
    /// than this answers `503 conversation_store_unavailable`. It also bounds waiting for
    /// a pool connection, so a database that is down costs a client at most this long,
    /// whatever the pool's own acquire timeout.
    ///
    /// A write abandoned at the timeout may still reach the database later (the server
    /// finishes a statement it already received); it then lands whole, never in part.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let pool = sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap();
    /// use std::time::Duration;
    /// let layer = tower_conversations::ConversationLayer::new(pool)
    ///     .storage_timeout(Duration::from_secs(2));
    /// # }
    /// ```
    pub fn storage_timeout(self, timeout: Duration) -> Self {
        self.with(|c| c.storage_timeout = timeout)
    }

    /// Bounds the histories the store keeps in process to `bytes` of messages (default
    /// 16 MiB per pool; 0 keeps none): see [`TurnStore::set_history_cache_limit`], which
    /// this calls on the layer's store at once. The bound is the pool's, shared by every
    /// layer and store call on it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let pool = sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap();
    /// let layer = tower_conversations::ConversationLayer::new(pool).history_cache_limit(4 << 20);
    /// # }
    /// ```
    pub fn history_cache_limit(self, bytes: usize) -> Self {
        self.config.store.set_history_cache_limit(bytes);
        self
    }

    /// Splice only the last `messages` stored messages (default: all), cut at a turn
    /// boundary so that no `tool` message loses the assistant message it answers.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let pool = sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap();
    /// let layer = tower_conversations::ConversationLayer::new(pool).history_window(40);
    /// # }
    /// ```
    pub fn history_window(self, messages: u32) -> Self {
        self.with(|c| c.history_window = Some(messages))
    }

    /// Waits until every turn this layer (and its clones) took on is stored or given up:
    /// call it at shutdown, after the server stopped accepting and its connections
    /// finished, so that no turn is cut off by the process exiting.
    ///
    /// A turn counts from the moment its request is forwarded, not only while its write
    /// runs: a server may report a connection closed a moment before it drops that
    /// connection's response body, and that drop is what stores a partial turn.
    ///
    /// ```no_run
    /// # async fn demo(layer: tower_conversations::ConversationLayer) {
    /// layer.wait_for_pending_writes().await;
    /// # }
    /// ```
    pub async fn wait_for_pending_writes(&self) {
        self.config.writes.idle().await;
    }

    /// The management API over the same store and owner resolver, so the two can never
    /// disagree about who sees what.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let pool = sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap();
    /// use axum::Router;
    /// let layer = tower_conversations::ConversationLayer::new(pool);
    /// let app: Router = Router::new().nest_service("/v1/conversations", layer.api());
    /// # }
    /// ```
    pub fn api(&self) -> ConversationApi {
        ConversationApi::new(self.config.store.clone()).owner_resolver(self.config.owners.clone())
    }
}

impl<S> Layer<S> for ConversationLayer {
    type Service = ConversationService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConversationService::new(inner, self.config.clone())
    }
}

impl std::fmt::Debug for ConversationLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.config;
        f.debug_struct("ConversationLayer")
            .field("chat_paths", &c.chat_paths)
            .field("responses_paths", &c.responses_paths)
            .field("max_tokens_field", &c.max_tokens_field)
            .field("policy", &c.policy)
            .field("owners", &c.owners)
            .field("request_body_limit", &c.request_body_limit)
            .field("capture_limit", &c.capture_limit)
            .field("storage_timeout", &c.storage_timeout)
            .field("history_window", &c.history_window)
            .finish_non_exhaustive()
    }
}
