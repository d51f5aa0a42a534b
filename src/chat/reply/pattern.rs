//! [`Pattern`]: the last chunk of a stream read in full, to recognise the chunks that
//! repeat it but for their content.
//!
//! Why: most chunks of a stream differ from the one before only in their content
//! string (the same `id`, `object`, `created`, `model`, the same keys in the same
//! order). Reading each in full, even with the scanner, cost ~2,300 instructions a
//! typical chunk; comparing the bytes around the content with the last chunk read in
//! full, and scanning only the content string, costs about a tenth of that.
//!
//! Why it reads what serde reads: a chunk that is the pattern's bytes with only the
//! content string literal replaced by another well-formed one is the same JSON document
//! but for that one string, so every part of it reads as the pattern's did, and the
//! content as that literal decodes (by serde when it holds escapes). The assembler only
//! keeps a pattern whose other parts change nothing when applied again (no refusal,
//! reasoning or tool call), so for a chunk that matches it, appending the content is the
//! whole of what applying the chunk would do.

use std::borrow::Cow;
use std::ops::Range;

use super::chunk::string_end;

/// The size of a cache line on the machines the layer runs on.
const LINE: usize = 64;

/// How many of the pattern's lines [`Pattern::warm`] reads.
const LINES: usize = 4;

/// The bytes of the last chunk read in full, split around its content string.
#[derive(Debug, Default)]
pub(super) struct Pattern {
    /// The chunk's data; empty when there is no pattern.
    data: String,
    /// Where the content string's text starts, just after its opening quote.
    start: usize,
    /// Where its closing quote is.
    end: usize,
}

impl Pattern {
    /// Keeps `data` as the pattern, its content string (quotes included) at `content`.
    pub(super) fn set(&mut self, data: &str, content: Range<usize>) {
        self.data.clear();
        self.data.push_str(data);
        self.start = content.start + 1;
        self.end = content.end.saturating_sub(1);
    }

    /// Reads a byte of each of the pattern's first [`LINES`] cache lines (a chunk of
    /// OpenAI's is about four), so that they are on their way before the next chunk is
    /// compared with it, and returns them combined (see `ReplyAssembler::warm`).
    #[inline]
    pub(super) fn warm(&self) -> usize {
        let bytes = self.data.as_bytes();
        (0..LINES).fold(0, |touched, line| {
            touched ^ usize::from(bytes.get(line * LINE).copied().unwrap_or_default())
        })
    }

    /// Forgets the pattern: what it applied may no longer be in the message.
    pub(super) fn clear(&mut self) {
        self.data.clear();
    }

    /// The content of `data` when `data` is the pattern with only its content string
    /// changed; `None` when it is not (or the string does not decode, or is not UTF-8:
    /// then the full reading decides what it is). Only the content's bytes are checked
    /// for UTF-8: the rest are the pattern's, which were.
    pub(super) fn content<'a>(&self, data: &'a [u8]) -> Option<Cow<'a, str>> {
        if self.data.is_empty() {
            return None;
        }
        let pattern = self.data.as_bytes();
        // Both include a quote of the content string: a pattern always has them.
        let prefix = pattern.get(..self.start)?;
        let suffix = pattern.get(self.end..)?;
        let close = data.len().checked_sub(suffix.len())?;
        if close < prefix.len() || !data.starts_with(prefix) || !data.ends_with(suffix) {
            return None;
        }
        // The string that opens at the prefix's last byte must close exactly where the
        // suffix begins: else a quote inside changed the document's shape.
        let (end, escaped) = string_end(data, self.start)?;
        if end != close {
            return None;
        }
        if escaped {
            // Unescaping, surrogates included, is serde's.
            let quoted = data.get(self.start - 1..close + 1)?;
            return serde_json::from_slice::<String>(quoted)
                .ok()
                .map(Cow::Owned);
        }
        std::str::from_utf8(data.get(self.start..close)?)
            .ok()
            .map(Cow::Borrowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: &str = r#"{"id":"c","choices":[{"index":0,"delta":{"content":"word"}}]}"#;

    fn pattern() -> Pattern {
        let start = CHUNK.find(r#""word""#).expect("the content");
        let mut pattern = Pattern::default();
        pattern.set(CHUNK, start..start + 6);
        pattern
    }

    #[test]
    fn a_chunk_that_differs_only_in_its_content_gives_that_content() {
        let pattern = pattern();
        for (content, expected) in [
            ("word", "word"),
            ("", ""),
            (
                "a longer piece, with \\\"quotes\\\"",
                "a longer piece, with \"quotes\"",
            ),
            ("caf\\u00e9 \\ud83c\\udf0d", "café 🌍"),
            ("é世", "é世"),
        ] {
            let data = CHUNK.replace("word", content);
            assert_eq!(
                pattern.content(data.as_bytes()).as_deref(),
                Some(expected),
                "{data}"
            );
        }
    }

    #[test]
    fn anything_else_is_not_taken_for_the_pattern() {
        let pattern = pattern();
        for data in [
            // Another field changed, or the shape around the content.
            r#"{"id":"d","choices":[{"index":0,"delta":{"content":"word"}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"a","refusal":"b"}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"a"}},{"index":0,"delta":{"content":"b"}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"a"}}]} "#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"}}]}"#,
            // A content that is not a well-formed string, or does not decode.
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"a"b"}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"a\"}}]}"#,
            "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\nb\"}}]}",
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"\ud800"}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"\x"}}]}"#,
            "",
        ] {
            assert_eq!(pattern.content(data.as_bytes()), None, "{data}");
        }
        let not_utf8 = br#"{"id":"c","choices":[{"index":0,"delta":{"content":"\xff"}}]}"#;
        assert_eq!(pattern.content(not_utf8), None);
        assert_eq!(Pattern::default().content(CHUNK.as_bytes()), None);
        let mut cleared = pattern;
        cleared.clear();
        assert_eq!(cleared.content(CHUNK.as_bytes()), None);
    }
}
