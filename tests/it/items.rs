//! Items as a view of stored chat messages (contract section 11): what each message shape
//! looks like as items, and that items convert back to the same messages.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use tower_conversations::items::{ItemId, to_items, to_messages};

/// Every message shape the layer stores, numbered as a conversation with gaps would be.
fn stored_conversation() -> Vec<(i64, Value)> {
    let call = |id: &str, name: &str| json!({"id": id, "type": "function", "function": {"name": name, "arguments": "{\"city\":\"Tōkyō\"}"}});
    vec![
        (0, json!({"role": "system", "content": "You are terse."})),
        (
            1,
            json!({"role": "developer", "content": "Answer in German."}),
        ),
        (
            2,
            json!({"role": "user", "content": "Wie spät ist es? 🚀 \"quoted\"\nnewline"}),
        ),
        (
            3,
            json!({"role": "user", "content": [
                {"type": "text", "text": "What is on this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
            ]}),
        ),
        (
            4,
            json!({"role": "user", "content": [
                {"type": "text", "text": "and this file"},
                {"type": "file", "file": {"file_id": "file-1", "filename": "a.pdf"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
            ]}),
        ),
        (5, json!({"role": "assistant", "content": "A cat."})),
        (
            9,
            json!({"role": "assistant", "content": null, "tool_calls": [call("call_1", "clock"), call("call_2", "weather")]}),
        ),
        (
            10,
            json!({"role": "tool", "tool_call_id": "call_1", "content": "09:30"}),
        ),
        (
            11,
            json!({"role": "tool", "tool_call_id": "call_2", "content": [
                {"type": "text", "text": "sunny"}, {"type": "text", "text": "21°C"}
            ]}),
        ),
        (
            12,
            json!({"role": "assistant", "content": "Let me check once more.", "tool_calls": [call("call_3", "clock")]}),
        ),
        (
            13,
            json!({"role": "tool", "tool_call_id": "call_3", "content": ""}),
        ),
        (14, json!({"role": "assistant", "content": ""})),
        (
            15,
            json!({"role": "assistant", "content": null, "refusal": "I can't help with that."}),
        ),
        (
            16,
            json!({"role": "assistant", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]}),
        ),
        (
            17,
            json!({"role": "assistant", "content": null, "tool_calls": [call("call_4", "clock")]}),
        ),
    ]
}

fn items_of(conversation: &[(i64, Value)]) -> Vec<Value> {
    conversation
        .iter()
        .flat_map(|(sequence_number, message)| to_items(*sequence_number, message))
        .collect()
}

#[test]
fn stored_messages_come_back_unchanged_from_their_items() {
    let conversation = stored_conversation();
    let messages: Vec<Value> = conversation
        .iter()
        .map(|(_, message)| message.clone())
        .collect();
    assert_eq!(to_messages(&items_of(&conversation)).unwrap(), messages);
}

#[test]
fn each_message_alone_comes_back_unchanged_from_its_items() {
    for (sequence_number, message) in stored_conversation() {
        let items = to_items(sequence_number, &message);
        assert_eq!(to_messages(&items).unwrap(), [message], "{items:?}");
    }
}

#[test]
fn item_ids_are_unique_and_name_their_message() {
    let items = items_of(&stored_conversation());
    let ids: Vec<&str> = items
        .iter()
        .map(|item| item["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        ids.len(),
        "{ids:?}"
    );
    assert_eq!(
        ids,
        [
            "msg_0", "msg_1", "msg_2", "msg_3", "msg_4", "msg_5", "fc_9_0", "fc_9_1", "fco_10",
            "fco_11", "msg_12", "fc_12_0", "fco_13", "msg_14", "msg_15", "msg_16", "fc_17_0"
        ]
    );
    for (item, id) in items.iter().zip(&ids) {
        let parsed: ItemId = id.parse().unwrap();
        assert_eq!(parsed.to_string(), *id);
        assert_eq!(item["status"], "completed");
    }
}

#[test]
fn messages_are_message_items_with_input_or_output_text() {
    let user = to_items(3, &stored_conversation()[3].1);
    assert_eq!(
        user,
        [json!({
            "type": "message", "id": "msg_3", "status": "completed", "role": "user",
            "content": [
                {"type": "input_text", "text": "What is on this picture?"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
                {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "auto"}
            ]
        })]
    );
    let assistant = to_items(5, &json!({"role": "assistant", "content": "A cat."}));
    assert_eq!(
        assistant,
        [json!({
            "type": "message", "id": "msg_5", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "A cat.", "annotations": []}]
        })]
    );
    let refusal = to_items(
        15,
        &json!({"role": "assistant", "content": null, "refusal": "No."}),
    );
    assert_eq!(
        refusal[0]["content"],
        json!([{"type": "refusal", "refusal": "No."}])
    );
    let file = to_items(4, &stored_conversation()[4].1);
    assert_eq!(
        file[0]["content"][1],
        json!({"type": "input_file", "file_id": "file-1", "filename": "a.pdf"})
    );
}

#[test]
fn tool_calls_are_function_call_items_and_tool_messages_function_call_outputs() {
    let conversation = stored_conversation();
    assert_eq!(
        to_items(12, &conversation[9].1),
        [
            json!({
                "type": "message", "id": "msg_12", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": "Let me check once more.", "annotations": []}]
            }),
            json!({
                "type": "function_call", "id": "fc_12_0", "status": "completed",
                "call_id": "call_3", "name": "clock", "arguments": "{\"city\":\"Tōkyō\"}"
            }),
        ]
    );
    assert_eq!(
        to_items(10, &conversation[7].1),
        [json!({
            "type": "function_call_output", "id": "fco_10", "status": "completed",
            "call_id": "call_1", "output": "09:30"
        })]
    );
    assert_eq!(
        to_items(11, &conversation[8].1)[0]["output"],
        json!([{"type": "input_text", "text": "sunny"}, {"type": "input_text", "text": "21°C"}])
    );
}

#[test]
fn input_items_without_ids_become_chat_messages() {
    let messages = to_messages(&[
        json!({"role": "user", "content": "plain"}),
        json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "typed"}]}),
        json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "calling"}]}),
        json!({"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"}),
        json!({"type": "function_call", "call_id": "b", "name": "g", "arguments": "{}"}),
        json!({"type": "function_call_output", "call_id": "a", "output": "1"}),
        json!({"type": "function_call_output", "call_id": "b", "output": "2"}),
    ])
    .unwrap();
    assert_eq!(
        messages,
        [
            json!({"role": "user", "content": "plain"}),
            json!({"role": "user", "content": "typed"}),
            json!({"role": "assistant", "content": "calling", "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}
            ]}),
            json!({"role": "tool", "tool_call_id": "a", "content": "1"}),
            json!({"role": "tool", "tool_call_id": "b", "content": "2"}),
        ]
    );
}

