//! The fast read of a request: whether a body is a chat request and whether it holds a
//! system message, found in one pass over the bytes, with [`parse_chat_request`] as the
//! reference it defers to. Without a system message it also notes where the `messages`
//! array and each message stand, and a plain message's role and content, so that a turn
//! builds its messages from those spans instead of reading the body again (the parse's
//! reads of the envelope and of the array took about 3,000 instructions of a new turn,
//! reading a message's role and content again with serde 1,500 more).
//!
//! Why a scan: a stateless request is forwarded as it came, so all the layer needs of it
//! is those two answers; building every message as a `serde_json::Value` to get them was
//! most of what the layer added to a stateless request (the cost issue measured +6,600
//! instructions on a 100-byte request, over a passthrough request of ~61,000).
//!
//! The scan stops at the first system message: once one whole message with role
//! `system` or `developer` has been read in the top-level `messages`, the request is
//! forwarded as it came whatever follows, so the rest is not read. The layer's cost for
//! a stateless request then depends on where its first system message ends, not on the
//! length of what it sends after it (a stateless client's whole history, for one).
//!
//! The contract with serde: [`scan_chat_request`] answers `Some` with no system message
//! only for a body [`parse_chat_request`] reads as a chat request without one, and
//! `Some` with a system message only for a body the parse reads as a chat request with
//! one, or refuses for something after that message (a later member malformed, trailing
//! bytes, `messages` twice). The layer forwards such a body as it came either way; only
//! its count in the metrics differs (`stateless`, not `passthrough`). `None` means
//! "parse it" (the body may or may not be a chat request). Up to its stop, the scan
//! answers `None` on whatever it does not check itself: a key with an escape, `role`
//! twice, a `role` with an escape, a `\u` escape of a surrogate, inside a message a
//! number that is not a plain integer of up to 18 digits (serde builds those as floats
//! and refuses the ones out of range), deep nesting, and anything malformed. A
//! differential property test and the `request_scan` fuzz target hold it to that.
//!
//! [`parse_chat_request`]: super::parse_chat_request

use std::ops::Range;

use crate::swar::{escape_stops, repeated};

/// What the scan found in a body it is sure of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RequestShape {
    /// Whether any message has role `system` or `developer`.
    pub(crate) has_system_message: bool,
    /// Where the `messages` array and each message in it stand, as the parse finds them:
    /// filled only without a system message (with one the scan stops before the end),
    /// so that a request that starts or continues a conversation builds its messages
    /// from them without reading the body a second time.
    pub(crate) spans: Option<MessageSpans>,
}

/// Where a body's `messages` array stands, and each message in it, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MessageSpans {
    pub(crate) array: Range<usize>,
    pub(crate) messages: Vec<ScannedMessage>,
}

/// Where a message stands, and the parts of it a turn stores beside its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ScannedMessage {
    /// The message, from its opening brace to its closing one.
    pub(crate) span: Range<usize>,
    /// Its role's text (the scan reads only a role without escapes).
    pub(crate) role: Range<usize>,
    /// Its `content` string's text, when the message is plain: one `content`, a string
    /// without escapes, and no `refusal` but a null one. Its words are then that text.
    pub(crate) content: Option<Range<usize>>,
}

/// What the scan read of one message.
struct MessageRead {
    system: bool,
    role: Range<usize>,
    content: Option<Range<usize>>,
}

/// Reads `body` far enough to decide its mode: `Some` when it is a chat request exactly
/// as [`parse_chat_request`](super::parse_chat_request) has it, `None` when the parse
/// must decide.
pub(crate) fn scan_chat_request(body: &[u8]) -> Option<RequestShape> {
    // JSON text is UTF-8 throughout, skipped members included. Outside strings the scan
    // takes ASCII bytes only, so checking each string that holds other bytes checks the
    // whole body, and most strings hold none.
    let mut scanner = Scanner {
        bytes: body,
        pos: 0,
        system_message_read: false,
    };
    scanner.whitespace();
    let shape = scanner.envelope();
    if scanner.system_message_read {
        return Some(RequestShape {
            has_system_message: true,
            spans: None,
        });
    }
    let shape = shape?;
    scanner.whitespace();
    (scanner.pos == scanner.bytes.len()).then_some(shape)
}

