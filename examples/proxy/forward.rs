//! The upstream client: forwards each request to the real service, streaming both ways,
//! and keeps the headers that belong to one connection from crossing to the next.

use std::convert::Infallible;
use std::sync::Arc;

use axum::BoxError;
use axum::body::Body;
use axum::response::Response;
use http::header::{self, HeaderName};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower_conversations::{ApiError, DEFAULT_CHAT_PATH, RequestBody};

use crate::ModelRequest;

/// The base URL of the upstream service: scheme, authority and an optional path prefix
/// (for services mounted under a path, such as `https://host/openai`).
#[derive(Debug, Clone)]
pub struct UpstreamBase {
    scheme: Scheme,
    authority: Authority,
    prefix: String,
}

impl UpstreamBase {
    /// Reads an `http://` or `https://` base URL; a query string is refused because each
    /// request brings its own.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|error| format!("upstream URL {url:?} is not a URL: {error}"))?;
        let scheme = uri
            .scheme()
            .filter(|s| *s == &Scheme::HTTP || *s == &Scheme::HTTPS)
            .cloned()
            .ok_or_else(|| format!("upstream URL {url:?} must start with http:// or https://"))?;
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("upstream URL {url:?} has no host"))?;
        if uri.query().is_some() {
            return Err(format!("upstream URL {url:?} must not have a query string"));
        }
        Ok(Self {
            scheme,
            authority,
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// Whether the connection to the upstream is encrypted.
    fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The upstream URL for a request's path and query.
    fn join(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
        let tail = path_and_query.map_or("/", PathAndQuery::as_str);
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{tail}", self.prefix))
            .build()
    }
}

impl std::fmt::Display for UpstreamBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.prefix)
    }
}

/// A client that sends each request on to the upstream and streams its answer back.
///
/// Bodies are never collected: each frame is handed on as it arrives, in both directions.
pub struct Forward {
    client: Client<HttpsConnector<HttpConnector>, RequestBody<Body>>,
    base: UpstreamBase,
    api_key: Option<HeaderValue>,
}

impl Forward {
    /// A client for `base`, trusting the system's root certificates (which honour
    /// `SSL_CERT_FILE` and `SSL_CERT_DIR`). With `api_key`, every request goes upstream
    /// with `Authorization: Bearer <api_key>` instead of the client's own.
    pub fn new(base: UpstreamBase, api_key: Option<&str>) -> Result<Self, BoxError> {
        let api_key = api_key
            .map(|key| HeaderValue::try_from(format!("Bearer {key}")))
            .transpose()
            .map_err(|_| "UPSTREAM_API_KEY is not a valid header value")?
            .map(|mut value| {
                value.set_sensitive(true);
                value
            });
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        // Stream chunks are small and latency-bound: never wait to coalesce them.
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(&base)?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            client,
            base,
            api_key,
        })
    }

    /// Sends `request` upstream and answers with the upstream's answer. It never fails: an
    /// upstream that cannot be reached is answered `502` in the OpenAI error envelope, so
    /// that clients read it like any other API error.
    pub async fn send(self: Arc<Self>, request: ModelRequest) -> Result<Response, Infallible> {
        let Ok(request) = self.upstream_request(request) else {
            return Ok(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "The request path cannot be forwarded.",
            )
            .into_response());
        };
        // The path only: a query string may carry a credential.
        let path = request.uri().path().to_owned();
        Ok(match self.client.request(request).await {
            Ok(mut answer) => {
                remove_hop_by_hop(answer.headers_mut());
                // The client's connection to this proxy decides the version it sees.
                *answer.version_mut() = Version::HTTP_11;
                answer.map(Body::new)
            }
            Err(error) => {
                tracing::warn!(
                    %path,
                    %error,
                    cause = ?std::error::Error::source(&error),
                    "upstream request failed"
                );
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    "The upstream service could not be reached.",
                )
                .into_response()
            }
        })
    }

    /// Turns the client's request into the upstream's; fails only on a path that makes
    /// no URL with the base.
    fn upstream_request(&self, mut request: ModelRequest) -> Result<ModelRequest, http::Error> {
        let is_chat = request.method() == Method::POST && request.uri().path() == DEFAULT_CHAT_PATH;
        let uri = self.base.join(request.uri().path_and_query())?;
        *request.uri_mut() = uri;
        // The client picks HTTP/1.1 or HTTP/2 for the upstream connection by itself.
        *request.version_mut() = Version::HTTP_11;
        let headers = request.headers_mut();
        remove_hop_by_hop(headers);
        // The client's Host names this proxy; the upstream client sets the upstream's
        // (as Host on HTTP/1.1, as :authority on HTTP/2).
        headers.remove(header::HOST);
        if is_chat {
            // The conversation layer reads the reply to store it: ask for it uncompressed.
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
        if let Some(key) = &self.api_key {
            headers.insert(header::AUTHORIZATION, key.clone());
        }
        Ok(request)
    }
}

/// TLS with the ring provider and the system's roots (`rustls-native-certs`, which
/// honours `SSL_CERT_FILE` and `SSL_CERT_DIR`). A plain-HTTP upstream needs no roots, so
/// a machine without any (a bare container) can still reach one.
fn tls_config(base: &UpstreamBase) -> Result<rustls::ClientConfig, BoxError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?;
    match builder.clone().with_native_roots() {
        Ok(with_roots) => Ok(with_roots.with_no_client_auth()),
        Err(error) if base.is_https() => {
            Err(format!("no trusted root certificates to reach {base}: {error}").into())
        }
        Err(_) => Ok(builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()),
    }
}

/// The headers that describe one connection and must not cross a proxy (RFC 9110, 7.6.1),
/// besides those a `Connection` header names and every `Proxy-*` header.
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
fn remove_hop_by_hop(headers: &mut HeaderMap) {
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
