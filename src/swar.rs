//! Eight bytes of text at a time, as one word: the test for the bytes a JSON string
//! cannot hold as they are, which the request scan and the stored messages' writer share.

/// Eight copies of a byte, one in each byte of a word.
pub(crate) const fn repeated(byte: u8) -> u64 {
    u64::from_ne_bytes([byte; 8])
}

/// The high bit of each byte of `word` (read little-endian, so that the first byte of
/// the text is the lowest) that is a quote, a backslash or a control character (below
/// 0x20), and perhaps of bytes after such a byte, never before it: the lowest bit set
/// marks the first one. Bytes past ASCII are not marked.
#[inline(always)]
pub(crate) fn escape_stops(word: u64) -> u64 {
    const ONES: u64 = repeated(0x01);
    let quote = word ^ repeated(b'"');
    let backslash = word ^ repeated(b'\\');
    // Each term sets the high bit of the bytes it is looking for (a zero byte, one below
    // 0x20), and may set it in bytes above one it found (a borrow), never below.
    ((quote.wrapping_sub(ONES) & !quote)
        | (backslash.wrapping_sub(ONES) & !backslash)
        | (word.wrapping_sub(repeated(0x20)) & !word))
        & repeated(0x80)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_stop_byte_by_byte(bytes: [u8; 8]) -> Option<usize> {
        bytes
            .iter()
            .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)
    }

    proptest::proptest! {
        #[test]
        fn the_first_stop_is_the_first_quote_backslash_or_control_byte(
            bytes in proptest::array::uniform8(proptest::prop_oneof![
                proptest::strategy::Just(b'"'),
                proptest::strategy::Just(b'\\'),
                0u8..0x20,
                0x20u8..=0xff,
            ])
        ) {
            let stops = escape_stops(u64::from_le_bytes(bytes));
            let first = (stops != 0).then(|| (stops.trailing_zeros() / 8) as usize);
            proptest::prop_assert_eq!(first, first_stop_byte_by_byte(bytes));
        }
    }
}