/// Whether `text` is surely one JSON object as serde_json reads one (as
/// `RawValue::from_string` does, which a stored message's text must pass before it is
/// spliced), with nothing around it: the same checks the scan makes of a member it
/// skips, a word at a time. `false` means the parse must decide (the text may still be
/// an object, with whitespace around it, a key serde treats specially, or more nesting
/// than the scan follows).
#[cfg(any(feature = "sqlite", feature = "fuzzing", test))]
pub(crate) fn is_one_object(text: &[u8]) -> bool {
    let mut scanner = Scanner {
        bytes: text,
        pos: 0,
        system_message_read: false,
    };
    scanner.peek() == Some(b'{')
        && scanner.skip(0, Within::Skipped).is_some()
        && scanner.pos == text.len()
}

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

/// How far the plain run of a string that starts at `at` goes: the position of the
/// first quote, backslash, control character or byte past ASCII, or the end of `bytes`.
///
/// It reads eight bytes a step as a word: most strings in a request are keys and short
/// values that end within a word or two, where a byte a step costs a loop turn each.
fn plain_ascii_run(bytes: &[u8], mut at: usize) -> usize {
    while let Some(word) = bytes
        .get(at..at + 8)
        .and_then(|word| <[u8; 8]>::try_from(word).ok())
    {
        // Little-endian, so that the first byte in the text is the lowest in the word.
        let found = run_ends(u64::from_le_bytes(word));
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while let Some(&byte) = bytes.get(at) {
        if SPECIAL[usize::from(byte)] || !byte.is_ascii() {
            break;
        }
        at += 1;
    }
    at
}

/// [`plain_ascii_run`] two words a step, for the text of a value past its first escape
/// or byte beyond ASCII: a prompt's lines, each after an escaped newline, run for dozens
/// of bytes, and a step of two words costs fewer instructions a byte (a 4 KiB prompt of
/// 88-byte lines: 11,100 instructions a scan, then 9,200). Keys and short values keep the
/// one-word step, which ends sooner for them.
fn long_plain_ascii_run(bytes: &[u8], mut at: usize) -> usize {
    while let Some(pair) = bytes
        .get(at..at + 16)
        .and_then(|pair| <[u8; 16]>::try_from(pair).ok())
    {
        let pair = u128::from_le_bytes(pair);
        let (first, second) = (run_ends(pair as u64), run_ends((pair >> 64) as u64));
        if first | second != 0 {
            let bit = match first {
                0 => 64 + second.trailing_zeros(),
                _ => first.trailing_zeros(),
            };
            return at + (bit / 8) as usize;
        }
        at += 16;
    }
    plain_ascii_run(bytes, at)
}

/// The high bit of each byte of `word` (little-endian) that ends a plain run, and
/// perhaps of bytes after it, never before: the lowest bit set is the first such byte.
/// A plain run also ends at a byte past ASCII, whose own high bit is set.
#[inline(always)]
fn run_ends(word: u64) -> u64 {
    escape_stops(word) | (word & repeated(0x80))
}

/// The key by which serde_json (with its `raw_value` feature, which the crate uses)
/// marks a raw value: an object holding it is not read as a map, and one whose value
/// is not a string fails to parse. Any object with it goes to the parse. (Found by the
/// `request_scan` fuzz target.)
const RAW_VALUE_KEY: &[u8] = b"$serde_json::private::RawValue";

/// Nesting deeper than this goes to the parse: serde refuses a message nested past 128
/// levels, and requests never come near this.
const MAX_DEPTH: u32 = 32;

/// The most digits of an integer in a message that surely fits an `i64` or `u64`, so
/// that serde reads it as an integer and never as a float out of range.
const MAX_PLAIN_DIGITS: usize = 18;

/// Where a value stands, for the checks that differ: serde builds the messages as
/// values, and only skips the other members.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Within {
    /// A member other than `messages`: skipped by serde, numbers checked for form only.
    Skipped,
    /// A message: built by serde, so a number may be out of range.
    Message,
}

/// A position in the body. Every method returns `None` to mean "the parse decides".
struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Set where the read stopped at a whole system message; the read then unwinds as
    /// from a failure, and [`scan_chat_request`] looks here first.
    system_message_read: bool,
}

