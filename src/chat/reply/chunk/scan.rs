//! The fast read of a chunk: a scanner for the few keys a `chat.completion.chunk` carries,
//! with serde_json as the reference it hands anything unusual to.
//!
//! Why a hand scanner: every event of every captured stream is read, and reading a
//! typical ~125-byte content delta with serde_json (in place, borrowing, see
//! [`ChunkParts`]) was most of the layer's cost per chunk. Measured with callgrind on
//! `sse_overhead/no_database/new/2048` (`docs/performance.md`, section for the cost
//! issue), `ReplyAssembler::on_event` fell from 3,934 to 2,619 instructions per chunk,
//! and the whole capture per chunk from 4,708 to 3,392. A lazy parser (sonic-rs,
//! simd-json) would add a large dependency tree and unsafe code for a document this
//! small, where a single pass that looks only for the keys below touches each byte about
//! once.
//!
//! The contract with serde: [`scan`] either fills the chunk exactly as
//! [`ChunkParts::read_with_serde`] would, or answers `false` and leaves the chunk to
//! serde. It answers `false` on whatever it does not read itself: a key with an escape,
//! a known key twice, a text field that is neither a string nor `null`, an `index` that
//! is not a plain non-negative integer, deep nesting, and anything malformed (so serde
//! alone decides what is refused). Values it does not interpret (`usage`, `error`, a
//! `created` that is not a plain integer, `reasoning_event`, `tool_calls`, a string
//! with escapes) are delimited here and read by serde on their own. A differential
//! property test and the `chunk_read` fuzz target hold it to that.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;
use serde_json::Value;

use super::{ChoiceParts, ChunkParts, DeltaParts, Text, ToolCallDelta};

/// The bytes that end the plain run of a string: the quote, the backslash, and the
/// control characters JSON forbids there.
const SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Nesting deeper than this inside a skipped value goes to serde: chunks never nest that
/// deep, and serde's own limits then apply unchanged.
const MAX_DEPTH: u32 = 32;

/// Fills `chunk` (which must be empty) from `data`, or returns `false` when serde must
/// read it; the chunk may then hold part of what was scanned.
#[cfg(any(test, feature = "fuzzing"))]
pub(super) fn scan<'a>(data: &'a str, chunk: &mut ChunkParts<'a>) -> bool {
    scan_noting_content(data, chunk).is_some()
}

/// [`scan`], also answering where the kept choice's `content` string stands in `data`,
/// its quotes included (`None` when it is not a string, or there is no such choice).
pub(super) fn scan_noting_content<'a>(
    data: &'a str,
    chunk: &mut ChunkParts<'a>,
) -> Option<Option<Range<usize>>> {
    let mut scanner = Scanner {
        text: data,
        pos: 0,
        content: None,
    };
    scanner.chunk(chunk)?;
    Some(scanner.content)
}

/// Where the JSON string whose text starts at `start` (just after its opening quote)
/// closes, and whether it holds escapes; `None` when it is not a well-formed string
/// (as the scanner's own strings: serde decides then).
pub(in crate::chat::reply) fn string_end(bytes: &[u8], start: usize) -> Option<(usize, bool)> {
    let mut at = start;
    let mut escaped = false;
    loop {
        // Most bytes are plain: one table look-up each, with the position kept local
        // (writing it back at every byte doubled the cost of a string).
        while let Some(&byte) = bytes.get(at) {
            if SPECIAL[usize::from(byte)] {
                break;
            }
            at += 1;
        }
        match *bytes.get(at)? {
            b'"' => return Some((at, escaped)),
            b'\\' => {
                escaped = true;
                at += 1;
                match *bytes.get(at)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 1,
                    b'u' => {
                        let hex = bytes.get(at + 1..at + 5)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        at += 5;
                    }
                    _ => return None,
                }
            }
            _ => return None,
        }
    }
}

/// A position in the event's data. Every method returns `None` to mean "serde decides".
struct Scanner<'a> {
    text: &'a str,
    pos: usize,
    /// Where the `content` string of the choice being read stands, quotes included.
    content: Option<Range<usize>>,
}

/// Which known keys of one object have been seen: a key seen twice goes to serde, whose
/// in-place reading of a repeated object merges where a plain overwrite would not.
#[derive(Default)]
struct Seen(u16);

impl Seen {
    fn first(&mut self, key: u16) -> Option<()> {
        let bit = 1 << key;
        if self.0 & bit != 0 {
            return None;
        }
        self.0 |= bit;
        Some(())
    }
}

