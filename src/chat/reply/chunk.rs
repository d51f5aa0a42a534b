//! The parts of a `chat.completion.chunk` the assembler reads, as borrowing serde types.
//!
//! Every event of a stream goes through these, so they borrow from the event's text
//! instead of building a `Value` tree, and skip every field they do not name. Text fields
//! accept any JSON type and read only strings, so one provider's odd field (a number
//! where a string was expected) loses that field, not the whole chunk.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// One streamed chunk.
#[derive(Deserialize)]
pub(super) struct Chunk<'a> {
    #[serde(default, borrow)]
    pub(super) id: Text<'a>,
    #[serde(default, borrow)]
    pub(super) model: Text<'a>,
    #[serde(default, borrow)]
    pub(super) system_fingerprint: Text<'a>,
    #[serde(default)]
    pub(super) created: Option<Value>,
    #[serde(default)]
    pub(super) usage: Option<Value>,
    #[serde(default)]
    pub(super) error: Option<Value>,
    #[serde(default, borrow)]
    pub(super) choices: Option<Vec<Choice<'a>>>,
}

/// One entry of `choices`.
#[derive(Deserialize)]
pub(super) struct Choice<'a> {
    #[serde(default)]
    pub(super) index: Option<u64>,
    #[serde(default, borrow)]
    pub(super) delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    pub(super) finish_reason: Text<'a>,
}

/// What one chunk adds to the message.
#[derive(Deserialize)]
pub(super) struct Delta<'a> {
    #[serde(default, borrow)]
    pub(super) content: Text<'a>,
    #[serde(default, borrow)]
    pub(super) refusal: Text<'a>,
    #[serde(default, borrow)]
    pub(super) reasoning_content: Text<'a>,
    #[serde(default, borrow)]
    pub(super) reasoning: Text<'a>,
    #[serde(default)]
    pub(super) reasoning_event: Option<Value>,
    #[serde(default, borrow)]
    pub(super) tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

/// A piece of one tool call.
#[derive(Deserialize)]
pub(super) struct ToolCallDelta<'a> {
    #[serde(default)]
    pub(super) index: Option<u64>,
    #[serde(default, borrow)]
    pub(super) id: Text<'a>,
    #[serde(default, borrow, rename = "type")]
    pub(super) kind: Text<'a>,
    #[serde(default, borrow)]
    pub(super) function: Option<FunctionDelta<'a>>,
}

/// A piece of a tool call's function.
#[derive(Deserialize)]
pub(super) struct FunctionDelta<'a> {
    #[serde(default, borrow)]
    pub(super) name: Text<'a>,
    #[serde(default, borrow)]
    pub(super) arguments: Text<'a>,
}

/// A string field, borrowed when it has no escapes; `None` for null, a missing field, or
/// any other JSON type.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Text<'a>(pub(super) Option<Cow<'a, str>>);

impl<'a> Text<'a> {
    /// The text when it is there and not empty: several providers repeat fields such as
    /// `id` or `finish_reason` as `""` on later chunks, which must not erase the real one.
    pub(super) fn non_empty(&self) -> Option<&str> {
        self.0.as_deref().filter(|text| !text.is_empty())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor(PhantomData))
    }
}

struct TextVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
    type Value = Text<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'a>, E> {
        Ok(Text(Some(Cow::Borrowed(text))))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'a>, E> {
        Ok(Text(Some(Cow::Owned(text.to_owned()))))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Text<'a>, E> {
        Ok(Text(Some(Cow::Owned(text))))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Text<'a>, E> {
        Ok(Text(None))
    }

    fn visit_none<E: de::Error>(self) -> Result<Text<'a>, E> {
        Ok(Text(None))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Text<'a>, D::Error> {
        Text::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Text<'a>, E> {
        Ok(Text(None))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Text<'a>, E> {
        Ok(Text(None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text<'a>, E> {
        Ok(Text(None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Text<'a>, E> {
        Ok(Text(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text<'a>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Text(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text<'a>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Text(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(json: &str) -> Text<'_> {
        serde_json::from_str(json).expect("any JSON value is accepted")
    }

    #[test]
    fn text_borrows_a_string_without_escapes() {
        assert!(matches!(text(r#""plain""#).0, Some(Cow::Borrowed("plain"))));
        assert_eq!(text(r#""a\nb""#).0.as_deref(), Some("a\nb"));
    }

    #[test]
    fn text_reads_any_other_json_value_as_absent() {
        for json in [
            "null",
            "1",
            "-1",
            "1.5",
            "true",
            "[1,[2]]",
            r#"{"a":{"b":1}}"#,
        ] {
            assert_eq!(text(json), Text(None), "{json}");
        }
    }

    #[test]
    fn a_chunk_with_odd_field_types_keeps_its_content() {
        let chunk: Chunk<'_> = serde_json::from_str(
            r#"{"id":7,"model":["m"],"choices":[{"index":0,"delta":{"content":"hi","reasoning":{"x":1}},"finish_reason":false}]}"#,
        )
        .unwrap();
        let choices = chunk.choices.unwrap();
        let delta = choices[0].delta.as_ref().unwrap();
        assert_eq!(delta.content.non_empty(), Some("hi"));
        assert_eq!(delta.reasoning, Text(None));
        assert_eq!(chunk.id, Text(None));
    }
}
