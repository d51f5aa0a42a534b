//! What can go wrong in a store, said without SQL text.

use crate::BoxError;

/// Why a [`ConversationStore`](super::ConversationStore) call failed.
///
/// The `Display` text never contains SQL or driver detail, so it can be shown to anyone;
/// the driver's error stays available through [`std::error::Error::source`] for logs.
///
/// ```
/// use tower_conversations::store::StoreError;
/// assert_eq!(StoreError::NotFound.to_string(), "conversation not found");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No conversation with that id for that owner.
    #[error("conversation not found")]
    NotFound,
    /// No item with that id in the conversation (which exists for the owner).
    #[error("item not found")]
    ItemNotFound,
    /// A sequence number that the conversation does not hold.
    #[error("sequence number out of range")]
    OutOfRange,
    /// The database could not be reached (connect, pool, I/O, TLS).
    #[error("conversation store unavailable")]
    Unavailable(#[source] BoxError),
    /// The database answered with an error.
    #[error("conversation store query failed")]
    Query(#[source] BoxError),
    /// A stored row could not be read back (bad JSON, bad uuid, ...).
    #[error("stored conversation data is malformed")]
    Corrupt(#[source] BoxError),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match error {
            E::RowNotFound => StoreError::NotFound,
            E::Io(_)
            | E::Tls(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed
            | E::Protocol(_)
            | E::Configuration(_) => StoreError::Unavailable(Box::new(error)),
            E::Decode(_) | E::ColumnDecode { .. } | E::TypeNotFound { .. } => {
                StoreError::Corrupt(Box::new(error))
            }
            other => StoreError::Query(Box::new(other)),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        match error {
            // An unreachable database is an outage, whatever the migrator was doing.
            sqlx::migrate::MigrateError::Execute(error) => error.into(),
            other => StoreError::Query(Box::new(other)),
        }
    }
}