impl<'a> Scanner<'a> {
    fn chunk(&mut self, chunk: &mut ChunkParts<'a>) -> Option<()> {
        let mut seen = Seen::default();
        self.object(|scanner, key| {
            match key {
                "id" => {
                    seen.first(0)?;
                    chunk.id = scanner.text()?;
                }
                "model" => {
                    seen.first(1)?;
                    chunk.model = scanner.text()?;
                }
                "system_fingerprint" => {
                    seen.first(2)?;
                    chunk.system_fingerprint = scanner.text()?;
                }
                "created" => {
                    seen.first(3)?;
                    chunk.created = scanner.value()?;
                }
                "usage" => {
                    seen.first(4)?;
                    chunk.usage = scanner.value()?;
                }
                "error" => {
                    seen.first(5)?;
                    chunk.error = scanner.value()?;
                }
                "choices" => {
                    seen.first(6)?;
                    scanner.choices(&mut chunk.has_choice, &mut chunk.choice)?;
                }
                _ => scanner.skip()?,
            }
            Some(())
        })?;
        self.whitespace();
        (self.pos == self.text.len()).then_some(())
    }

    /// `null` or an array of choices, keeping the one with `index` 0 (by position when
    /// it has none) as serde's reading does.
    fn choices(&mut self, found: &mut bool, choice: &mut ChoiceParts<'a>) -> Option<()> {
        if self.literal("null") {
            return Some(());
        }
        let mut position = 0_u64;
        self.array(|scanner| {
            if *found {
                return scanner.skip();
            }
            *choice = ChoiceParts::default();
            scanner.content = None;
            scanner.choice(choice)?;
            *found = choice.index.unwrap_or(position) == 0;
            position = position.saturating_add(1);
            Some(())
        })?;
        if !*found {
            *choice = ChoiceParts::default();
            self.content = None;
        }
        Some(())
    }

    fn choice(&mut self, choice: &mut ChoiceParts<'a>) -> Option<()> {
        let mut seen = Seen::default();
        self.object(|scanner, key| {
            match key {
                "index" => {
                    seen.first(0)?;
                    choice.index = scanner.index()?;
                }
                "delta" => {
                    seen.first(1)?;
                    if !scanner.literal("null") {
                        scanner.delta(&mut choice.delta)?;
                    }
                }
                "finish_reason" => {
                    seen.first(2)?;
                    choice.finish_reason = scanner.text()?;
                }
                _ => scanner.skip()?,
            }
            Some(())
        })
    }

    fn delta(&mut self, delta: &mut DeltaParts<'a>) -> Option<()> {
        let mut seen = Seen::default();
        self.object(|scanner, key| {
            match key {
                "content" => {
                    seen.first(0)?;
                    let start = scanner.pos;
                    delta.content = scanner.text()?;
                    if delta.content.0.is_some() {
                        scanner.content = Some(start..scanner.pos);
                    }
                }
                "refusal" => {
                    seen.first(1)?;
                    delta.refusal = scanner.text()?;
                }
                "reasoning_content" => {
                    seen.first(2)?;
                    delta.reasoning_content = scanner.text()?;
                }
                "reasoning" => {
                    seen.first(3)?;
                    delta.reasoning = scanner.text()?;
                }
                "reasoning_event" => {
                    seen.first(4)?;
                    delta.reasoning_event = scanner.value()?;
                }
                "tool_calls" => {
                    seen.first(5)?;
                    let calls: Option<Vec<ToolCallDelta<'a>>> = scanner.by_serde()?;
                    delta.tool_calls = calls.unwrap_or_default();
                }
                _ => scanner.skip()?,
            }
            Some(())
        })
    }

