//! Where conversations live: the [`TurnStore`] and [`ConversationStore`] traits and
//! their records.
//!
//! The layer needs two things of storage, and they make the small [`TurnStore`]: load a
//! conversation's history, append a turn. The management API needs the rest, in
//! [`ConversationStore`], which extends it. The layer and the API talk to storage only
//! through these traits, so the store never sees HTTP types and the HTTP code never sees
//! SQL. The crate implements both for [`sqlx::PgPool`] (feature `postgres`) and
//! [`sqlx::SqlitePool`] (feature `sqlite`).
//!
//! An *owner* is a plain string; the empty string is the shared space used when no owner
//! resolver is configured. A conversation is only ever visible to the owner it was
//! created under: every method answers [`StoreError::NotFound`] for another owner's id.
//!
//! Sequence numbers start at 0 and only ever increase within a conversation: each turn
//! takes the next numbers in a row, from a counter kept beside the row count, and a
//! number is never handed out twice, not even after a truncation dropped the message that
//! held it. So there may be gaps; `message_count` is the number of messages stored.
//! The built-in stores also move a conversation's `revision` on at every change to its
//! messages, and check the histories they keep in process against it (see the README's
//! "Storage").

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod batch;
mod error;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod fork;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod history_cache;
pub(crate) mod json_text;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod kept;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod per_pool;
#[cfg(feature = "fuzzing")]
pub(crate) use json_text::json_text;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod read;
mod records;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod removal;
mod responses;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod retention;
#[cfg(feature = "sqlite")]
mod sqlite;
mod text;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod title;

pub use error::StoreError;
#[cfg(feature = "postgres")]
pub use postgres::distribute;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) use records::NotAMessage;
pub use records::{
    Conversation, ConversationDetail, ConversationList, ConversationPage, ConversationUpdate,
    CursorQuery, HistoryMessage, ListQuery, MessagePage, MessageQuery, Metadata, NewConversation,
    NewMessage, Order, StoredMessage,
};
pub use responses::{
    NewResponse, ResponseKey, ResponsePlacement, ResponsePosition, StoredResponse,
};
pub(crate) use text::message_text;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) use title::{title_from, title_of};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::items::ItemId;

/// A boxed store call, as `#[async_trait]` types it: the stores' `TurnStore` methods
/// are written out to build theirs in place (see `crate::in_place`).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) type Call<'a, T> =
    std::pin::Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Implements [`TurnStore`] for a backend's pool with its two functions, `history` and
/// `append` (the trait methods' arguments, the pool first), and its history cache's
/// look-up (`cache`, the pool its argument), written out with the
/// signatures `#[async_trait]` gives the trait's methods so that each call's future is
/// built in its box (see `crate::in_place`): the one place those signatures are spelled.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
macro_rules! turn_store_built_in_place {
    ($pool:ty, $history:path, $append:path, $cache:path) => {
        impl $crate::store::TurnStore for $pool {
            fn load_history<'life0, 'life1, 'async_trait>(
                &'life0 self,
                owner: &'life1 str,
                id: ::uuid::Uuid,
                last: Option<u32>,
            ) -> $crate::store::Call<'async_trait, Vec<$crate::store::HistoryMessage>>
            where
                'life0: 'async_trait,
                'life1: 'async_trait,
                Self: 'async_trait,
            {
                $crate::in_place::built_in_box(|| $history(self, owner, id, last))
            }

            fn append_turn<'life0, 'life1, 'life2, 'async_trait>(
                &'life0 self,
                owner: &'life1 str,
                id: ::uuid::Uuid,
                target: $crate::store::TurnTarget,
                messages: &'life2 [$crate::store::NewMessage],
            ) -> $crate::store::Call<'async_trait, i64>
            where
                'life0: 'async_trait,
                'life1: 'async_trait,
                'life2: 'async_trait,
                Self: 'async_trait,
            {
                $crate::in_place::built_in_box(|| $append(self, owner, id, target, messages))
            }

            fn set_history_cache_limit(&self, bytes: usize) {
                $cache(self).set_limit(bytes);
            }
        }
    };
}
#[cfg(any(feature = "postgres", feature = "sqlite"))]
use turn_store_built_in_place;

