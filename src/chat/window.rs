//! The history window: keep the tail of a conversation without orphaning tool results.

use serde_json::Value;

/// Drops messages from the front of a window of history until it starts at a turn
/// boundary: never with a `tool` message whose assistant `tool_calls` were cut off.
pub(crate) fn trim_to_turn_boundary(history: &mut Vec<Value>) {
    todo!()
}
