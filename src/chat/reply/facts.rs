//! The metadata the layer stores beside a reply: what names it and how it ended.
//!
//! Written straight to JSON text from what the reply said, with the keys in the order
//! `serde_json` gives a map's, so the text is the one a `Map` of the same facts makes (a
//! property test holds it to that). Building a `Map` only to serialize and drop it cost a
//! turn about 2,500 instructions, and serde_json writing this struct about 1,100 (it
//! escapes the constant keys a byte at a time); see `docs/performance.md`.

use serde_json::Value;

use crate::store::json_text::{write_string, write_value};

/// The facts of one reply. A fact the reply did not state (absent, or `null`) is left
/// out; `incomplete` appears only when true.
///
/// `F` is how the reply gave its text facts: borrowed strings from a stream's chunks,
/// JSON values from a completion's body (whatever non-null value it sent is kept).
#[derive(Debug)]
pub(super) struct ReplyFacts<'a, F: Fact> {
    pub(super) error: Option<&'a Value>,
    pub(super) finish_reason: Option<F>,
    pub(super) id: Option<F>,
    pub(super) incomplete: bool,
    pub(super) model: Option<F>,
    pub(super) system_fingerprint: Option<F>,
    pub(super) usage: Option<&'a Value>,
}

/// A text fact's value, written as JSON.
pub(super) trait Fact {
    fn write(&self, out: &mut String);
}

impl Fact for &str {
    fn write(&self, out: &mut String) {
        write_string(self, out);
    }
}

impl Fact for &Value {
    fn write(&self, out: &mut String) {
        write_value(self, out);
    }
}

impl<F: Fact> ReplyFacts<'_, F> {
    /// The facts as the text of a JSON object, keys in order.
    pub(super) fn to_json(&self) -> String {
        let mut out = String::with_capacity(128);
        out.push('{');
        if let Some(error) = self.error {
            key(&mut out, "error");
            write_value(error, &mut out);
        }
        fact(&mut out, "finish_reason", self.finish_reason.as_ref());
        fact(&mut out, "id", self.id.as_ref());
        if self.incomplete {
            key(&mut out, "incomplete");
            out.push_str("true");
        }
        fact(&mut out, "model", self.model.as_ref());
        fact(
            &mut out,
            "system_fingerprint",
            self.system_fingerprint.as_ref(),
        );
        if let Some(usage) = self.usage {
            key(&mut out, "usage");
            write_value(usage, &mut out);
        }
        out.push('}');
        out
    }
}

/// Writes `"name":` after a comma unless it is the object's first member; `name` needs
/// no escapes.
fn key(out: &mut String, name: &str) {
    if out.len() > 1 {
        out.push(',');
    }
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
}

fn fact(out: &mut String, name: &str, value: Option<&impl Fact>) {
    if let Some(value) = value {
        key(out, name);
        value.write(out);
    }
}

/// `value` unless it is JSON's `null`: a fact stated as `null` is not stated.
pub(super) fn known(value: Option<&Value>) -> Option<&Value> {
    value.filter(|value| !value.is_null())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Map, json};

    use super::*;

    /// What serde_json writes for a map of the same facts: the text they must match.
    fn as_a_map(facts: &ReplyFacts<'_, &str>) -> String {
        let mut map = Map::new();
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                map.insert(key.to_owned(), value);
            }
        };
        put("error", facts.error.cloned());
        put("finish_reason", facts.finish_reason.map(Value::from));
        put("id", facts.id.map(Value::from));
        put("incomplete", facts.incomplete.then_some(Value::Bool(true)));
        put("model", facts.model.map(Value::from));
        put(
            "system_fingerprint",
            facts.system_fingerprint.map(Value::from),
        );
        put("usage", facts.usage.cloned());
        serde_json::to_string(&map).expect("a map serializes")
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
        let none: ReplyFacts<'_, &Value> = ReplyFacts {
            finish_reason: None,
            ..facts_of_values()
        };
        assert_eq!(none.to_json(), "{}");
    }

    fn facts_of_values() -> ReplyFacts<'static, &'static Value> {
        ReplyFacts {
            error: None,
            finish_reason: None,
            id: None,
            incomplete: false,
            model: None,
            system_fingerprint: None,
            usage: None,
        }
    }

    #[test]
    fn a_completions_facts_keep_the_values_it_sent() {
        let model = json!({"name": "m", "n": 1.5});
        let id = json!(7);
        let facts = ReplyFacts {
            model: Some(&model),
            id: Some(&id),
            ..facts_of_values()
        };
        assert_eq!(facts.to_json(), r#"{"id":7,"model":{"n":1.5,"name":"m"}}"#);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn the_facts_are_the_text_a_map_of_them_makes(
            texts in prop::collection::vec(prop::option::of("\\PC{0,12}|[\"\\\\\u{0}-\u{1f}]{1,3}"), 4),
            incomplete in any::<bool>(),
            usage in prop::option::of(0u32..100_000),
            error in prop::option::of("\\PC{0,12}"),
        ) {
            let usage = usage.map(|tokens| json!({"total_tokens": tokens, "prompt_tokens": 1}));
            let error = error.map(|message| json!({"message": message, "code": null}));
            let facts = ReplyFacts {
                error: error.as_ref(),
                finish_reason: texts[0].as_deref(),
                id: texts[1].as_deref(),
                incomplete,
                model: texts[2].as_deref(),
                system_fingerprint: texts[3].as_deref(),
                usage: usage.as_ref(),
            };
            prop_assert_eq!(facts.to_json(), as_a_map(&facts));
        }
    }
}