/// Where the store records which of its migrations ran. A table of its own rather than
/// sqlx's default `_sqlx_migrations`, so that an application's own sqlx migrations in the
/// same database neither see these as unknown nor are seen as unknown by them.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
const MIGRATIONS_TABLE: &str = "_tower_conversations_migrations";

/// Whether a turn creates its conversation or continues one that exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnTarget {
    /// The conversation row is created in the same transaction as the turn (titled from
    /// the first user message): a new conversation costs no round trip before its reply.
    NewConversation,
    /// The conversation must already exist for the owner, else [`StoreError::NotFound`].
    Existing,
}

/// What the layer needs of storage: a conversation's history, and appending a turn.
///
/// Every method is scoped to an `owner` and answers [`StoreError::NotFound`] when the
/// conversation does not exist *for that owner*.
///
/// # Example
///
/// ```no_run
/// # #[cfg(feature = "sqlite")]
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_conversations::store::{NewMessage, TurnStore, TurnTarget};
/// use serde_json::json;
///
/// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
/// tower_conversations::migrate(&pool).await?;
///
/// let id = uuid::Uuid::now_v7();
/// let turn = vec![
///     NewMessage::new(json!({"role": "user", "content": "Hello"})),
///     NewMessage::new(json!({"role": "assistant", "content": "Hi!"})),
/// ];
/// pool.append_turn("", id, TurnTarget::NewConversation, &turn).await?;
/// assert_eq!(pool.load_history("", id, None).await?.len(), 2);
/// # Ok(()) }
/// ```
#[async_trait]
pub trait TurnStore: Send + Sync + 'static {
    /// The stored messages of a conversation in sequence order, each exactly as stored
    /// (its JSON text untouched, beside its role).
    ///
    /// With `last = Some(n)` only the last `n` messages are returned (still in order);
    /// the caller cuts them at a turn boundary.
    async fn load_history(
        &self,
        owner: &str,
        id: Uuid,
        last: Option<u32>,
    ) -> Result<Vec<HistoryMessage>, StoreError>;

    /// Appends one turn atomically, with consecutive sequence numbers, to a new or an
    /// existing conversation (`target`). Concurrent calls on one conversation never
    /// collide and each turn's messages stay contiguous. Returns the sequence number of
    /// the turn's first message.
    async fn append_turn(
        &self,
        owner: &str,
        id: Uuid,
        target: TurnTarget,
        messages: &[NewMessage],
    ) -> Result<i64, StoreError>;

    /// Bounds the histories this store keeps in process to `bytes` of messages (0: it
    /// keeps none, and reads every history whole). The built-in stores keep, per pool,
    /// each conversation's last history read or written, checked at every read against
    /// the conversation's revision, within 16 MiB by default; the bound applies to every
    /// user of the pool. A store that keeps nothing in process ignores it (the default).
    ///
    /// ```no_run
    /// # #[cfg(feature = "sqlite")]
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_conversations::store::TurnStore;
    /// let pool = sqlx::SqlitePool::connect("sqlite://conversations.db").await?;
    /// pool.set_history_cache_limit(64 << 20);
    /// # Ok(()) }
    /// ```
    fn set_history_cache_limit(&self, bytes: usize) {
        let _ = bytes;
    }
}

/// Storage for conversations and their messages: the [`TurnStore`] the layer uses, and
/// what the management API needs besides.
///
/// Implemented for [`sqlx::PgPool`] and [`sqlx::SqlitePool`]; implement both traits
/// yourself to keep conversations somewhere else. Every method is scoped to an `owner`
/// and answers [`StoreError::NotFound`] when the conversation does not exist *for that
/// owner*.
///
/// # Example
///
/// ```no_run
/// # #[cfg(feature = "sqlite")]
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_conversations::store::{ConversationStore, ListQuery};
///
/// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
/// pool.migrate().await?;
/// let page = pool.list("", &ListQuery::default()).await?;
/// assert_eq!(page.total, 0);
/// # Ok(()) }
/// ```
#[async_trait]
pub trait ConversationStore: TurnStore {
    /// Creates or updates the tables this store needs. Safe to call at every start.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Creates a conversation, optionally seeded with messages.
    async fn create(
        &self,
        owner: &str,
        conversation: &NewConversation,
    ) -> Result<Conversation, StoreError>;

