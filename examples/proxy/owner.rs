//! Owners by bearer token: each API key sees only its own conversations.

use http::request::Parts;
use http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use tower_conversations::OwnerResolver;

/// The owner of a request is the SHA-256 (hex) of its bearer token, so the database never
/// holds a usable credential. Requests without a token (let in only when anonymous use
/// is allowed) share one space.
///
/// It reads the client's own header: the layer resolves the owner before the forwarding
/// service swaps in `UPSTREAM_API_KEY`, so clients stay apart even when they all reach
/// the upstream with one key.
pub fn by_bearer_token() -> OwnerResolver {
    OwnerResolver::new(|parts: &Parts| bearer_token(&parts.headers).map(sha256_hex))
}

/// The token of an `Authorization: Bearer TOKEN` header, if the request has one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Lowercase hex, two digits a byte. Written out rather than with `format!` per byte,
/// which cost about 15,000 instructions a request (see `docs/performance.md`).
fn sha256_hex(token: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for byte in Sha256::digest(token.as_bytes()) {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    hex
}
