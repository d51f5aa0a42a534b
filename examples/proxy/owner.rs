//! Owners by bearer token: each API key sees only its own conversations.

use http::request::Parts;
use http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use tower_conversations::OwnerResolver;

/// The SHA-256 of a bearer token: what the key file's entries are compared with, and
/// what names the token's owner. The key check leaves it in the request's extensions,
/// so a request with a key is hashed once, not once for the check and once for its
/// owner (a digest costs about 2,400 instructions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenDigest(pub [u8; 32]);

impl TokenDigest {
    /// The digest of `token`.
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Lowercase hex, two digits a byte. Written out rather than with `format!` per
    /// byte, which cost about 15,000 instructions a request, and into an array first:
    /// pushing each digit to a `String` as a `char` cost about 600 (see
    /// `docs/performance.md`).
    fn to_hex(self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0_u8; 64];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
        // Hex digits are ASCII, so the fallback is never taken.
        std::str::from_utf8(&hex)
            .map(str::to_owned)
            .unwrap_or_default()
    }
}

/// The owner of a request is the SHA-256 (hex) of its bearer token, so the database never
/// holds a usable credential. Requests without a token (let in only when anonymous use
/// is allowed) share one space.
///
/// It reads the client's own header (or the digest the key check took of it): the layer
/// resolves the owner before the forwarding service swaps in `UPSTREAM_API_KEY`, so
/// clients stay apart even when they all reach the upstream with one key.
pub fn by_bearer_token() -> OwnerResolver {
    OwnerResolver::new(|parts: &Parts| {
        let digest = match parts.extensions.get::<TokenDigest>() {
            Some(checked) => *checked,
            None => TokenDigest::of(bearer_token(&parts.headers)?),
        };
        Some(digest.to_hex())
    })
}

/// The token of an `Authorization: Bearer TOKEN` header, if the request has one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
