//! The parts of a `chat.completion.chunk` the assembler reads, parsed in place.
//!
//! Every event of a stream comes through here, so a chunk is read in one pass into a
//! [`ChunkParts`] on the caller's stack: strings borrow from the event's text, unknown
//! fields are skipped, and nested objects are filled where they stand rather than built
//! and moved up level by level (with derived structs those moves were most of the cost).
//! Text fields accept any JSON type and read only strings, so one provider's odd field
//! (a number where a string was expected) loses that field, not the whole chunk.
//!
//! Most chunks are read by the [`scan`] module's scanner instead; serde's reading here
//! stays the reference, and reads whatever the scanner hands back.

mod scan;

pub(super) use self::scan::string_end;

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// What one chunk says. Nothing in it is applied until the whole event has parsed.
#[derive(Debug, Default, PartialEq)]
pub(super) struct ChunkParts<'a> {
    pub(super) id: Text<'a>,
    pub(super) model: Text<'a>,
    pub(super) system_fingerprint: Text<'a>,
    pub(super) created: Option<Value>,
    pub(super) usage: Option<Value>,
    pub(super) error: Option<Value>,
    /// Whether `choice` holds the choice with `index` 0.
    pub(super) has_choice: bool,
    pub(super) choice: ChoiceParts<'a>,
}

/// The choice with `index` 0 (by position when indexes are missing): only that one is
/// stored, since a conversation continues one reply.
#[derive(Debug, Default, PartialEq)]
pub(super) struct ChoiceParts<'a> {
    index: Option<u64>,
    pub(super) finish_reason: Text<'a>,
    pub(super) delta: DeltaParts<'a>,
}

/// What one chunk adds to the message.
#[derive(Debug, Default, PartialEq)]
pub(super) struct DeltaParts<'a> {
    pub(super) content: Text<'a>,
    pub(super) refusal: Text<'a>,
    pub(super) reasoning_content: Text<'a>,
    pub(super) reasoning: Text<'a>,
    pub(super) reasoning_event: Option<Value>,
    pub(super) tool_calls: Vec<ToolCallDelta<'a>>,
}

/// A piece of one tool call.
#[derive(Debug, Deserialize, PartialEq)]
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
#[derive(Debug, Deserialize, PartialEq)]
pub(super) struct FunctionDelta<'a> {
    #[serde(default, borrow)]
    pub(super) name: Text<'a>,
    #[serde(default, borrow)]
    pub(super) arguments: Text<'a>,
}

impl<'a> ChunkParts<'a> {
    /// Reads one event's data (a JSON object, with nothing after it) into an empty
    /// chunk: by the scanner when it can, else by serde.
    #[cfg(test)]
    pub(super) fn read(&mut self, data: &'a str) -> serde_json::Result<()> {
        self.read_noting_content(data).map(drop)
    }

    /// [`read`](Self::read), also answering where the kept choice's `content` string
    /// stands in `data`, quotes included, when the scanner read it (`None` otherwise).
    pub(super) fn read_noting_content(
        &mut self,
        data: &'a str,
    ) -> serde_json::Result<Option<Range<usize>>> {
        if let Some(content) = scan::scan_noting_content(data, self) {
            return Ok(content);
        }
        // The scanner may have filled part of the chunk before handing it over.
        *self = ChunkParts::default();
        self.read_with_serde(data).map(|()| None)
    }

    /// Whether applying this chunk twice changes the message no more than applying it
    /// once, but for its content: it adds no refusal, reasoning or tool call.
    pub(super) fn adds_only_content(&self) -> bool {
        let delta = &self.choice.delta;
        delta.refusal.non_empty().is_none()
            && delta.reasoning_content.non_empty().is_none()
            && delta.reasoning.non_empty().is_none()
            && !matches!(delta.reasoning_event, Some(Value::Object(_)))
            && delta.tool_calls.is_empty()
    }

    /// The reference reading: serde_json, in place.
    pub(super) fn read_with_serde(&mut self, data: &'a str) -> serde_json::Result<()> {
        let mut deserializer = serde_json::Deserializer::from_str(data);
        InPlace(self).deserialize(&mut deserializer)?;
        deserializer.end()
    }
}

/// Checks the scanner against serde on one event's data: when the scanner reads it, it
/// reads exactly what serde reads. Panics otherwise (the property test and the
/// `chunk_read` fuzz target call it). Returns whether the scanner read the data itself.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn scanner_agrees_with_serde(data: &str) -> bool {
    let mut scanned = ChunkParts::default();
    if !scan::scan(data, &mut scanned) {
        return false;
    }
    let mut reference = ChunkParts::default();
    let read = reference.read_with_serde(data);
    assert!(
        read.is_ok(),
        "the scanner read what serde refuses ({read:?}): {data:?}"
    );
    assert_eq!(
        scanned, reference,
        "the scanner and serde differ on {data:?}"
    );
    true
}

/// Fills the value it points to from the JSON at hand.
struct InPlace<'p, T>(&'p mut T);

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum ChunkField {
    Id,
    Model,
    SystemFingerprint,
    Created,
    Usage,
    Error,
    Choices,
    #[serde(other)]
    Other,
}

