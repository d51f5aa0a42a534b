//! Marking a JSON reply `storage_failed` while it streams past, for replies too long
//! to read whole (beyond the capture limit).
//!
//! The reply cannot be parsed, so it is scanned: strings, nesting and the top-level
//! keys are tracked byte by byte, and `"metadata":{"storage_failed":true}` goes in
//! just before the brace that closes the top-level object. Nothing after that brace can
//! add a top-level member, so nothing needs to be held back to decide. A reply that has
//! its own top-level `metadata` (or a top-level key written with escapes, which might
//! spell it), or is not one JSON object, is left as it is: a second `metadata` key
//! would be read differently by different parsers.

/// The member added, after a comma when the object already has members.
const MEMBER: &[u8] = br#""metadata":{"storage_failed":true}"#;
const MEMBER_AFTER_COMMA: &[u8] = br#","metadata":{"storage_failed":true}"#;
/// The one top-level key the scan looks for, and how much of a key it keeps.
const METADATA: &[u8] = b"metadata";
const KEY_KEPT: usize = METADATA.len() + 1;

/// Scans a JSON reply piece by piece and says where the `storage_failed` member goes.
#[derive(Debug, Default)]
pub(crate) struct StorageFailedMarker {
    started: bool,
    /// The reply is not something this scan can mark; it is passed on unchanged.
    given_up: bool,
    marked: bool,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// At depth 1, the next string is a key.
    expecting_key: bool,
    /// The current string is a top-level key.
    in_key: bool,
    key: [u8; KEY_KEPT],
    key_len: usize,
    /// The top-level object has at least one member.
    has_members: bool,
}

/// Where, in the piece just scanned, the member goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Insertion {
    /// Offset in the piece: the bytes before it, then `member`, then the rest.
    pub(crate) at: usize,
    pub(crate) member: &'static [u8],
}

impl StorageFailedMarker {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Scans the next piece of the reply; `Some` when the member goes into this piece.
    pub(crate) fn feed(&mut self, piece: &[u8]) -> Option<Insertion> {
        if self.given_up || self.marked {
            return None;
        }
        for (at, &byte) in piece.iter().enumerate() {
            if self.in_string {
                self.string_byte(byte);
                continue;
            }
            match byte {
                b' ' | b'\t' | b'\n' | b'\r' => {}
                _ if !self.started => {
                    self.started = true;
                    if byte != b'{' {
                        self.given_up = true;
                        return None;
                    }
                    self.depth = 1;
                    self.expecting_key = true;
                }
                b'"' => {
                    self.in_string = true;
                    self.in_key = self.depth == 1 && self.expecting_key;
                    if self.in_key {
                        self.has_members = true;
                        self.key_len = 0;
                    }
                }
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return self.close(at);
                    }
                }
                b':' if self.depth == 1 => self.expecting_key = false,
                b',' if self.depth == 1 => self.expecting_key = true,
                _ => {}
            }
        }
        None
    }

    /// Whether the member went in.
    pub(crate) fn marked(&self) -> bool {
        self.marked
    }

    fn string_byte(&mut self, byte: u8) {
        if self.escaped {
            self.escaped = false;
        } else if byte == b'\\' {
            self.escaped = true;
            if self.in_key {
                // An escaped key might spell `metadata`: too close to call.
                self.given_up = true;
            }
        } else if byte == b'"' {
            self.in_string = false;
            if self.in_key && &self.key[..self.key_len] == METADATA {
                // The reply has metadata of its own, which this scan cannot merge into.
                self.given_up = true;
            }
            self.in_key = false;
            return;
        }
        if self.in_key {
            if self.key_len < KEY_KEPT {
                self.key[self.key_len] = byte;
            }
            self.key_len = self.key_len.saturating_add(1).min(KEY_KEPT);
        }
    }

    fn close(&mut self, at: usize) -> Option<Insertion> {
        if self.given_up {
            return None;
        }
        self.marked = true;
        let member = if self.has_members {
            MEMBER_AFTER_COMMA
        } else {
            MEMBER
        };
        Some(Insertion { at, member })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// The reply cut at `cuts`, marked as the body would, joined again.
    fn mark(reply: &[u8], cuts: &[usize]) -> (Vec<u8>, bool) {
        let mut marker = StorageFailedMarker::new();
        let mut out = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain([reply.len()].iter()) {
            let piece = &reply[start..end];
            match marker.feed(piece) {
                Some(insertion) => {
                    out.extend_from_slice(&piece[..insertion.at]);
                    out.extend_from_slice(insertion.member);
                    out.extend_from_slice(&piece[insertion.at..]);
                }
                None => out.extend_from_slice(piece),
            }
            start = end;
        }
        (out, marker.marked())
    }

    const REPLY: &str = r#" {"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"a \"}\" b","metadata":{}}}],"usage":{"total_tokens":3}}
"#;

    #[test]
    fn the_member_goes_before_the_closing_brace_however_the_reply_is_cut() {
        let reply = REPLY.as_bytes();
        let mut expected: Value = serde_json::from_str(REPLY).unwrap();
        expected["metadata"] = json!({"storage_failed": true});
        for cut in 0..=reply.len() {
            let (out, marked) = mark(reply, &[cut]);
            assert!(marked, "cut at {cut}");
            let value: Value = serde_json::from_slice(&out).expect("still JSON");
            assert_eq!(value, expected, "cut at {cut}");
            assert!(out.ends_with(b"}\n"), "what follows the object is kept");
        }
    }

    #[test]
    fn an_empty_object_gets_the_member_without_a_comma() {
        let (out, marked) = mark(b"{ }", &[]);
        assert!(marked);
        assert_eq!(out, br#"{ "metadata":{"storage_failed":true}}"#);
    }

    #[test]
    fn a_reply_with_top_level_metadata_is_left_as_it_is() {
        let reply = br#"{"a":{"metadata":1},"metadata":{"x":"y"},"b":2}"#;
        for cut in 0..=reply.len() {
            let (out, marked) = mark(reply, &[cut]);
            assert!(!marked, "cut at {cut}");
            assert_eq!(out, reply);
        }
    }

    #[test]
    fn a_reply_with_an_escaped_top_level_key_is_left_as_it_is() {
        let reply = br#"{"\u006detadata":{"x":"y"},"b":2}"#;
        let (out, marked) = mark(reply, &[]);
        assert!(!marked);
        assert_eq!(out, reply);
    }

    #[test]
    fn nested_metadata_and_similar_keys_do_not_count() {
        let reply = br#"{"a":{"metadata":1},"metadata_x":2,"metadat":3,"v":"metadata"}"#;
        let (out, marked) = mark(reply, &[]);
        assert!(marked);
        let value: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["metadata"]["storage_failed"], true);
        assert_eq!(value["a"]["metadata"], 1);
    }

    #[test]
    fn a_reply_that_is_not_an_object_or_never_closes_is_left_as_it_is() {
        for reply in [&b"[1,2]"[..], b"\"text\"", b"{\"a\":[1,2", b""] {
            let (out, marked) = mark(reply, &[]);
            assert!(!marked);
            assert_eq!(out, reply);
        }
    }
}
