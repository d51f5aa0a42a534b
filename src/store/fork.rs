//! Where a fork may be cut, the same on both backends.
//!
//! A fork at `N` copies the source's messages numbered `0..=N`, keeping their numbers, so
//! the fork hands out `N + 1` next. Numbers may have gaps (after a truncation), so what is
//! copied is counted rather than derived from `N`.

use super::StoreError;

/// The rows a fork at `$2` copies from conversation `$1`, and the highest number there.
/// The `CASE` holds no function, so Citus plans it like any other expression.
pub(crate) const FORK_SPAN: &str = "
SELECT count(CASE WHEN sequence_number <= $2 THEN 1 END) AS copied,
       max(sequence_number) AS last_sequence
FROM messages
WHERE conversation_id = $1";

/// How many messages a fork at `at_sequence` copies, given what [`FORK_SPAN`] found:
/// [`StoreError::OutOfRange`] unless `at_sequence` is at most the last stored number
/// (so an empty conversation has no fork point at all).
pub(crate) fn fork_copies(
    at_sequence: i64,
    copied: i64,
    last_sequence: Option<i64>,
) -> Result<i64, StoreError> {
    match last_sequence {
        Some(last) if (0..=last).contains(&at_sequence) => Ok(copied),
        _ => Err(StoreError::OutOfRange),
    }
}

#[cfg(test)]
mod tests {
    use super::fork_copies;
    use crate::store::StoreError;

    #[test]
    fn a_fork_point_lies_between_0_and_the_last_stored_number() {
        assert_eq!(fork_copies(0, 1, Some(4)).ok(), Some(1));
        assert_eq!(fork_copies(4, 3, Some(4)).ok(), Some(3));
        for (at, last) in [(-1, Some(4)), (5, Some(4)), (0, None)] {
            assert!(matches!(
                fork_copies(at, 0, last),
                Err(StoreError::OutOfRange)
            ));
        }
    }
}
