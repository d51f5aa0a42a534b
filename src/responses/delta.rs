//! What one chat-completions chunk adds to a streamed response: its first choice's
//! reasoning, text, refusal and tool-call pieces.
//!
//! Read with serde into borrowed fields: a typical chunk costs some 3,800 instructions
//! so, against some 10,000 built as a [`Value`] (see `docs/performance.md`). Anything
//! that reading refuses (a field of another type than expected, a key given twice) is
//! read as a [`Value`] instead, the reference, so the result is always the reference's:
//! a property test holds the two together on arbitrary chunks.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// What a chunk adds. Texts are never empty: an empty one adds nothing.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Delta<'a> {
    /// `reasoning_content`, else `reasoning` (providers name it either way).
    pub(super) reasoning: Option<Cow<'a, str>>,
    pub(super) content: Option<Cow<'a, str>>,
    pub(super) refusal: Option<Cow<'a, str>>,
    pub(super) tool_calls: Vec<Value>,
}

impl<'a> Delta<'a> {
    /// What the chunk `data` adds; `None` when it is not JSON.
    pub(super) fn read(data: &'a str) -> Option<Self> {
        match serde_json::from_str::<Object<Chunk<'a>>>(data) {
            Ok(Object(chunk)) => Some(chunk.delta()),
            Err(_) => Self::read_value(data),
        }
    }

    /// [`read`](Self::read) through a [`Value`]: the reference, and the reading of what
    /// the borrowed fields refuse. A field of another type adds nothing.
    fn read_value(data: &str) -> Option<Delta<'static>> {
        let chunk = serde_json::from_str::<Value>(data).ok()?;
        let delta = &chunk["choices"][0]["delta"];
        let text =
            |key: &str| non_empty(delta[key].as_str().map(|text| Cow::Owned(text.to_owned())));
        Some(Delta {
            reasoning: text("reasoning_content").or_else(|| text("reasoning")),
            content: text("content"),
            refusal: text("refusal"),
            tool_calls: delta["tool_calls"].as_array().cloned().unwrap_or_default(),
        })
    }
}

/// A chunk, as far as [`Delta`] reads it; other fields are skipped.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow)]
    choices: Option<Vec<Object<Choice<'a>>>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    delta: Option<Object<Fields<'a>>>,
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    refusal: Option<Cow<'a, str>>,
    tool_calls: Option<Vec<Value>>,
}

impl<'a> Chunk<'a> {
    /// The first choice's delta, as [`Delta`] has it.
    fn delta(self) -> Delta<'a> {
        let first = self.choices.and_then(|choices| choices.into_iter().next());
        let Some(Object(fields)) = first.and_then(|Object(choice)| choice.delta) else {
            return Delta::default();
        };
        Delta {
            reasoning: non_empty(fields.reasoning_content).or_else(|| non_empty(fields.reasoning)),
            content: non_empty(fields.content),
            refusal: non_empty(fields.refusal),
            tool_calls: fields.tool_calls.unwrap_or_default(),
        }
    }
}

/// `T` read from a JSON object only: serde's derived structs also read an array, as
/// their fields in order, where the reference finds no field at all.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Only<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Only<T> {
            type Value = Object<T>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Object)
            }
        }
        deserializer.deserialize_map(Only(PhantomData))
    }
}

/// `text` unless it is empty.
fn non_empty(text: Option<Cow<'_, str>>) -> Option<Cow<'_, str>> {
    text.filter(|text| !text.is_empty())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::strategies::json_value;

    /// The reading and the reference agree on `data`.
    fn agree(data: &str) {
        assert_eq!(Delta::read(data), Delta::read_value(data), "{data}");
    }

    #[test]
    fn a_chunk_is_read_as_its_values_say_whatever_its_shape() {
        for data in [
            r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
            r#"{"choices":[{"delta":{"content":"a \"quoted\" \\ line\n"}}]}"#,
            r#"{"choices":[{"delta":{"content":""}}]}"#,
            r#"{"choices":[{"delta":{"content":5,"refusal":"no"}}]}"#,
            r#"{"choices":[{"delta":{"content":"first","content":"second"}}]}"#,
            r#"{"choices":[{"delta":{"reasoning_content":"","reasoning":"think"}}]}"#,
            r#"{"choices":[{"delta":{"reasoning_content":"a","reasoning":"b"}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":"{"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":{"index":0}}}]}"#,
            r#"{"choices":[{"delta":null}]}"#,
            r#"{"choices":[5,{"delta":{"content":"second choice"}}]}"#,
            r#"{"choices":[]}"#,
            r#"{"choices":{"0":{"delta":{"content":"x"}}}}"#,
            r#"{"choices":null,"usage":{"total_tokens":3}}"#,
            r#"{"error":{"message":"upstream"}}"#,
            r#"[1,2]"#,
            r#""text""#,
            r#"{"choices":[{"delta":{"content":"cut"#,
            r#"[[{"delta":{"content":"an array of choices, unnamed"}}]]"#,
            r#"{"choices":[[{"content":"a choice as an array"}]]}"#,
            r#"{"choices":[{"delta":["a delta as an array"]}]}"#,
            "not json",
        ] {
            agree(data);
        }
        let read = Delta::read(r#"{"choices":[{"delta":{"content":"x","refusal":"y"}}]}"#);
        assert_eq!(read.and_then(|delta| delta.content).as_deref(), Some("x"));
    }

    /// A delta field: mostly a string (escapes and non-ASCII included), else any JSON.
    fn field() -> impl Strategy<Value = Value> {
        prop_oneof![
            3 => "[a-z\"\\\\é\n]{0,4}".prop_map(Value::String),
            1 => json_value("[a-z]{0,3}".boxed()),
        ]
    }

    proptest! {
        #[test]
        fn any_chunk_is_read_as_its_values_say(
            [content, refusal, reasoning_content, reasoning, tool_calls, repeated] in
                [field(), field(), field(), field(), field(), field()],
            key in prop_oneof![
                Just("content"), Just("refusal"), Just("reasoning"),
                Just("reasoning_content"), Just("tool_calls"), Just("role")
            ],
        ) {
            let delta = json!({
                "content": content, "refusal": refusal, "reasoning_content": reasoning_content,
                "reasoning": reasoning, "tool_calls": tool_calls,
            });
            let chunk = json!({"id": "c", "choices": [{"index": 0, "delta": delta}]});
            agree(&chunk.to_string());
            // A key given twice, before the others.
            let members = delta.to_string();
            let members = &members[1..members.len() - 1];
            agree(&format!(r#"{{"choices":[{{"delta":{{"{key}":{repeated},{members}}}}}]}}"#));
        }
    }
}
