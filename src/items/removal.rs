//! [`removal`]: what deleting one item changes in the stored messages.
//!
//! An item is a view of a stored chat message, so deleting one deletes or rewrites
//! messages, and must leave a history the next chat request can send upstream: every
//! `tool` message answers a call of the assistant message before it, and every call is
//! answered. So:
//!
//! - a `function_call` item and its `function_call_output` go together, whichever of the
//!   two is deleted: the call leaves its message's `tool_calls`, and the `tool` messages
//!   answering it (those after the message, before the next message of another role,
//!   whose `tool_call_id` is the call's id) are deleted;
//! - the calls left keep their numbers, and so their item ids (see [`ItemId`]);
//! - an assistant message left with no call loses its `tool_calls` field, and is deleted
//!   whole when it showed no `message` item (no text, no refusal: it only called tools);
//! - the `message` item of an assistant message that also calls functions is its text:
//!   deleting it sets `content` to null and drops `refusal`, and the calls stay;
//! - deleting any other `message` item deletes its message, and for an assistant message
//!   the `tool` messages answering its calls (calls that are not functions, which have no
//!   item of their own).
//!
//! A tool result whose call is nowhere before it is deleted alone.

use serde_json::Value;

use super::ItemId;
use super::view::{call_number, function_calls, to_items_numbered};

/// A stored message as [`removal`] reads it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SpanMessage<'a> {
    pub(crate) sequence_number: i64,
    pub(crate) message: &'a Value,
    pub(crate) call_numbers: Option<&'a [u32]>,
}

/// A message rewritten by a removal.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Rewritten {
    pub(crate) sequence_number: i64,
    pub(crate) message: Value,
    /// The numbers of the calls left, or `None` when they are their places again.
    pub(crate) call_numbers: Option<Vec<u32>>,
}

/// What a removal changes: messages deleted, and at most one rewritten.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Removal {
    pub(crate) deleted: Vec<i64>,
    pub(crate) rewritten: Option<Rewritten>,
}

