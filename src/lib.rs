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
//! let layer = ConversationLayer::new(pool);
//! let app: Router = Router::new()
//!     .route("/v1/chat/completions", post(chat))
//!     .nest_service("/v1/conversations", layer.api())
//!     .layer(layer);
//! # Ok(()) }
//! ```
//!
//! Clients then send only their new messages; the layer keeps the history in a
//! database, splices it into each request, captures the streamed reply and stores the
//! turn. The response to every stateful request carries `X-Conversation-ID`; send it
//! back to continue the conversation. [`ConversationLayer::api`] serves the conversations
//! over REST.
//!
//! # What the layer does with a request
//!
//! It intercepts `POST` requests to the chat paths (default `/v1/chat/completions`) and
//! reads their JSON body; it answers OpenAI's Responses API (default `/v1/responses`:
//! create, retrieve, delete, input items) itself, by translating to a chat completion at
//! the first chat path (see [`ConversationLayer::responses_paths`]). Every other request
//! reaches the inner service untouched: same method, URI, headers and body, not read, not
//! buffered.
//!
//! | request | what happens |
//! |---|---|
//! | a `system` or `developer` message, no `X-Conversation-ID` | stateless: forwarded with its original bytes, response untouched, nothing stored, no header |
//! | a system/developer message **and** `X-Conversation-ID` | `400 conversation_id_with_system_message` |
//! | no system message, no header (or an empty one, or `new`) | new conversation: a fresh UUIDv7; body forwarded with its original bytes; response carries `X-Conversation-ID` |
//! | no system message, header is the id of a conversation this caller owns | continue: stored history spliced in front of the request's messages; response carries the header |
//! | header is not a UUID, or sent more than once | `400 invalid_conversation_id` |
//! | header is a UUID that does not exist, or belongs to another owner | `404 conversation_not_found` |
//! | body is not JSON or has no `messages` array of messages | forwarded untouched; with the header: `400 invalid_request` |
//! | body over the limit (default 32 MiB) | `413 request_too_large` |
//! | history cannot be loaded (database down or slow) | `503 conversation_store_unavailable`; the cause goes to the log only |
//!
//! With [`ModePolicy::Header`] the header alone decides. Errors the layer answers itself
//! use the OpenAI envelope ([`ApiError`]).
//!
//! # The Responses API
//!
//! `POST /v1/responses` is OpenAI's Responses API with server-side state
//! (`previous_response_id`, `conversation`, `store`), answered over the inner
//! chat-completions service: the request is translated into a chat completion and the
//! reply back into OpenAI's response object or its streamed events. A chain of responses
//! is stored as a conversation, so the same store serves chat completions with
//! `X-Conversation-ID`, the Conversations API and the Responses API. A response (and
//! `response.completed` when streamed) is sent only once stored; a failed write is told
//! as `"metadata": {"storage_failed": "true"}`. The README lists the fields translated and
//! those refused with `400`.
//!
//! # What it does with the reply
//!
//! Only `2xx` replies to stateful requests are captured; anything else passes through
//! untouched and nothing is stored. A streamed reply (`text/event-stream`) reaches the
//! client frame by frame as the same bytes, while a copy is assembled into the assistant
//! message; `data: [DONE]` is held back until the turn is stored, and when storing fails
//! or times out one last chunk with `"metadata": {"storage_failed": true}` comes first. So
//! a client that sees `[DONE]` without `storage_failed` knows its next request sees the
//! turn. A JSON reply is read whole, stored, and marked `storage_failed` the same way when
//! storing fails.
//!
//! # Where to place it
//!
//! - *Inside* any compression layer, so that it sees identity-encoded replies: a
//!   compressed reply passes through and is not stored. A proxy in front of a real
//!   upstream should ask for `Accept-Encoding: identity` on chat calls.
//! - *Inside* your authentication layer, so that the [`OwnerResolver`] can read what
//!   authentication put in the request's extensions; give the same resolver to the
//!   management API (or build it with [`ConversationLayer::api`]).
//! - At shutdown, after the server stopped accepting, await
//!   [`ConversationLayer::wait_for_pending_writes`] so that turns still being stored are
//!   not cut off.
//!
//! # Logs and traces
//!
//! The layer reports through [`tracing`](https://docs.rs/tracing). What goes wrong with a
//! conversation (a turn not stored, a history not loaded in time, a reply over the
//! capture limit) is a `WARN` or `ERROR` event with the field `gen_ai.conversation.id`.
//! Each stateful chat request also runs in a `DEBUG` span `conversation` (fields
//! `gen_ai.conversation.id` and `mode`), as tower-http's request spans are `DEBUG`: an
//! enabled span costs a turn about 8,000 instructions under `tracing-subscriber`'s
//! `fmt`, some 7 % of what a new PostgreSQL turn costs the proxy. A filter such as
//! `info,tower_conversations=debug` turns it on.
//!
//! # Storage
//!
//! [`sqlx::PgPool`] (feature `postgres`) and [`sqlx::SqlitePool`] (feature `sqlite`)
//! implement the store traits; run [`migrate`] once at start-up. On the request path the
//! layer calls only the two methods of [`TurnStore`]; [`ConversationStore`] adds what the
//! management API needs.
//!
//! On SQLite the writes of one process to a database file go through one connection
//! of the store's own, opened with the pool's connect options (the pool's
//! `after_connect` hook does not run on it), in addition to the pool's
//! `max_connections`, kept from write to write; it closes one to two minutes after the
//! last write, and when the pool closes.
//! SQLite drops a connection's page cache whenever another connection wrote the file, so
//! one writer keeps it warm, and a write never waits for one of the pool's connections.
//! A history read goes to that connection too while no write is under way (a read that
//! finds one under way goes to the pool): the pages the last turns wrote are in its
//! cache, where a pool's connection would read each of them from the file again.
//!
//! A turn of a question and its reply written alone (the usual turn when turns do not
//! overlap) skips sqlx's worker thread: it is written on the runtime thread that stored
//! it, through a second connection of the store's own opened beside that one (with
//! `rusqlite`, which links the same SQLite), whose `synchronous` and `foreign_keys` it
//! copies. It never waits there: it is used only when a commit does not sync the disk (WAL,
//! as the migrations set, and `synchronous` `NORMAL` or `OFF`: set
//! [`SqliteSynchronous::Normal`](sqlx::sqlite::SqliteSynchronous::Normal) on the pool's
//! options, as the example proxy does), it never checkpoints (the store's other commits
//! do), a turn of over 64 KiB of text, or one that finds the file's write lock taken,
//! goes through sqlx as before, and pools whose options name a VFS, open the file
//! read-only or immutable, or lock it exclusively never use it. It saves a turn two
//! hand-offs between threads, about eight context switches at a model's pace. History
//! reads made while no write is under way go to that connection too, on the runtime
//! thread: it holds the pages the last turns wrote.
//!
//! Each pool keeps in process the history it last read or wrote of each conversation,
//! with the conversation's revision (a column every change the store makes to its
//! messages moves on), within 16 MiB of messages, least recently used out first. A
//! history read sends the revision held and the database sends the messages only when
//! the row no longer has it, so a continued turn whose last turn went through the same
//! process reads one row; a turn the store writes on top of the history it holds extends
//! it. Messages changed by hand must move `conversations.revision` on too (see the
//! README's "Storage"). On SQLite not even that row is read while nothing but this
//! process's own turns was committed to the file since one of them left the history as
//! held: the header of the file's WAL index, which every commit rewrites, says so.
//!
//! A pool built with `test_before_acquire(false)` (the example proxy's, which pings only
//! a connection idle for over a second) has store calls that ended in good order leave
//! their connection for the next call rather than give it back to the pool, for up to a
//! second from the moment a call took it from the pool: PostgreSQL's one-statement calls
//! (a turn, a history read, most management reads) and SQLite's history reads made
//! while a write is under way. sqlx
//! tests every connection given back, with a round trip to the server or to the SQLite
//! connection's worker thread: one of the two round trips a PostgreSQL turn would
//! otherwise cost. The pool's `before_acquire` and `after_release` hooks therefore run
//! once a second for a busy connection, not at every call; a connection the server closed
//! within that second fails the one call that meets it; at most half the pool's
//! `max_connections` are kept (none of a pool of one), and
//! [`Pool::close`](sqlx::Pool::close) gives them back at once. A call that failed or was
//! cancelled gives its connection back to the pool, which tests it, as before. A pool
//! that tests every connection it hands out (sqlx's default) keeps none.
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
mod in_place;
pub mod items;
mod layer;
pub mod metrics;
mod owner;
mod request_body;
mod responses;
mod service;
mod sse;
pub mod store;
#[cfg(test)]
mod strategies;
mod swar;
mod turn;
mod wake_flag;

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
pub use responses::{DEFAULT_RESPONSES_PATH, MaxTokensField};
pub use service::ConversationService;
#[cfg(feature = "postgres")]
pub use store::distribute;
pub use store::{ConversationStore, StoreError, TurnStore, TurnTarget, migrate};

/// The header that names a conversation, on requests and on stateful responses.
pub const CONVERSATION_ID_HEADER: &str = "x-conversation-id";

/// [`CONVERSATION_ID_HEADER`] as a header name, made once: a header looked up, set or
/// removed by a `&str` name has the name parsed and checked again each time (600
/// instructions a stateful response).
pub(crate) const CONVERSATION_ID: http::HeaderName =
    http::HeaderName::from_static(CONVERSATION_ID_HEADER);

/// Any error a body or a store can end with; the one spelling the crate uses.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