    /// Lists conversations, newest `updated_at` first, with the total before paging.
    /// With `query.search` set, only conversations whose messages match every word.
    /// Paging by offset and counting the total cost time in proportion to the offset and
    /// to the owner's conversations; [`list_by_id`](Self::list_by_id) does not.
    async fn list(&self, owner: &str, query: &ListQuery) -> Result<ConversationList, StoreError>;

    /// A page of conversations by id (creation order), after a cursor: OpenAI's list
    /// paging, stable under concurrent turns and as cheap at any depth. With
    /// `query.search` set, only conversations whose messages match every word, still by
    /// id and without a total, so that a search costs about the same however many
    /// conversations match (see `docs/performance.md`).
    ///
    /// ```no_run
    /// # #[cfg(feature = "sqlite")]
    /// # async fn demo(pool: sqlx::SqlitePool) -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_conversations::store::{ConversationStore, CursorQuery};
    /// let query = CursorQuery { search: Some("invoice".into()), ..CursorQuery::default() };
    /// let first = pool.list_by_id("", &query).await?;
    /// if let (true, Some(last)) = (first.has_more, first.conversations.last()) {
    ///     let query = CursorQuery { after: Some(last.id), ..query };
    ///     let next = pool.list_by_id("", &query).await?;
    /// }
    /// # Ok(()) }
    /// ```
    async fn list_by_id(
        &self,
        owner: &str,
        query: &CursorQuery,
    ) -> Result<ConversationPage, StoreError>;

    /// One conversation with all its messages.
    async fn get(&self, owner: &str, id: Uuid) -> Result<ConversationDetail, StoreError>;

    /// A page of messages by sequence-number cursor.
    async fn messages(
        &self,
        owner: &str,
        id: Uuid,
        query: &MessageQuery,
    ) -> Result<MessagePage, StoreError>;

    /// Changes the title and/or replaces the metadata.
    async fn update(
        &self,
        owner: &str,
        id: Uuid,
        update: &ConversationUpdate,
    ) -> Result<Conversation, StoreError>;

    /// Deletes a conversation and its messages.
    async fn delete(&self, owner: &str, id: Uuid) -> Result<(), StoreError>;

    /// Copies messages `0..=at_sequence` into a new conversation of the same owner.
    /// [`StoreError::OutOfRange`] when `at_sequence` is not a stored sequence number.
    async fn fork(
        &self,
        owner: &str,
        id: Uuid,
        at_sequence: i64,
    ) -> Result<Conversation, StoreError>;

    /// Deletes messages `from_sequence..` and returns how many went.
    async fn truncate(&self, owner: &str, id: Uuid, from_sequence: i64) -> Result<u64, StoreError>;

    /// Deletes one item of OpenAI's conversation items (a view of the messages, see
    /// [`crate::items`]) in one transaction, with what must go along so that the history
    /// stays one a chat request can send: a function call and its output go together, an
    /// assistant message that made several calls is rewritten without the one deleted
    /// (the calls left keep their item ids), and one left with neither calls nor text goes.
    /// Returns the conversation after. `message_count` stays the number of rows; no
    /// sequence number is handed out again. [`StoreError::ItemNotFound`] when the
    /// conversation holds no such item.
    ///
    /// ```no_run
    /// # #[cfg(feature = "sqlite")]
    /// # async fn demo(pool: sqlx::SqlitePool, id: uuid::Uuid) -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_conversations::ConversationStore;
    /// let conversation = pool.delete_item("", id, "fc_3_0".parse()?).await?;
    /// println!("{} messages left", conversation.message_count);
    /// # Ok(()) }
    /// ```
    async fn delete_item(
        &self,
        owner: &str,
        id: Uuid,
        item: ItemId,
    ) -> Result<Conversation, StoreError>;