impl<'a> Scanner<'a> {
    /// The top-level object, with its one `messages` member.
    fn envelope(&mut self) -> Option<RequestShape> {
        let mut shape = None;
        self.object(|scanner, key| {
            if key != b"messages" {
                return scanner.skip(2, Within::Skipped);
            }
            if shape.is_some() {
                return None;
            }
            shape = Some(scanner.messages()?);
            Some(())
        })?;
        shape
    }

    /// The `messages` array: objects, each with a string `role`, read up to the end of
    /// the first system message, where the read stops (see [`scan_chat_request`]).
    /// Each message's span is noted as it is read; a request that starts with its system
    /// message (as stateless ones do) notes none, and allocates nothing.
    fn messages(&mut self) -> Option<RequestShape> {
        let start = self.pos;
        let mut messages = Vec::new();
        self.array(|scanner| {
            let at = scanner.pos;
            let read = scanner.message()?;
            if read.system {
                scanner.system_message_read = true;
                return None;
            }
            messages.push(ScannedMessage {
                span: at..scanner.pos,
                role: read.role,
                content: read.content,
            });
            Some(())
        })?;
        Some(RequestShape {
            has_system_message: false,
            spans: Some(MessageSpans {
                array: start..self.pos,
                messages,
            }),
        })
    }

    /// One message: whether its role is `system` or `developer`, where its role's text
    /// stands, and where its content's does when the message is plain (see
    /// [`ScannedMessage::content`]).
    fn message(&mut self) -> Option<MessageRead> {
        let mut role = None;
        let mut content = None;
        let mut contents = 0;
        let mut refused = false;
        self.object(|scanner, key| match key {
            b"role" => {
                if role.is_some() {
                    return None;
                }
                let start = scanner.pos + 1;
                let (text, escaped) = scanner.string()?;
                if escaped {
                    return None;
                }
                role = Some((
                    matches!(text, b"system" | b"developer"),
                    start..scanner.pos - 1,
                ));
                Some(())
            }
            b"content" => {
                contents += 1;
                if scanner.peek() != Some(b'"') {
                    return scanner.skip(4, Within::Message);
                }
                let start = scanner.pos + 1;
                let (_, escaped) = scanner.string()?;
                content = (!escaped).then(|| start..scanner.pos - 1);
                Some(())
            }
            b"refusal" => {
                refused |= scanner.peek() != Some(b'n');
                scanner.skip(4, Within::Message)
            }
            _ => scanner.skip(4, Within::Message),
        })?;
        let (system, role) = role?;
        Some(MessageRead {
            system,
            role,
            content: content.filter(|_| contents == 1 && !refused),
        })
    }

