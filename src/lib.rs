//! Server-side conversation memory for any OpenAI-compatible chat-completions service,
//! as one Tower layer.
//!
//! ```no_run
//! use axum::{Router, routing::post};
//! use tower_conversations::ConversationLayer;
//!
//! # async fn chat() -> &'static str { "" }
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = sqlx::SqlitePool::connect("sqlite://conversations.db?mode=rwc").await?;
//! tower_conversations::migrate(&pool).await?;
//! let app: Router = Router::new()
//!     .route("/v1/chat/completions", post(chat))
//!     .layer(ConversationLayer::new(pool));
//! # Ok(()) }
//! ```
//!
//! Clients then send only their new messages; the layer keeps the history in a
//! database, splices it into each request, captures the streamed reply and stores the
//! turn. The response to every stateful request carries `X-Conversation-ID`; send it
//! back to continue the conversation.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
mod body;
mod chat;
mod config;
mod error;
mod future;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod layer;
mod owner;
mod request_body;
mod service;
mod sse;
pub mod store;
mod turn;

pub use api::ConversationApi;
pub use body::ResponseBody;
pub use chat::ModePolicy;
pub use config::{
    DEFAULT_CAPTURE_LIMIT, DEFAULT_CHAT_PATH, DEFAULT_REQUEST_BODY_LIMIT, DEFAULT_STORAGE_TIMEOUT,
};
pub use error::ApiError;
pub use future::ResponseFuture;
pub use layer::ConversationLayer;
pub use owner::OwnerResolver;
pub use request_body::RequestBody;
pub use service::ConversationService;
pub use store::{ConversationStore, StoreError, TurnStore, TurnTarget, migrate};

/// The header that names a conversation, on requests and on stateful responses.
pub const CONVERSATION_ID_HEADER: &str = "x-conversation-id";

/// Any error a body or a store can end with; the one spelling the crate uses.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