    /// An object, calling `field` at each value with its key (keys with escapes go to
    /// serde, which compares them unescaped).
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.whitespace();
        self.expect(b'{')?;
        self.whitespace();
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            self.whitespace();
            let (key, escaped) = self.string()?;
            if escaped {
                return None;
            }
            self.whitespace();
            self.expect(b':')?;
            self.whitespace();
            field(self, key)?;
            self.whitespace();
            if self.eat(b'}') {
                return Some(());
            }
            self.expect(b',')?;
        }
    }

    /// An array, calling `element` at each element.
    fn array(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.whitespace();
        self.expect(b'[')?;
        self.whitespace();
        if self.eat(b']') {
            return Some(());
        }
        loop {
            self.whitespace();
            element(self)?;
            self.whitespace();
            if self.eat(b']') {
                return Some(());
            }
            self.expect(b',')?;
        }
    }

    /// A text field: a string (borrowed when it has no escapes) or `null`.
    fn text(&mut self) -> Option<Text<'a>> {
        if self.literal("null") {
            return Some(Text(None));
        }
        let start = self.pos;
        let (text, escaped) = self.string()?;
        if escaped {
            // Unescaping, surrogates included, is serde's.
            let quoted = self.text.get(start..self.pos)?;
            return serde_json::from_str(quoted).ok();
        }
        Some(Text(Some(Cow::Borrowed(text))))
    }

    /// A choice's `index`: `null` or a plain non-negative integer that fits a `u64`.
    fn index(&mut self) -> Option<Option<u64>> {
        if self.literal("null") {
            return Some(None);
        }
        self.integer().map(Some)
    }

    /// A value kept as JSON: `null` is absent, a plain integer (a `created`) is read
    /// here, anything else by serde.
    fn value(&mut self) -> Option<Option<Value>> {
        if self.literal("null") {
            return Some(None);
        }
        let start = self.pos;
        if let Some(number) = self.integer() {
            return Some(Some(Value::from(number)));
        }
        self.pos = start;
        self.by_serde()
    }

    /// The value here, delimited by the scanner and read by serde on its own.
    fn by_serde<T: Deserialize<'a>>(&mut self) -> Option<T> {
        let start = self.pos;
        self.skip()?;
        serde_json::from_str(self.text.get(start..self.pos)?).ok()
    }

    /// Digits without a leading zero, not followed by a fraction or exponent, within `u64`.
    fn integer(&mut self) -> Option<u64> {
        let bytes = self.text.as_bytes();
        let start = self.pos;
        let mut number = 0_u64;
        while let Some(&digit @ b'0'..=b'9') = bytes.get(self.pos) {
            number = number
                .checked_mul(10)?
                .checked_add(u64::from(digit - b'0'))?;
            self.pos += 1;
        }
        let digits = self.pos - start;
        let leading_zero = digits > 1 && bytes[start] == b'0';
        let fraction = matches!(bytes.get(self.pos), Some(b'.' | b'e' | b'E'));
        (digits > 0 && !leading_zero && !fraction).then_some(number)
    }

    /// Skips any one value, checking it as serde's skipping does.
    fn skip(&mut self) -> Option<()> {
        self.skip_nested(0)
    }

    fn skip_nested(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(|scanner, _| scanner.skip_nested(depth + 1)),
            b'[' => self.array(|scanner| scanner.skip_nested(depth + 1)),
            b'n' => self.literal("null").then_some(()),
            b't' => self.literal("true").then_some(()),
            b'f' => self.literal("false").then_some(()),
            b'-' => {
                self.pos += 1;
                self.number()
            }
            b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// A number's syntax, as JSON has it.
    fn number(&mut self) -> Option<()> {
        match self.peek()? {
            b'0' => {
                self.pos += 1;
                if matches!(self.peek(), Some(b'0'..=b'9')) {
                    return None;
                }
            }
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.') {
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return None;
            }
            self.digits();
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return None;
            }
            self.digits();
        }
        Some(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    /// A string at the cursor: its text between the quotes, and whether it holds
    /// escapes (checked for form, not decoded). Control characters go to serde, which
    /// refuses them.
    fn string(&mut self) -> Option<(&'a str, bool)> {
        self.expect(b'"')?;
        let start = self.pos;
        let (end, escaped) = string_end(self.text.as_bytes(), start)?;
        self.pos = end + 1;
        Some((self.text.get(start..end)?, escaped))
    }

    /// Consumes `word` when the input has it here.
    fn literal(&mut self, word: &str) -> bool {
        let found = self
            .text
            .as_bytes()
            .get(self.pos..)
            .is_some_and(|rest| rest.starts_with(word.as_bytes()));
        if found {
            self.pos += word.len();
        }
        found
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::scanner_agrees_with_serde;
    use super::*;

    /// Scans `data` into a fresh chunk, `None` when it goes to serde.
    fn scanned(data: &str) -> Option<ChunkParts<'_>> {
        let mut chunk = ChunkParts::default();
        scan(data, &mut chunk).then_some(chunk)
    }

    #[test]
    fn a_typical_content_delta_is_read_by_the_scanner_borrowing_its_text() {
        let data = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":null,"choices":[{"index":0,"delta":{"content":"word "},"logprobs":null,"finish_reason":null}],"usage":null}"#;
        assert!(scanner_agrees_with_serde(data));
        let chunk = scanned(data).expect("scanned");
        assert!(matches!(
            chunk.choice.delta.content.0,
            Some(Cow::Borrowed("word "))
        ));
        assert_eq!(chunk.created, Some(Value::from(1)));
    }

    #[test]
    fn usage_error_tool_calls_and_escaped_text_are_read_as_serde_reads_them() {
        for data in [
            r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}"#,
            r#"{"error":{"message":"overloaded","code":null}}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{\"x\""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a\n\"b\" \u00e9 \ud83c\udf0d"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning_event":{"type":"start"},"reasoning":"r"}}]}"#,
            r#" { "created" : 1.5 , "choices" : null } "#,
            r#"{"choices":[{"delta":{"content":"one"},"index":1},{"delta":{"content":"zero"}}]}"#,
            r#"{"choices":[{"index":0,"delta":null,"finish_reason":"stop"}]}"#,
        ] {
            assert!(scanner_agrees_with_serde(data), "{data}");
        }
    }

    #[test]
    fn what_the_scanner_does_not_read_itself_goes_to_serde() {
        for data in [
            // Escaped and repeated keys.
            r#"{"choices":[{"index":0,"delta":{"\u0063ontent":"x"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a","content":"b"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"a"},"delta":{"refusal":"b"}}]}"#,
            // A text field of another type, an index that is not a plain integer.
            r#"{"id":7,"choices":[]}"#,
            r#"{"choices":[{"index":-0,"delta":{"content":"x"}}]}"#,
            r#"{"choices":[{"index":1.0,"delta":{"content":"x"}}]}"#,
            // A lone surrogate, a control character, malformed or truncated JSON.
            r#"{"choices":[{"index":0,"delta":{"content":"\ud800"}}]}"#,
            "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\tb\"}}]}",
            r#"{"choices":[{"index":0,"delta":{"content":"x"}}],"bad":tru}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"x"#,
            r#"{"a":01}"#,
            r#"{"a":1,}"#,
            "{} {}",
            "[]",
            "",
        ] {
            assert!(scanned(data).is_none(), "{data}");
            scanner_agrees_with_serde(data);
        }
    }

    #[test]
    fn content_inside_another_string_is_not_content() {
        let data = r#"{"model":"\"content\":\"no\"","choices":[{"index":0,"delta":{"refusal":"{\"content\":1}","content":"yes"}}]}"#;
        assert!(scanner_agrees_with_serde(data));
        let plain =
            r#"{"object":"\"content\": x","choices":[{"index":0,"delta":{"content":"yes"}}]}"#;
        let chunk = scanned(plain).expect("scanned");
        assert_eq!(chunk.choice.delta.content.non_empty(), Some("yes"));
    }

    mod properties {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::super::super::scanner_agrees_with_serde;

        /// A JSON tree whose keys and scalars are written out as text, so that it can
        /// hold what serde_json would never write: repeated and escaped keys, odd numbers,
        /// raw control characters, lone surrogates.
        #[derive(Clone, Debug)]
        enum Json {
            Raw(String),
            Array(Vec<Json>),
            Object(Vec<(String, Json)>),
        }

        impl Json {
            fn write(&self, out: &mut String, space: &str) {
                match self {
                    Json::Raw(text) => out.push_str(text),
                    Json::Array(items) => {
                        out.push('[');
                        for (i, item) in items.iter().enumerate() {
                            if i > 0 {
                                out.push(',');
                                out.push_str(space);
                            }
                            item.write(out, space);
                        }
                        out.push(']');
                    }
                    Json::Object(members) => {
                        out.push('{');
                        out.push_str(space);
                        for (i, (key, value)) in members.iter().enumerate() {
                            if i > 0 {
                                out.push(',');
                            }
                            out.push_str(key);
                            out.push_str(space);
                            out.push(':');
                            value.write(out, space);
                        }
                        out.push_str(space);
                        out.push('}');
                    }
                }
            }
        }

        const KEYS: [&str; 18] = [
            "id",
            "model",
            "system_fingerprint",
            "created",
            "usage",
            "error",
            "choices",
            "object",
            "index",
            "delta",
            "finish_reason",
            "content",
            "refusal",
            "reasoning_content",
            "reasoning",
            "reasoning_event",
            "tool_calls",
            "function",
        ];

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                8 => prop::sample::select(&KEYS[..]).prop_map(|key| format!("\"{key}\"")),
                1 => Just(r#""\u0063ontent""#.to_owned()),
                1 => Just(r#""con\ntent""#.to_owned()),
                1 => Just("\"é\"".to_owned()),
                1 => "[a-z_]{0,6}".prop_map(|key| format!("\"{key}\"")),
            ]
        }

        fn string() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => "[ -~é世🌍]{0,10}".prop_map(|text| serde_json::to_string(&text).unwrap_or_default()),
                2 => any::<String>().prop_map(|text| serde_json::to_string(&text).unwrap_or_default()),
                1 => Just(r#""\"content\":\"x\"""#.to_owned()),
                1 => Just(r#""\ud800""#.to_owned()),
                1 => Just(r#""\ud83c\udf0d\u00E9\/\b\f""#.to_owned()),
                1 => Just(r#""\x""#.to_owned()),
                1 => Just(r#""\u12""#.to_owned()),
                1 => Just("\"a\u{1}b\"".to_owned()),
                1 => Just("\"\u{7f}\"".to_owned()),
            ]
        }

        fn scalar() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => string(),
                2 => Just("null".to_owned()),
                1 => prop::sample::select(&[
                    "0", "1", "7", "-1", "-0", "01", "1.5", "1.", "1e400", "2E+3", "1e", "-",
                    "18446744073709551615", "18446744073709551616", "true", "false", "nul", "tru",
                ][..]).prop_map(str::to_owned),
                1 => any::<u64>().prop_map(|n| n.to_string()),
            ]
        }

        fn json() -> impl Strategy<Value = Json> {
            scalar()
                .prop_map(Json::Raw)
                .prop_recursive(5, 48, 5, |inner| {
                    prop_oneof![
                        vec(inner.clone(), 0..4).prop_map(Json::Array),
                        vec((key(), inner), 0..5).prop_map(Json::Object),
                    ]
                })
        }

        /// A chunk shaped as providers send them, its fields and values drawn from the
        /// above so that any of them may be odd.
        fn chunk() -> impl Strategy<Value = Json> {
            let delta = vec((key(), json()), 0..4).prop_map(Json::Object);
            let choice = (
                prop::option::of(scalar()),
                prop::option::of(delta),
                vec((key(), json()), 0..2),
            )
                .prop_map(|(index, delta, mut rest)| {
                    if let Some(index) = index {
                        rest.insert(0, ("\"index\"".to_owned(), Json::Raw(index)));
                    }
                    if let Some(delta) = delta {
                        rest.push(("\"delta\"".to_owned(), delta));
                    }
                    Json::Object(rest)
                });
            (vec(choice, 0..3), vec((key(), json()), 0..5)).prop_map(|(choices, mut rest)| {
                rest.push(("\"choices\"".to_owned(), Json::Array(choices)));
                Json::Object(rest)
            })
        }

        /// Any JSON value serde_json writes, a few levels deep.
        fn written() -> impl Strategy<Value = serde_json::Value> {
            use serde_json::Value;
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                any::<String>().prop_map(Value::from),
            ];
            leaf.prop_recursive(4, 32, 4, |inner| {
                prop_oneof![
                    vec(inner.clone(), 0..4).prop_map(Value::from),
                    prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                        .prop_map(|map| Value::Object(map.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2048))]

            #[test]
            fn the_scanner_reads_well_formed_chunks_itself_as_serde_does(
                content in any::<String>(),
                id in any::<String>(),
                created in any::<u64>(),
                finish in prop::option::of("[a-z_]{0,10}"),
                index in 0_u64..3,
                usage in prop::option::of(written()),
                other in written(),
                tool_call in prop::option::of((any::<String>(), written())),
            ) {
                let mut delta = serde_json::json!({"content": content, "x": other});
                if let Some((arguments, extra)) = tool_call {
                    delta["tool_calls"] = serde_json::json!([
                        {"index": 0, "function": {"arguments": arguments}, "extra": extra}
                    ]);
                }
                let data = serde_json::json!({
                    "id": id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
                    "usage": usage,
                })
                .to_string();
                prop_assert!(scanner_agrees_with_serde(&data), "handed to serde: {}", data);
            }

            #[test]
            fn the_scanner_reads_any_chunk_as_serde_does_or_hands_it_to_serde(
                chunk in chunk(),
                space in prop::sample::select(&["", " ", "\n\t ", "\r"][..]),
                cut in any::<prop::sample::Index>(),
                truncate in any::<bool>(),
            ) {
                let mut data = String::new();
                chunk.write(&mut data, space);
                scanner_agrees_with_serde(&data);
                if truncate {
                    let mut at = cut.index(data.len() + 1);
                    while !data.is_char_boundary(at) {
                        at -= 1;
                    }
                    scanner_agrees_with_serde(&data[..at]);
                }
            }

            #[test]
            fn the_scanner_agrees_with_serde_on_any_text(data in any::<String>()) {
                scanner_agrees_with_serde(&data);
            }
        }
    }
}