    /// An object at the cursor, calling `member` at each value with its key.
    ///
    /// Like every value, it starts at the cursor: whoever reads a value has skipped the
    /// whitespace before it, once.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.expect(b'{')?;
        self.whitespace();
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            let (key, escaped) = self.string()?;
            if escaped || key == RAW_VALUE_KEY {
                return None;
            }
            self.whitespace();
            self.expect(b':')?;
            self.whitespace();
            member(self, key)?;
            self.whitespace();
            if self.eat(b'}') {
                return Some(());
            }
            self.expect(b',')?;
            self.whitespace();
        }
    }

    /// An array at the cursor, calling `element` at each element.
    fn array(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.expect(b'[')?;
        self.whitespace();
        if self.eat(b']') {
            return Some(());
        }
        loop {
            element(self)?;
            self.whitespace();
            if self.eat(b']') {
                return Some(());
            }
            self.expect(b',')?;
            self.whitespace();
        }
    }

    /// Skips any one value at nesting `depth`, checking it as serde would there.
    fn skip(&mut self, depth: u32, within: Within) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(|scanner, _| scanner.skip(depth + 1, within)),
            b'[' => self.array(|scanner| scanner.skip(depth + 1, within)),
            b'n' => self.literal(b"null"),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'-' | b'0'..=b'9' => self.number(within),
            _ => None,
        }
    }

    /// A number, as JSON writes it; in a message only a plain integer serde reads as one.
    fn number(&mut self, within: Within) -> Option<()> {
        self.eat(b'-');
        let start = self.pos;
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
        let plain = self.pos - start <= MAX_PLAIN_DIGITS;
        let mut fraction = false;
        if self.eat(b'.') {
            fraction = true;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return None;
            }
            self.digits();
        }
        if self.eat(b'e') || self.eat(b'E') {
            fraction = true;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return None;
            }
            self.digits();
        }
        match within {
            Within::Skipped => Some(()),
            Within::Message => (plain && !fraction).then_some(()),
        }
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    /// A string at the cursor: its bytes between the quotes, and whether it holds escapes
    /// (checked for form, not decoded). Control characters and escaped surrogates go to
    /// the parse: serde refuses the first, and a lone surrogate only inside a message.
    #[inline]
    fn string(&mut self) -> Option<(&'a [u8], bool)> {
        self.expect(b'"')?;
        let bytes = self.bytes;
        let start = self.pos;
        let at = plain_ascii_run(bytes, start);
        // Most strings in a request are plain ASCII to their closing quote: read here,
        // in the caller, and only the rest in a call of its own.
        if bytes.get(at) == Some(&b'"') {
            self.pos = at + 1;
            return Some((bytes.get(start..at)?, false));
        }
        self.string_past_the_plain_run(start, at)
    }

    /// The rest of a string that starts at `start` and whose plain ASCII run ends at
    /// `at`: escapes, bytes past ASCII, or a byte that is no part of a string.
    #[inline(never)]
    fn string_past_the_plain_run(
        &mut self,
        start: usize,
        mut at: usize,
    ) -> Option<(&'a [u8], bool)> {
        let bytes = self.bytes;
        let mut escaped = false;
        let mut ascii = true;
        loop {
            match *bytes.get(at)? {
                b'"' => break,
                0x80.. => {
                    ascii = false;
                    at += 1;
                }
                b'\\' => {
                    escaped = true;
                    at += 1;
                    match *bytes.get(at)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 1,
                        b'u' => {
                            let hex = bytes.get(at + 1..at + 5)?;
                            let hex = std::str::from_utf8(hex).ok()?;
                            if !hex.bytes().all(|digit| digit.is_ascii_hexdigit()) {
                                return None;
                            }
                            let unit = u16::from_str_radix(hex, 16).ok()?;
                            if (0xD800..=0xDFFF).contains(&unit) {
                                return None;
                            }
                            at += 5;
                        }
                        _ => return None,
                    }
                }
                _ => return None,
            }
            if ascii {
                at = long_plain_ascii_run(bytes, at);
            } else {
                // Past the first byte beyond ASCII: one table look-up a byte, the
                // position kept local, and UTF-8 checked once the string ends.
                while let Some(&byte) = bytes.get(at) {
                    if SPECIAL[usize::from(byte)] {
                        break;
                    }
                    at += 1;
                }
            }
        }
        let content = bytes.get(start..at)?;
        // Escapes are ASCII: checking the raw bytes checks the text.
        if !ascii && std::str::from_utf8(content).is_err() {
            return None;
        }
        self.pos = at + 1;
        Some((content, escaped))
    }

    /// Consumes `word`, or answers `None` when the input does not have it here.
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let rest = self.bytes.get(self.pos..)?;
        if !rest.starts_with(word) {
            return None;
        }
        self.pos += word.len();
        Some(())
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
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
    use super::super::scan_agrees_with_parse;
    use super::*;

    #[test]
    fn a_typical_stateless_request_is_read_by_the_scan() {
        let body = br#"{"model":"m","stream":true,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Tell me something."}],"temperature":0.7}"#;
        assert!(scan_agrees_with_parse(body));
        let shape = scan_chat_request(body).expect("scanned");
        assert!(shape.has_system_message);
    }

    #[test]
    fn developer_messages_count_as_system_messages_and_others_do_not() {
        let developer = br#"{"messages":[{"content":"x","role":"developer"}]}"#;
        let neither = br#" { "messages" : [ {"role":"user"} , {"role":"assistant","content":null,"n":-12} ] } "#;
        assert_eq!(
            scan_chat_request(developer).map(|shape| shape.has_system_message),
            Some(true)
        );
        assert_eq!(
            scan_chat_request(neither).map(|shape| shape.has_system_message),
            Some(false)
        );
        assert!(scan_agrees_with_parse(developer) && scan_agrees_with_parse(neither));
    }

    #[test]
    fn serde_jsons_raw_value_key_is_left_to_the_parse() {
        let inside =
            br#"{"messages":[{"role":"system","x":[{"$serde_json::private::RawValue":[]}]}]}"#;
        let elsewhere = br#"{"messages":[{"role":"user"}],"$serde_json::private::RawValue":1}"#;
        assert_eq!(scan_chat_request(inside), None);
        assert_eq!(scan_chat_request(elsewhere), None);
        assert!(super::super::parse_chat_request(inside).is_none());
    }

    #[test]
    fn system_inside_another_string_or_member_is_not_a_role() {
        let body = br#"{"role":"system","messages":[{"content":"\"role\":\"system\"","role":"user","x":{"role":"system"}}]}"#;
        assert_eq!(
            scan_chat_request(body).map(|shape| shape.has_system_message),
            Some(false)
        );
        assert!(scan_agrees_with_parse(body));
    }

    #[test]
    fn what_the_scan_does_not_check_itself_goes_to_the_parse() {
        for body in [
            // Escaped and repeated keys, an escaped role.
            &br#"{"m\u0065ssages":[{"role":"system"}]}"#[..],
            br#"{"messages":[{"r\u006fle":"system"}]}"#,
            br#"{"messages":[{"role":"user","role":"system"}]}"#,
            br#"{"messages":[],"messages":[{"role":"system"}]}"#,
            br#"{"messages":[{"role":"syst\u0065m"}]}"#,
            // Numbers serde builds as floats inside a message, a surrogate, a control
            // character, deep nesting.
            br#"{"messages":[{"role":"system","n":1e400}]}"#,
            br#"{"messages":[{"role":"system","n":1.5}]}"#,
            br#"{"messages":[{"role":"system","n":1234567890123456789}]}"#,
            br#"{"messages":[{"role":"system","content":"\ud83c\udf0d"}]}"#,
            b"{\"messages\":[{\"role\":\"system\",\"content\":\"a\tb\"}]}",
            format!(
                r#"{{"messages":[{{"role":"system","x":{}{}}}]}}"#,
                "[".repeat(40),
                "]".repeat(40)
            )
            .as_bytes(),
            // Not chat requests: malformed, truncated, not an object, no messages array,
            // a message that is not an object with a string role, trailing bytes.
            br#"{"messages":[{"role":"user"}],"x":tru}"#,
            br#"{"messages":[{"role":"user"}]"#,
            br#"{"messages":[{"role":"system""#,
            br#"[{"role":"system"}]"#,
            br#"{"model":"m"}"#,
            br#"{"messages":{"role":"system"}}"#,
            br#"{"messages":[{"role":1}]}"#,
            br#"{"messages":["system"]}"#,
            br#"{"messages":[{"role":"user"}]} {}"#,
            b"\x0c{\"messages\":[]}",
            b"{\"messages\":[],\"x\":\"\xff\"}",
            b"",
        ] {
            assert_eq!(
                scan_chat_request(body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
            scan_agrees_with_parse(body);
        }
    }

    #[test]
    fn a_body_is_read_up_to_the_end_of_its_first_system_message() {
        // What follows it is not read: these the parse refuses, and the layer forwards
        // them as they came all the same.
        for body in [
            &br#"{"messages":[{"role":"system"},{"role":1}]}"#[..],
            br#"{"messages":[{"role":"developer"}],"x":tru}"#,
            br#"{"messages":[{"role":"system"}"#,
            br#"{"messages":[{"role":"system"}]"#,
            br#"{"messages":[{"role":"system"}]} {}"#,
            br#"{"messages":[{"role":"system"}],"messages":[{"role":"user"}]}"#,
            b"{\"messages\":[{\"role\":\"system\"},\"\xff\"]}",
        ] {
            assert_eq!(
                scan_chat_request(body),
                Some(RequestShape {
                    has_system_message: true,
                    spans: None,
                }),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert!(super::super::parse_chat_request(body).is_none());
            assert!(scan_agrees_with_parse(body));
        }
        // Up to there it is read as before: a system message itself malformed, or with
        // its role twice, is the parse's to decide.
        for body in [
            &br#"{"messages":[{"role":"system","x":tru}]}"#[..],
            br#"{"messages":[{"role":"system","role":"user"}]}"#,
            br#"{"messages":[{"role":"user","n":1.5},{"role":"system"}]}"#,
        ] {
            assert_eq!(
                scan_chat_request(body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn strings_past_ascii_are_read_when_they_are_utf8_and_left_to_the_parse_when_not() {
        let body = "{\"model\":\"é\",\"messages\":[{\"role\":\"system\",\"content\":\"Réponds brièvement, 日本語で\"}]}";
        assert_eq!(
            scan_chat_request(body.as_bytes()).map(|shape| shape.has_system_message),
            Some(true)
        );
        assert!(scan_agrees_with_parse(body.as_bytes()));
        for bad in [
            &b"\xff"[..],
            b"\xc3",
            b"\xc3(",
            b"\xed\xa0\x80",
            b"a\xe6\x97",
        ] {
            let mut body = br#"{"messages":[{"role":"user","content":"abc"#.to_vec();
            body.extend_from_slice(bad);
            body.extend_from_slice(br#"xyz"}]}"#);
            assert_eq!(scan_chat_request(&body), None, "{body:?}");
            assert!(!scan_agrees_with_parse(&body));
        }
    }

    /// The plain run a byte at a time, as the word-wise one must find it.
    fn plain_run_bytewise(bytes: &[u8], at: usize) -> usize {
        bytes
            .iter()
            .skip(at)
            .position(|&byte| SPECIAL[usize::from(byte)] || !byte.is_ascii())
            .map_or(bytes.len().max(at), |run| at + run)
    }

    #[test]
    fn the_plain_run_ends_at_each_byte_that_ends_it_wherever_it_stands() {
        for end in [b'"', b'\\', 0x00, 0x1f, 0x80, 0xff] {
            for length in 0..40 {
                for at in 0..=length {
                    let mut bytes = vec![b'a'; length];
                    bytes.extend_from_slice(&[end, b' ', b'!', 0x7f, b'~']);
                    // Room for a whole step of two words past any byte that ends it.
                    bytes.extend_from_slice(b"0123456789abcdef");
                    for run in [plain_ascii_run, long_plain_ascii_run] {
                        assert_eq!(
                            run(&bytes, at),
                            length,
                            "{end:#x} after {length} bytes, from {at}"
                        );
                    }
                }
            }
        }
        for run in [plain_ascii_run, long_plain_ascii_run] {
            assert_eq!(run(b"0123456789", 0), 10);
            assert_eq!(run(b"0123456789", 10), 10);
            assert_eq!(run(&[b'x'; 100], 3), 100);
        }
    }

    #[test]
    fn a_long_system_prompt_with_escapes_and_other_scripts_is_read_by_the_scan() {
        let line = r#"Réponds brièvement, \"poliment\" et en français : 日本語も可。\n"#;
        let prompt = line.repeat(40);
        let question = "Hello there, how are you today? ".repeat(10) + "Say it.";
        let body = format!(
            r#"{{"model":"m","messages":[{{"role":"system","content":"{prompt}"}},{{"role":"user","content":"{question}"}}]}}"#
        );
        assert!(scan_agrees_with_parse(body.as_bytes()));
        let shape = scan_chat_request(body.as_bytes()).expect("scanned");
        assert!(shape.has_system_message);
        // A control character deep in the long prompt, ASCII or not around it, still
        // sends the body to the parse; one in the message after it is not read.
        for (from, to) in [("et en", "et\ten"), ("日本語も可", "日本語\tも可")] {
            let broken = body.replacen(from, to, 1);
            assert!(broken.contains('\t'));
            assert_eq!(scan_chat_request(broken.as_bytes()), None, "{to}");
        }
        let after = body.replacen("Say it", "Say\tit", 1);
        assert_eq!(scan_chat_request(after.as_bytes()), Some(shape));
    }

    #[test]
    fn members_outside_the_messages_are_checked_only_for_form() {
        // serde skips them without building their numbers.
        let body = br#"{"temperature":1e400,"stop":"\u00e9\n","messages":[{"role":"user"}],"x":[-0.5E+3,{"a":[true,false,null]}]}"#;
        assert!(scan_agrees_with_parse(body));
    }

    #[test]
    fn only_a_plain_message_has_its_content_noted() {
        let content = |body: &[u8]| {
            assert!(
                scan_agrees_with_parse(body),
                "{}",
                String::from_utf8_lossy(body)
            );
            let spans = scan_chat_request(body).and_then(|shape| shape.spans);
            let message = spans.expect("spans").messages.remove(0);
            message
                .content
                .map(|at| String::from_utf8_lossy(&body[at]).into_owned())
        };
        let plain = br#"{"messages":[{"role":"user","content":"hi","refusal":null}]}"#;
        assert_eq!(content(plain).as_deref(), Some("hi"));
        for other in [
            &br#"{"messages":[{"role":"user","content":"h\u0069"}]}"#[..],
            br#"{"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#,
            br#"{"messages":[{"role":"assistant","content":"a","refusal":"no"}]}"#,
            br#"{"messages":[{"role":"user","content":"a","content":[{"type":"text","text":"b"}]}]}"#,
            br#"{"messages":[{"role":"user","content":"a","content":"b"}]}"#,
            br#"{"messages":[{"role":"user"}]}"#,
        ] {
            assert_eq!(content(other), None, "{}", String::from_utf8_lossy(other));
        }
    }

    mod properties {
        use proptest::collection::vec;
        use proptest::prelude::*;
        use serde_json::{Value, json};

        use super::super::super::scan_agrees_with_parse;

        /// Any JSON value serde_json writes, a few levels deep.
        fn written() -> impl Strategy<Value = Value> {
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

        /// A value a message holds that serde builds without floats.
        fn in_message() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                (-999_999_999_999_999_999_i64..=999_999_999_999_999_999).prop_map(Value::from),
                any::<String>().prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 16, 4, |inner| {
                prop_oneof![
                    vec(inner.clone(), 0..4).prop_map(Value::from),
                    prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                        .prop_map(|map| Value::Object(map.into_iter().collect())),
                ]
            })
        }

        fn role() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => prop::sample::select(&["user", "assistant", "tool", "system", "developer"][..])
                    .prop_map(str::to_owned),
                // Any other role serde_json writes without an escape.
                1 => "[^\"\\\\\\x00-\\x1f]{0,10}",
            ]
        }

        /// A JSON tree whose keys and scalars are written out as text, so that it can hold
        /// what serde_json never writes: repeated and escaped keys, odd numbers, raw control
        /// characters, surrogates.
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
                            }
                            out.push_str(space);
                            item.write(out, space);
                        }
                        out.push(']');
                    }
                    Json::Object(members) => {
                        out.push('{');
                        for (i, (key, value)) in members.iter().enumerate() {
                            if i > 0 {
                                out.push(',');
                            }
                            out.push_str(space);
                            out.push_str(key);
                            out.push(':');
                            out.push_str(space);
                            value.write(out, space);
                        }
                        out.push('}');
                    }
                }
            }
        }

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => prop::sample::select(&["\"messages\"", "\"role\"", "\"content\"", "\"refusal\"", "\"model\""][..])
                    .prop_map(str::to_owned),
                1 => Just(r#""m\u0065ssages""#.to_owned()),
                1 => Just(r#""r\u006fle""#.to_owned()),
                1 => "[a-z_é]{0,6}".prop_map(|key| format!("\"{key}\"")),
            ]
        }

        fn scalar() -> impl Strategy<Value = String> {
            prop_oneof![
                3 => prop::sample::select(&[
                    "\"system\"", "\"developer\"", "\"user\"", r#""syst\u0065m""#,
                    r#""\ud800""#, r#""\ud83c\udf0d""#, r#""\u00e9\n\"""#, r#""\x""#, "\"a\u{1}\"",
                    r#""\u12""#,
                ][..]).prop_map(str::to_owned),
                2 => any::<String>().prop_map(|text| serde_json::to_string(&text).unwrap_or_default()),
                2 => prop::sample::select(&[
                    "null", "true", "false", "nul", "0", "-0", "01", "1.5", "1.", "1e400",
                    "-1e400", "2E+3", "1e", "-", "123456789012345678", "1234567890123456789",
                    "18446744073709551616", "1e-400",
                ][..]).prop_map(str::to_owned),
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

        /// A request shaped as clients send them, any part of it possibly odd.
        fn odd_request() -> impl Strategy<Value = Json> {
            let message = vec((key(), json()), 0..4).prop_map(Json::Object);
            (
                vec(message, 0..4),
                vec((key(), json()), 0..4),
                any::<prop::sample::Index>(),
            )
                .prop_map(|(messages, mut rest, at)| {
                    let position = at.index(rest.len() + 1);
                    rest.insert(position, ("\"messages\"".to_owned(), Json::Array(messages)));
                    Json::Object(rest)
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2048))]

            #[test]
            fn the_scan_reads_well_formed_requests_itself_as_the_parse_does(
                messages in vec((
                    role(),
                    in_message(),
                    prop::option::of(prop_oneof![Just(Value::Null), any::<String>().prop_map(Value::from)]),
                    prop::collection::btree_map("[a-z_]{1,8}", in_message(), 0..3),
                ), 0..5),
                others in prop::collection::btree_map("[a-z_]{1,12}", written(), 0..5),
                pretty in any::<bool>(),
            ) {
                let messages: Vec<Value> = messages
                    .into_iter()
                    .map(|(role, content, refusal, mut extra)| {
                        extra.insert("role".to_owned(), Value::from(role));
                        extra.insert("content".to_owned(), content);
                        if let Some(refusal) = refusal {
                            extra.insert("refusal".to_owned(), refusal);
                        }
                        Value::Object(extra.into_iter().collect())
                    })
                    .collect();
                let mut body: serde_json::Map<String, Value> = others.into_iter().collect();
                body.insert("messages".to_owned(), json!(messages));
                let body = Value::Object(body);
                let text = if pretty {
                    serde_json::to_string_pretty(&body).expect("serializes")
                } else {
                    body.to_string()
                };
                prop_assert!(scan_agrees_with_parse(text.as_bytes()), "left to the parse: {}", text);
            }

            #[test]
            fn the_scan_reads_any_request_as_the_parse_does_or_leaves_it_to_the_parse(
                request in odd_request(),
                space in prop::sample::select(&["", " ", "\n\t ", "\r"][..]),
                cut in any::<prop::sample::Index>(),
                truncate in any::<bool>(),
            ) {
                let mut text = String::new();
                request.write(&mut text, space);
                scan_agrees_with_parse(text.as_bytes());
                if truncate {
                    let at = cut.index(text.len() + 1);
                    scan_agrees_with_parse(&text.as_bytes()[..at]);
                }
            }

            #[test]
            fn the_plain_run_is_found_word_by_word_as_byte_by_byte(
                bytes in vec(prop_oneof![
                    4 => 0x20_u8..0x7f,
                    1 => any::<u8>(),
                ], 0..48),
                at in any::<prop::sample::Index>(),
            ) {
                let at = at.index(bytes.len() + 1);
                prop_assert_eq!(
                    super::super::plain_ascii_run(&bytes, at),
                    super::plain_run_bytewise(&bytes, at)
                );
            }

            #[test]
            fn the_long_plain_run_is_found_two_words_a_step_as_byte_by_byte(
                bytes in vec(prop_oneof![
                    30 => 0x20_u8..0x7f,
                    1 => any::<u8>(),
                ], 0..120),
                at in any::<prop::sample::Index>(),
            ) {
                let at = at.index(bytes.len() + 1);
                prop_assert_eq!(
                    super::super::long_plain_ascii_run(&bytes, at),
                    super::plain_run_bytewise(&bytes, at)
                );
            }

            #[test]
            fn the_scan_agrees_with_the_parse_on_any_bytes(bytes in vec(any::<u8>(), 0..256)) {
                scan_agrees_with_parse(&bytes);
            }

            #[test]
            fn an_object_the_check_is_sure_of_is_one_for_serde(
                value in crate::strategies::json_value(
                    prop_oneof![Just(String::new()), "[a-z\"\\\\\u{0}-\u{1f}é🌍 ]{0,12}"].boxed()
                ),
                pretty in any::<bool>(),
                cut in any::<prop::sample::Index>(),
                truncate in any::<bool>(),
            ) {
                let text = if pretty {
                    serde_json::to_string_pretty(&value).expect("serializes")
                } else {
                    value.to_string()
                };
                let end = if truncate {
                    text.floor_char_boundary(cut.index(text.len() + 1))
                } else {
                    text.len()
                };
                let text = &text[..end];
                crate::chat::request::object_check_agrees_with_serde(text);
                // Keys with escapes, which the scan leaves to the parse, aside.
                if value.is_object() && !truncate && !text.contains('\\') {
                    let sure = crate::chat::request::is_one_object(text.as_bytes());
                    prop_assert!(sure, "not sure of {}", text);
                }
            }

            #[test]
            fn the_object_check_agrees_with_serde_on_any_text(text in "[{}\\[\\]\":, a-z0-9.eE+\\-\\\\]{0,40}") {
                crate::chat::request::object_check_agrees_with_serde(&text);
            }
        }
    }
}