#[test]
fn what_items_cannot_say_is_normalised_the_way_a_model_reads_it_alike() {
    let single_part =
        json!({"role": "user", "name": "zoë", "content": [{"type": "text", "text": "hi"}]});
    assert_eq!(
        to_messages(&to_items(0, &single_part)).unwrap(),
        [json!({"role": "user", "content": "hi"})]
    );
    let auto = json!({"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "auto"}}
    ]});
    assert_eq!(
        to_messages(&to_items(0, &auto)).unwrap()[0]["content"][1],
        json!({"type": "image_url", "image_url": {"url": "https://example.com/a.png"}})
    );
}

#[test]
fn items_with_no_chat_equivalent_are_errors_naming_the_field() {
    let cases = [
        (json!({"type": "reasoning", "summary": []}), "items[0].type"),
        (
            json!({"type": 5, "role": "user", "content": "x"}),
            "items[0].type",
        ),
        (json!({"role": "tool", "content": "x"}), "items[0].role"),
        (json!({"role": "user", "content": 7}), "items[0].content"),
        (
            json!({"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}),
            "items[0].content[0].image_url",
        ),
        (
            json!({"role": "user", "content": [{"type": "input_text"}]}),
            "items[0].content[0].text",
        ),
        (
            json!({"role": "user", "content": [{"type": "computer_screenshot"}]}),
            "items[0].content[0].type",
        ),
        (
            json!({"type": "function_call", "call_id": "a", "name": "f"}),
            "items[0].arguments",
        ),
        (
            json!({"type": "function_call_output", "output": "1"}),
            "items[0].call_id",
        ),
        (
            json!({"type": "function_call_output", "call_id": "a", "output": {}}),
            "items[0].output",
        ),
    ];
    for (item, param) in cases {
        let error =
            to_messages(&[json!({"role": "user", "content": "fine"}), item.clone()]).unwrap_err();
        assert_eq!(
            error.param(),
            param.replace("items[0]", "items[1]"),
            "{item}"
        );
    }
}
