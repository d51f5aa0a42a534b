//! Deleting one item, the same on both backends: what goes is decided by
//! [`crate::items`] from the messages around the item, read under the conversation's
//! write lock; each backend then deletes and rewrites those rows in the same transaction.

use super::{StoreError, StoredMessage};
use crate::items::{ItemId, Removal, SpanMessage, removal};

/// What deleting `item` changes, from the messages around it (the reader's `item_span`):
/// [`StoreError::ItemNotFound`] when they show no such item.
pub(crate) fn plan(item: ItemId, span: &[StoredMessage]) -> Result<Removal, StoreError> {
    let span: Vec<SpanMessage<'_>> = span
        .iter()
        .map(|stored| SpanMessage {
            sequence_number: stored.sequence_number,
            message: &stored.message,
            call_numbers: stored.call_numbers.as_deref(),
        })
        .collect();
    removal(item, &span).ok_or(StoreError::ItemNotFound)
}

/// How many messages a removal deletes, as the database counts them.
pub(crate) fn deleted_count(removal: &Removal) -> Result<i64, StoreError> {
    i64::try_from(removal.deleted.len()).map_err(|e| StoreError::Corrupt(Box::new(e)))
}