impl<'de: 'a, 'a> DeserializeSeed<'de> for InPlace<'_, ChunkParts<'a>> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for InPlace<'_, ChunkParts<'a>> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a chat.completion.chunk object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let chunk = self.0;
        while let Some(field) = map.next_key()? {
            match field {
                ChunkField::Id => chunk.id = map.next_value()?,
                ChunkField::Model => chunk.model = map.next_value()?,
                ChunkField::SystemFingerprint => chunk.system_fingerprint = map.next_value()?,
                ChunkField::Created => chunk.created = map.next_value()?,
                ChunkField::Usage => chunk.usage = map.next_value()?,
                ChunkField::Error => chunk.error = map.next_value()?,
                ChunkField::Choices => map.next_value_seed(Choices {
                    found: &mut chunk.has_choice,
                    choice: &mut chunk.choice,
                })?,
                ChunkField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// The `choices` array (or `null`), keeping the choice with `index` 0 in place.
struct Choices<'p, 'a> {
    found: &'p mut bool,
    choice: &'p mut ChoiceParts<'a>,
}

impl<'de: 'a, 'a> DeserializeSeed<'de> for Choices<'_, 'a> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for Choices<'_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of choices")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut position = 0_u64;
        loop {
            if *self.found {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
                continue;
            }
            // The index may follow the delta, so each choice is read into the slot and
            // kept only if it turns out to be choice 0.
            *self.choice = ChoiceParts::default();
            if seq.next_element_seed(InPlace(&mut *self.choice))?.is_none() {
                break;
            }
            *self.found = self.choice.index.unwrap_or(position) == 0;
            position = position.saturating_add(1);
        }
        if !*self.found {
            *self.choice = ChoiceParts::default();
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum ChoiceField {
    Index,
    Delta,
    FinishReason,
    #[serde(other)]
    Other,
}

impl<'de: 'a, 'a> DeserializeSeed<'de> for InPlace<'_, ChoiceParts<'a>> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for InPlace<'_, ChoiceParts<'a>> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a choice object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let choice = self.0;
        while let Some(field) = map.next_key()? {
            match field {
                ChoiceField::Index => choice.index = map.next_value()?,
                ChoiceField::Delta => map.next_value_seed(InPlace(&mut choice.delta))?,
                ChoiceField::FinishReason => choice.finish_reason = map.next_value()?,
                ChoiceField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum DeltaField {
    Content,
    Refusal,
    ReasoningContent,
    Reasoning,
    ReasoningEvent,
    ToolCalls,
    #[serde(other)]
    Other,
}

impl<'de: 'a, 'a> DeserializeSeed<'de> for InPlace<'_, DeltaParts<'a>> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        // `any` so that a `null` delta reads as an empty one.
        deserializer.deserialize_any(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for InPlace<'_, DeltaParts<'a>> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a delta object")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let delta = self.0;
        while let Some(field) = map.next_key()? {
            match field {
                DeltaField::Content => delta.content = map.next_value()?,
                DeltaField::Refusal => delta.refusal = map.next_value()?,
                DeltaField::ReasoningContent => delta.reasoning_content = map.next_value()?,
                DeltaField::Reasoning => delta.reasoning = map.next_value()?,
                DeltaField::ReasoningEvent => delta.reasoning_event = map.next_value()?,
                DeltaField::ToolCalls => {
                    let calls: Option<Vec<ToolCallDelta<'a>>> = map.next_value()?;
                    delta.tool_calls = calls.unwrap_or_default();
                }
                DeltaField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
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

    fn read(data: &str) -> Option<ChunkParts<'_>> {
        let mut chunk = ChunkParts::default();
        chunk.read(data).ok().map(|()| chunk)
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
        let chunk = read(
            r#"{"id":7,"model":["m"],"choices":[{"index":0,"delta":{"content":"hi","reasoning":{"x":1}},"finish_reason":false}]}"#,
        )
        .unwrap();
        assert!(chunk.has_choice);
        assert_eq!(chunk.choice.delta.content.non_empty(), Some("hi"));
        assert_eq!(chunk.choice.delta.reasoning, Text(None));
        assert_eq!(chunk.choice.finish_reason, Text(None));
        assert_eq!(chunk.id, Text(None));
    }

    #[test]
    fn choice_zero_is_found_whatever_the_order_of_its_fields() {
        let chunk = read(
            r#"{"choices":[{"delta":{"content":"one"},"index":1},{"delta":{"content":"zero"},"index":0},{"delta":{"content":"two"},"index":2}]}"#,
        )
        .unwrap();
        assert!(chunk.has_choice);
        assert_eq!(chunk.choice.delta.content.non_empty(), Some("zero"));
    }

    #[test]
    fn choices_without_index_zero_leave_no_choice() {
        let chunk =
            read(r#"{"choices":[{"delta":{"content":"one"},"finish_reason":"stop","index":1}]}"#)
                .unwrap();
        assert!(!chunk.has_choice);
        assert_eq!(chunk.choice.delta.content, Text(None));
        assert_eq!(chunk.choice.finish_reason, Text(None));
    }

    #[test]
    fn null_choices_and_null_delta_read_as_nothing() {
        assert!(!read(r#"{"choices":null}"#).unwrap().has_choice);
        let chunk =
            read(r#"{"choices":[{"index":0,"delta":null,"finish_reason":"stop"}]}"#).unwrap();
        assert_eq!(chunk.choice.finish_reason.non_empty(), Some("stop"));
    }

    #[test]
    fn data_that_is_not_one_json_object_is_refused() {
        for data in [
            "",
            "x",
            "[]",
            "[{}]",
            "1",
            "\"s\"",
            "{} {}",
            r#"{"choices":[{"index":0,"delta":{"content":"x"}}],"bad":tru}"#,
        ] {
            assert!(read(data).is_none(), "{data}");
        }
    }
}
