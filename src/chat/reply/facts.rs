//! The metadata the layer stores beside a reply: what names it and how it ended.
//!
//! Written straight to JSON text from what the reply said, with the keys in the order
//! `serde_json` gives a map's (so the text is the one a `Map` of the same facts would
//! make): building a `Map` only to serialize and drop it cost a turn about 2,000
//! instructions (`docs/performance.md`).

use serde::Serialize;
use serde_json::Value;

/// The facts of one reply. A fact the reply did not state (absent, or `null`) is left
/// out; `incomplete` appears only when true.
///
/// `S` is how the reply gave its text facts: borrowed strings from a stream's chunks,
/// JSON values from a completion's body (whatever non-null value it sent is kept).
#[derive(Debug, Serialize)]
pub(super) struct ReplyFacts<'a, S: Serialize> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) finish_reason: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) id: Option<S>,
    #[serde(skip_serializing_if = "is_false")]
    pub(super) incomplete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) model: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) system_fingerprint: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) usage: Option<&'a Value>,
}

fn is_false(flag: &bool) -> bool {
    !flag
}

impl<S: Serialize> ReplyFacts<'_, S> {
    /// The facts as the text of a JSON object.
    pub(super) fn to_json(&self) -> String {
        // Strings, JSON values and a flag always serialize: the fallback is never taken.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// `value` unless it is JSON's `null`: a fact stated as `null` is not stated.
pub(super) fn known(value: Option<&Value>) -> Option<&Value> {
    value.filter(|value| !value.is_null())
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

    use super::*;

    #[test]
    fn the_facts_are_the_text_a_map_of_them_makes() {
        let usage = json!({"prompt_tokens": 1, "completion_tokens": 2});
        let error = json!({"message": "overloaded"});
        let facts = ReplyFacts {
            error: Some(&error),
            finish_reason: Some("stop"),
            id: Some("chatcmpl-1"),
            incomplete: true,
            model: Some("gpt-\"4o\""),
            system_fingerprint: Some("fp_1"),
            usage: Some(&usage),
        };
        let map: Map<String, Value> = serde_json::from_str(&facts.to_json()).unwrap();
        assert_eq!(
            Value::Object(map.clone()),
            json!({
                "error": error,
                "finish_reason": "stop",
                "id": "chatcmpl-1",
                "incomplete": true,
                "model": "gpt-\"4o\"",
                "system_fingerprint": "fp_1",
                "usage": usage,
            })
        );
        assert_eq!(facts.to_json(), serde_json::to_string(&map).unwrap());
    }

    #[test]
    fn unstated_facts_are_left_out() {
        let facts: ReplyFacts<'_, &str> = ReplyFacts {
            error: None,
            finish_reason: Some("length"),
            id: None,
            incomplete: false,
            model: None,
            system_fingerprint: None,
            usage: known(Some(&Value::Null)),
        };
        assert_eq!(facts.to_json(), r#"{"finish_reason":"length"}"#);
    }
}
