//! [`ItemId`]: the id of an item, made from the sequence number of its message.

use std::fmt;
use std::str::FromStr;

/// The id of an item: which stored message it comes from, and which part of it.
///
/// Written `msg_<seq>` (a message), `fc_<seq>_<n>` (tool call `n` of an assistant
/// message) and `fco_<seq>` (a tool result). Sequence numbers are never handed out twice
/// in a conversation, so neither is an id, even after deletes and truncations. A call's
/// number `n` is its place in the message's `tool_calls` when the message was stored,
/// from 0, and stays its number when a call before it is deleted: the store keeps the
/// numbers of the calls left beside the message (see [`to_items_numbered`]), so no call
/// ever takes over the id of a deleted one.
///
/// [`to_items_numbered`]: super::to_items_numbered
///
/// ```
/// use tower_conversations::items::ItemId;
///
/// let id: ItemId = "fc_12_1".parse().unwrap();
/// assert_eq!(id, ItemId::FunctionCall { sequence_number: 12, index: 1 });
/// assert_eq!(id.sequence_number(), 12);
/// assert_eq!(id.to_string(), "fc_12_1");
/// assert!("msg_01".parse::<ItemId>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ItemId {
    /// The `message` item of a stored message.
    Message {
        /// The stored message's sequence number.
        sequence_number: i64,
    },
    /// A `function_call` item: one tool call of a stored assistant message.
    FunctionCall {
        /// The stored message's sequence number.
        sequence_number: i64,
        /// The call's number: its place in the message's `tool_calls` when stored, from
        /// 0, kept when calls before it are deleted.
        index: usize,
    },
    /// The `function_call_output` item of a stored `tool` message.
    FunctionCallOutput {
        /// The stored message's sequence number.
        sequence_number: i64,
    },
}

impl ItemId {
    /// The sequence number of the stored message the item comes from.
    ///
    /// ```
    /// use tower_conversations::items::ItemId;
    /// assert_eq!(ItemId::Message { sequence_number: 3 }.sequence_number(), 3);
    /// ```
    pub fn sequence_number(self) -> i64 {
        match self {
            Self::Message { sequence_number }
            | Self::FunctionCall {
                sequence_number, ..
            }
            | Self::FunctionCallOutput { sequence_number } => sequence_number,
        }
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Message { sequence_number } => write!(f, "msg_{sequence_number}"),
            Self::FunctionCall {
                sequence_number,
                index,
            } => write!(f, "fc_{sequence_number}_{index}"),
            Self::FunctionCallOutput { sequence_number } => write!(f, "fco_{sequence_number}"),
        }
    }
}

/// A string that is not an id [`ItemId`] writes.
///
/// ```
/// use tower_conversations::items::{ItemId, NotAnItemId};
/// assert_eq!("msg_x".parse::<ItemId>(), Err(NotAnItemId));
/// ```
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an item id of this store")]
pub struct NotAnItemId;

impl FromStr for ItemId {
    type Err = NotAnItemId;

    /// Reads exactly what [`ItemId`]'s `Display` writes: one spelling per id, so that
    /// `msg_007` or `msg_+7` never name `msg_7`.
    fn from_str(id: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = id.strip_prefix("msg_") {
            return Ok(Self::Message {
                sequence_number: number(rest)?,
            });
        }
        if let Some(rest) = id.strip_prefix("fco_") {
            return Ok(Self::FunctionCallOutput {
                sequence_number: number(rest)?,
            });
        }
        if let Some((sequence, index)) = id.strip_prefix("fc_").and_then(|r| r.split_once('_')) {
            return Ok(Self::FunctionCall {
                sequence_number: number(sequence)?,
                index: number(index)?,
            });
        }
        Err(NotAnItemId)
    }
}

/// A number written in canonical decimal: digits only, no leading zero but for `0`.
fn number<T: FromStr>(digits: &str) -> Result<T, NotAnItemId> {
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return Err(NotAnItemId);
    }
    digits.parse().map_err(|_| NotAnItemId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_reads_back_as_itself() {
        for id in [
            ItemId::Message { sequence_number: 0 },
            ItemId::Message {
                sequence_number: i64::MAX,
            },
            ItemId::FunctionCall {
                sequence_number: 5,
                index: 0,
            },
            ItemId::FunctionCall {
                sequence_number: 5,
                index: 12,
            },
            ItemId::FunctionCallOutput { sequence_number: 9 },
        ] {
            assert_eq!(id.to_string().parse::<ItemId>(), Ok(id));
        }
    }

    #[test]
    fn other_spellings_are_not_ids() {
        for id in [
            "",
            "msg_",
            "msg_-1",
            "msg_+1",
            "msg_01",
            "msg_1x",
            "fc_1",
            "fc_1_",
            "fc__1",
            "fc_1_01",
            "fco_",
            "item_1",
            "MSG_1",
            "msg_99999999999999999999",
        ] {
            assert_eq!(id.parse::<ItemId>(), Err(NotAnItemId), "{id:?}");
        }
    }
}
