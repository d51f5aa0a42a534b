//! The history window: keep the tail of a conversation without orphaning tool results.

use crate::store::HistoryMessage;

/// Drops messages from the front of a window of history until it starts at a turn
/// boundary: never with a `tool` message whose assistant `tool_calls` were cut off.
///
/// Upstream APIs reject a `tool` message that does not follow the assistant message
/// that called the tool, so a window cut inside a run of tool results loses the whole
/// run rather than sending half of it.
pub(crate) fn trim_to_turn_boundary(history: &mut Vec<HistoryMessage>) {
    let orphans = history
        .iter()
        .position(|message| message.role() != "tool")
        .unwrap_or(history.len());
    history.drain(..orphans);
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn stored(messages: Vec<Value>) -> Vec<HistoryMessage> {
        messages
            .iter()
            .map(|message| HistoryMessage::from_value(message).expect("an object"))
            .collect()
    }

    #[test]
    fn a_window_starting_with_tool_results_drops_them() {
        let mut history = stored(vec![
            json!({"role": "tool", "tool_call_id": "a", "content": "1"}),
            json!({"role": "tool", "tool_call_id": "b", "content": "2"}),
            json!({"role": "assistant", "content": "done"}),
            json!({"role": "user", "content": "next"}),
        ]);
        trim_to_turn_boundary(&mut history);
        assert_eq!(
            history,
            stored(vec![
                json!({"role": "assistant", "content": "done"}),
                json!({"role": "user", "content": "next"}),
            ])
        );
    }

    #[test]
    fn a_window_starting_at_a_turn_boundary_is_kept_whole() {
        let whole = stored(vec![
            json!({"role": "assistant", "tool_calls": [{"id": "a"}]}),
            json!({"role": "tool", "tool_call_id": "a", "content": "1"}),
            json!({"role": "assistant", "content": "done"}),
        ]);
        let mut history = whole.clone();
        trim_to_turn_boundary(&mut history);
        assert_eq!(history, whole);
    }

    #[test]
    fn a_window_of_only_tool_results_becomes_empty() {
        let mut history = stored(vec![json!({"role": "tool", "tool_call_id": "a"})]);
        trim_to_turn_boundary(&mut history);
        assert!(history.is_empty());

        let mut empty = Vec::new();
        trim_to_turn_boundary(&mut empty);
        assert!(empty.is_empty());
    }
}
