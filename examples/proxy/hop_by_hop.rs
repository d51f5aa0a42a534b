//! Headers that describe one connection and must not cross a proxy (RFC 9110, 7.6.1).

use http::HeaderMap;
use http::header::{self, HeaderName};

/// The hop-by-hop headers every proxy drops, besides those a `Connection` header names
/// and every `Proxy-*` header.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the headers that belong to the connection they arrived on, so that the next
/// hop frames the message itself (chunked or not, HTTP/1 or HTTP/2).
pub fn remove(headers: &mut HeaderMap) {
    // The headers `Connection` names are hop-by-hop too: read them before it goes.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}