    /// Deletes every conversation of `owner` with its messages (erasure on request) and
    /// returns how many conversations went. Works in batches of at most 500
    /// conversations, so no lock is held for long however much the owner has.
    ///
    /// ```no_run
    /// # #[cfg(feature = "sqlite")]
    /// # async fn demo(pool: sqlx::SqlitePool) -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_conversations::ConversationStore;
    /// let erased = pool.erase_owner("user-42").await?;
    /// println!("{erased} conversations erased");
    /// # Ok(()) }
    /// ```
    async fn erase_owner(&self, owner: &str) -> Result<u64, StoreError>;

    /// Deletes every conversation, of any owner, not updated since `idle_since`, with its
    /// messages (retention), and returns how many went. In batches, as
    /// [`erase_owner`](Self::erase_owner); a conversation a turn reaches while the purge
    /// runs is kept.
    ///
    /// ```no_run
    /// # #[cfg(feature = "sqlite")]
    /// # async fn demo(pool: sqlx::SqlitePool) -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_conversations::ConversationStore;
    /// let cutoff = chrono::Utc::now() - chrono::Duration::days(30);
    /// let purged = pool.purge_idle(cutoff).await?;
    /// # Ok(()) }
    /// ```
    async fn purge_idle(&self, idle_since: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Stores a response (OpenAI's Responses API) with its turn, in one transaction:
    /// the turn goes where `response.placement` says, and the response is filed under
    /// `response.key`. Answers where the turn landed.
    ///
    /// ```no_run
    /// # #[cfg(feature = "sqlite")]
    /// # async fn demo(pool: sqlx::SqlitePool) -> Result<(), Box<dyn std::error::Error>> {
    /// use serde_json::json;
    /// use tower_conversations::ConversationStore;
    /// use tower_conversations::store::{NewMessage, NewResponse, ResponseKey, ResponsePlacement};
    /// let key = ResponseKey { conversation_id: uuid::Uuid::now_v7(), id: uuid::Uuid::now_v7() };
    /// let turn = [
    ///     NewMessage::new(json!({"role": "user", "content": "Hi"})),
    ///     NewMessage::new(json!({"role": "assistant", "content": "Hello!"})),
    /// ];
    /// let body = json!({"object": "response"});
    /// let response = NewResponse { key, placement: ResponsePlacement::NewConversation, messages: &turn, body: &body };
    /// let position = pool.append_response("", &response).await?;
    /// assert_eq!(position.last_sequence, 1);
    /// # Ok(()) }
    /// ```
    ///
    /// The default keeps no responses: it fails, so a store written before the Responses
    /// API still compiles and its clients are told `storage_failed`.
    async fn append_response(
        &self,
        owner: &str,
        response: &NewResponse<'_>,
    ) -> Result<ResponsePosition, StoreError> {
        let _ = (owner, response);
        Err(StoreError::Query("this store keeps no responses".into()))
    }

    /// A stored response of `owner`; [`StoreError::NotFound`] for an unknown key or
    /// another owner's.
    ///
    /// ```no_run
    /// # #[cfg(feature = "sqlite")]
    /// # async fn demo(pool: sqlx::SqlitePool, key: tower_conversations::store::ResponseKey) -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_conversations::ConversationStore;
    /// let stored = pool.response("", key).await?;
    /// println!("{}", stored.body);
    /// # Ok(()) }
    /// ```
    ///
    /// The default keeps no responses: [`StoreError::NotFound`].
    async fn response(&self, owner: &str, key: ResponseKey) -> Result<StoredResponse, StoreError> {
        let _ = (owner, key);
        Err(StoreError::NotFound)
    }

    /// Deletes a stored response (its turn stays in the conversation);
    /// [`StoreError::NotFound`] for an unknown key or another owner's.
    ///
    /// ```no_run
    /// # #[cfg(feature = "sqlite")]
    /// # async fn demo(pool: sqlx::SqlitePool, key: tower_conversations::store::ResponseKey) -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_conversations::ConversationStore;
    /// pool.delete_response("", key).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// The default keeps no responses: [`StoreError::NotFound`].
    async fn delete_response(&self, owner: &str, key: ResponseKey) -> Result<(), StoreError> {
        let _ = (owner, key);
        Err(StoreError::NotFound)
    }
}

/// Runs the store's migrations: one call at start-up.
///
/// # Example
///
/// ```no_run
/// # #[cfg(feature = "postgres")]
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1/app").await?;
/// tower_conversations::migrate(&pool).await?;
/// # Ok(()) }
/// ```
pub async fn migrate<S: ConversationStore + ?Sized>(store: &S) -> Result<(), StoreError> {
    store.migrate().await
}

/// A shared store is a store: lets `Arc<dyn ConversationStore>` go wherever a pool does.
#[async_trait]
impl<T: TurnStore + ?Sized> TurnStore for std::sync::Arc<T> {
    async fn load_history(
        &self,
        owner: &str,
        id: Uuid,
        last: Option<u32>,
    ) -> Result<Vec<HistoryMessage>, StoreError> {
        (**self).load_history(owner, id, last).await
    }
    async fn append_turn(
        &self,
        owner: &str,
        id: Uuid,
        target: TurnTarget,
        messages: &[NewMessage],
    ) -> Result<i64, StoreError> {
        (**self).append_turn(owner, id, target, messages).await
    }
    fn set_history_cache_limit(&self, bytes: usize) {
        (**self).set_history_cache_limit(bytes);
    }
}

#[async_trait]
impl<T: ConversationStore + ?Sized> ConversationStore for std::sync::Arc<T> {
    async fn migrate(&self) -> Result<(), StoreError> {
        (**self).migrate().await
    }
    async fn create(
        &self,
        owner: &str,
        conversation: &NewConversation,
    ) -> Result<Conversation, StoreError> {
        (**self).create(owner, conversation).await
    }
    async fn list(&self, owner: &str, query: &ListQuery) -> Result<ConversationList, StoreError> {
        (**self).list(owner, query).await
    }
    async fn list_by_id(
        &self,
        owner: &str,
        query: &CursorQuery,
    ) -> Result<ConversationPage, StoreError> {
        (**self).list_by_id(owner, query).await
    }
    async fn get(&self, owner: &str, id: Uuid) -> Result<ConversationDetail, StoreError> {
        (**self).get(owner, id).await
    }
    async fn messages(
        &self,
        owner: &str,
        id: Uuid,
        query: &MessageQuery,
    ) -> Result<MessagePage, StoreError> {
        (**self).messages(owner, id, query).await
    }
    async fn update(
        &self,
        owner: &str,
        id: Uuid,
        update: &ConversationUpdate,
    ) -> Result<Conversation, StoreError> {
        (**self).update(owner, id, update).await
    }
    async fn delete(&self, owner: &str, id: Uuid) -> Result<(), StoreError> {
        (**self).delete(owner, id).await
    }
    async fn fork(
        &self,
        owner: &str,
        id: Uuid,
        at_sequence: i64,
    ) -> Result<Conversation, StoreError> {
        (**self).fork(owner, id, at_sequence).await
    }
    async fn truncate(&self, owner: &str, id: Uuid, from_sequence: i64) -> Result<u64, StoreError> {
        (**self).truncate(owner, id, from_sequence).await
    }
    async fn delete_item(
        &self,
        owner: &str,
        id: Uuid,
        item: ItemId,
    ) -> Result<Conversation, StoreError> {
        (**self).delete_item(owner, id, item).await
    }
    async fn erase_owner(&self, owner: &str) -> Result<u64, StoreError> {
        (**self).erase_owner(owner).await
    }
    async fn purge_idle(&self, idle_since: DateTime<Utc>) -> Result<u64, StoreError> {
        (**self).purge_idle(idle_since).await
    }
    async fn append_response(
        &self,
        owner: &str,
        response: &NewResponse<'_>,
    ) -> Result<ResponsePosition, StoreError> {
        (**self).append_response(owner, response).await
    }
    async fn response(&self, owner: &str, key: ResponseKey) -> Result<StoredResponse, StoreError> {
        (**self).response(owner, key).await
    }
    async fn delete_response(&self, owner: &str, key: ResponseKey) -> Result<(), StoreError> {
        (**self).delete_response(owner, key).await
    }
}