/// What deleting `item` changes, given the span of messages around it: the message of
/// the item, or for a tool result the nearest message before it that is not a `tool`
/// message, then the `tool` messages that follow that one, in order. `None` when the
/// span holds no such item.
pub(crate) fn removal(item: ItemId, span: &[SpanMessage<'_>]) -> Option<Removal> {
    let target = span
        .iter()
        .find(|m| m.sequence_number == item.sequence_number())?;
    let id = item.to_string();
    let shown = to_items_numbered(target.sequence_number, target.message, target.call_numbers);
    if !shown.iter().any(|shown| shown["id"] == id.as_str()) {
        return None;
    }
    let removal = match item {
        ItemId::FunctionCall { index, .. } => {
            let place = function_calls(target.message, target.call_numbers)
                .iter()
                .position(|(number, _)| *number == index)
                .and_then(|nth| nth_call_place(target, nth))?;
            without_call(target, place, span)?
        }
        ItemId::FunctionCallOutput { .. } => {
            let call_id = target.message["tool_call_id"].as_str().unwrap_or_default();
            let place = span
                .first()
                .filter(|first| first.sequence_number < target.sequence_number)
                .and_then(|anchor| {
                    let calls = anchor.message["tool_calls"].as_array()?;
                    let place = calls.iter().position(|call| call["id"] == call_id)?;
                    Some((*anchor, place))
                });
            match place {
                Some((anchor, place)) if anchor.message["role"] == "assistant" => {
                    without_call(&anchor, place, span)?
                }
                _ => Removal {
                    deleted: vec![target.sequence_number],
                    rewritten: None,
                },
            }
        }
        ItemId::Message { .. } => {
            let has_function_calls =
                !function_calls(target.message, target.call_numbers).is_empty();
            if target.message["role"] == "assistant" && has_function_calls {
                let mut message = target.message.clone();
                if let Some(fields) = message.as_object_mut() {
                    fields.insert("content".to_owned(), Value::Null);
                    fields.remove("refusal");
                }
                Removal {
                    deleted: Vec::new(),
                    rewritten: Some(Rewritten {
                        sequence_number: target.sequence_number,
                        message,
                        call_numbers: target.call_numbers.map(<[u32]>::to_vec),
                    }),
                }
            } else {
                let mut deleted = vec![target.sequence_number];
                deleted.extend(answers(target, span, |_| true));
                Removal {
                    deleted,
                    rewritten: None,
                }
            }
        }
    };
    Some(removal)
}

/// The place in `tool_calls` of the `nth` function call of `message`.
fn nth_call_place(message: &SpanMessage<'_>, nth: usize) -> Option<usize> {
    message.message["tool_calls"]
        .as_array()?
        .iter()
        .enumerate()
        .filter(|(_, call)| call["type"] == "function")
        .nth(nth)
        .map(|(place, _)| place)
}

/// Removes the call at `place` of `message` with the tool messages answering it.
fn without_call(
    message: &SpanMessage<'_>,
    place: usize,
    span: &[SpanMessage<'_>],
) -> Option<Removal> {
    let calls = message.message["tool_calls"].as_array()?;
    let call_id = &calls.get(place)?["id"];
    let mut deleted: Vec<i64> = answers(message, span, |id| id == call_id).collect();
    let numbers: Vec<u32> = (0..calls.len())
        .filter(|&at| at != place)
        .map(|at| u32::try_from(call_number(message.call_numbers, at)).unwrap_or(u32::MAX))
        .collect();
    let mut left = message.message.clone();
    let shows_message = to_items_numbered(message.sequence_number, message.message, None)
        .first()
        .is_some_and(|first| first["type"] == "message");
    if numbers.is_empty() && !shows_message {
        deleted.insert(0, message.sequence_number);
        return Some(Removal {
            deleted,
            rewritten: None,
        });
    }
    if let Some(fields) = left.as_object_mut() {
        if numbers.is_empty() {
            fields.remove("tool_calls");
        } else if let Some(Value::Array(calls)) = fields.get_mut("tool_calls") {
            calls.remove(place);
        }
    }
    // Numbers equal to the places again need nothing kept.
    let places = numbers.iter().enumerate().all(|(at, &n)| n as usize == at);
    Some(Removal {
        deleted,
        rewritten: Some(Rewritten {
            sequence_number: message.sequence_number,
            message: left,
            call_numbers: (!places).then_some(numbers),
        }),
    })
}

/// The `tool` messages after `message` in the span answering one of its calls whose id
/// `wanted` accepts.
fn answers<'s>(
    message: &SpanMessage<'_>,
    span: &'s [SpanMessage<'_>],
    wanted: impl Fn(&Value) -> bool + 's,
) -> impl Iterator<Item = i64> + 's {
    let ids: Vec<Value> = message.message["tool_calls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .map(|call| call["id"].clone())
                .filter(|id| wanted(id))
                .collect()
        })
        .unwrap_or_default();
    let after = message.sequence_number;
    span.iter()
        .filter(move |m| m.sequence_number > after && m.message["role"] == "tool")
        .filter(move |m| {
            ids.iter()
                .any(|id| !id.is_null() && *id == m.message["tool_call_id"])
        })
        .map(|m| m.sequence_number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(id: &str) -> Value {
        json!({"id": id, "type": "function", "function": {"name": "f", "arguments": "{}"}})
    }

    fn tool(id: &str) -> Value {
        json!({"role": "tool", "tool_call_id": id, "content": "r"})
    }

    /// An assistant message at 3 calling c1 and c2, answered at 4 and 5, then a user at 6.
    fn span_of(assistant: &Value, rest: &[Value]) -> Vec<(i64, Value)> {
        std::iter::once(assistant.clone())
            .chain(rest.iter().cloned())
            .enumerate()
            .map(|(n, m)| (3 + n as i64, m))
            .collect()
    }

    fn plan(item: &str, messages: &[(i64, Value)], numbers: Option<&[u32]>) -> Option<Removal> {
        let span: Vec<SpanMessage<'_>> = messages
            .iter()
            .map(|(sequence_number, message)| SpanMessage {
                sequence_number: *sequence_number,
                message,
                call_numbers: (*sequence_number == 3).then_some(numbers).flatten(),
            })
            .collect();
        removal(item.parse().unwrap(), &span)
    }

    fn two_calls(content: Value) -> Vec<(i64, Value)> {
        let assistant = json!({"role": "assistant", "content": content, "tool_calls": [call("c1"), call("c2")]});
        span_of(&assistant, &[tool("c1"), tool("c2")])
    }

    #[test]
    fn deleting_one_of_two_calls_rewrites_the_message_and_keeps_the_other_calls_number() {
        let removal = plan("fc_3_0", &two_calls(Value::Null), None).unwrap();
        assert_eq!(removal.deleted, [4]);
        let rewritten = removal.rewritten.unwrap();
        assert_eq!(rewritten.message["tool_calls"], json!([call("c2")]));
        assert_eq!(rewritten.call_numbers, Some(vec![1]));
        let span = two_calls(Value::Null);
        let mut left = span.clone();
        left[0].1 = rewritten.message;
        assert!(
            plan("fc_3_0", &left, Some(&[1])).is_none(),
            "fc_3_0 is gone"
        );
        assert_eq!(plan("fc_3_1", &left, Some(&[1])).unwrap().deleted, [3, 5]);
    }

    #[test]
    fn deleting_a_tool_result_deletes_its_call_too() {
        let removal = plan("fco_5", &two_calls(Value::Null), None).unwrap();
        assert_eq!(removal.deleted, [5]);
        let rewritten = removal.rewritten.unwrap();
        assert_eq!(rewritten.message["tool_calls"], json!([call("c1")]));
        assert_eq!(rewritten.call_numbers, None, "call 0 is still at place 0");
    }

    #[test]
    fn the_last_call_of_a_message_without_text_takes_the_message_with_it() {
        let assistant = json!({"role": "assistant", "content": null, "tool_calls": [call("c1")]});
        let span = span_of(&assistant, &[tool("c1")]);
        assert_eq!(
            plan("fc_3_0", &span, None).unwrap(),
            Removal {
                deleted: vec![3, 4],
                rewritten: None
            }
        );
        assert_eq!(plan("fco_4", &span, None).unwrap().deleted, [3, 4]);
    }

    #[test]
    fn the_last_call_of_a_message_with_text_leaves_the_text() {
        let assistant =
            json!({"role": "assistant", "content": "Let me look.", "tool_calls": [call("c1")]});
        let removal = plan("fc_3_0", &span_of(&assistant, &[tool("c1")]), None).unwrap();
        assert_eq!(removal.deleted, [4]);
        assert_eq!(
            removal.rewritten.unwrap().message,
            json!({"role": "assistant", "content": "Let me look."})
        );
    }

    #[test]
    fn the_text_of_a_message_that_calls_functions_goes_and_its_calls_stay() {
        let removal = plan("msg_3", &two_calls(json!("Checking.")), None).unwrap();
        assert!(removal.deleted.is_empty());
        let message = removal.rewritten.unwrap().message;
        assert_eq!(message["content"], Value::Null);
        assert_eq!(message["tool_calls"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn other_messages_go_whole() {
        let span = vec![(3, json!({"role": "user", "content": "hi"}))];
        assert_eq!(plan("msg_3", &span, None).unwrap().deleted, [3]);
        let orphan = vec![
            (3, json!({"role": "user", "content": "hi"})),
            (4, tool("c9")),
        ];
        assert_eq!(
            plan("fco_4", &orphan, None).unwrap().deleted,
            [4],
            "no call to take along"
        );
    }

    #[test]
    fn items_the_span_does_not_show_are_not_found() {
        for item in ["msg_3", "fc_3_2", "fco_3", "msg_4", "fc_4_0", "msg_9"] {
            assert_eq!(plan(item, &two_calls(Value::Null), None), None, "{item}");
        }
    }
}
