//! Running the proxy for real: who may use it (API keys), whether it serves and whether
//! its database answers (health), and what it is doing (Prometheus metrics).
//!
//! - Keys: with a key file, every request needs one of its keys as its bearer token;
//!   without one, every bearer token is an owner of its own and a request without one
//!   is refused unless anonymous use is allowed (by flag, or because the built-in demo
//!   model answers). The file is reread on SIGHUP; requests already let in, streams
//!   included, run on.
//! - `GET /healthz` and `GET /readyz` are answered here, never forwarded, with no key.
//! - `/metrics` is Prometheus text, on an address of its own with no key, or on the main
//!   address behind the key rules.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{BoxError, Json, Router};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use subtle::{Choice, ConstantTimeEq};
use tokio::net::TcpListener;
use tower_conversations::{ApiError, DEFAULT_STORAGE_TIMEOUT};

use crate::database::Pool;
use crate::owner::{TokenDigest, bearer_token};

/// The keys a key file allows, as digests, so that the proxy compares no key itself.
#[derive(Debug)]
pub struct KeyFile {
    path: PathBuf,
    digests: RwLock<Arc<Vec<TokenDigest>>>,
}

impl KeyFile {
    /// Reads the key file at `path`; an error names the file and what is wrong with it.
    pub fn load(path: &Path) -> Result<Self, BoxError> {
        let digests = read_keys(path)?;
        Ok(Self {
            path: path.to_owned(),
            digests: RwLock::new(Arc::new(digests)),
        })
    }

    /// How many keys are allowed now.
    pub fn len(&self) -> usize {
        self.current().len()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn current(&self) -> Arc<Vec<TokenDigest>> {
        self.digests
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Rereads the file. On an error the keys allowed so far stay allowed.
    pub fn reload(&self) -> Result<usize, BoxError> {
        let digests = read_keys(&self.path)?;
        let count = digests.len();
        *self
            .digests
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(digests);
        Ok(count)
    }

    /// Whether the token hashed to `presented` is one of the keys. Every entry is
    /// compared, in constant time, so how long the answer takes says nothing about how
    /// close a guess came.
    fn allows(&self, presented: &TokenDigest) -> bool {
        let found = self
            .current()
            .iter()
            .fold(Choice::from(0), |found, digest| {
                found | digest.0.ct_eq(&presented.0)
            });
        found.into()
    }
}

/// The digests a key file lists: one entry a line, everything from a `#` on is a
/// comment, blank lines are skipped. An entry of 64 hex digits is the SHA-256 of a key;
/// any other entry is a key. A file with no entry is refused: it would shut every client
/// out, which is more likely a mistake than a wish.
fn read_keys(path: &Path) -> Result<Vec<TokenDigest>, BoxError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read the API key file {}: {error}", path.display()))?;
    let digests: Vec<TokenDigest> = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|entry| !entry.is_empty())
        .map(|entry| sha256_hex(entry).unwrap_or_else(|| TokenDigest::of(entry)))
        .collect();
    if digests.is_empty() {
        return Err(format!("the API key file {} lists no key", path.display()).into());
    }
    Ok(digests)
}

/// The digest a line of 64 hex digits spells.
fn sha256_hex(entry: &str) -> Option<TokenDigest> {
    if entry.len() != 64 || !entry.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut digest = [0; 32];
    for (byte, pair) in digest.iter_mut().zip(entry.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(TokenDigest(digest))
}

/// Who may use the proxy.
#[derive(Debug)]
pub enum Access {
    /// Only the keys of this file.
    Keys(KeyFile),
    /// Any bearer token, each an owner of its own; requests without one too when
    /// `anonymous`.
    AnyToken { anonymous: bool },
}

impl Access {
    /// Whether `request` may go on; the `401` it gets when not. A key it was let in with
    /// leaves its digest in the request's extensions, for its owner.
    fn check(&self, request: &mut Request) -> Result<(), ApiError> {
        let token = bearer_token(request.headers());
        match (self, token) {
            (Self::Keys(keys), Some(token)) => {
                let presented = TokenDigest::of(token);
                if !keys.allows(&presented) {
                    return Err(unauthorized("Incorrect API key provided."));
                }
                request.extensions_mut().insert(presented);
                Ok(())
            }
            (Self::Keys(_), None) | (Self::AnyToken { anonymous: false }, None) => {
                Err(unauthorized(
                    "You didn't provide an API key: send it as `Authorization: Bearer KEY`.",
                ))
            }
            (Self::AnyToken { .. }, _) => Ok(()),
        }
    }

    /// Says at start which rules apply, and warns when whoever can reach the proxy
    /// spends the upstream's key.
    pub fn announce(&self, demo: bool, allowed_by_flag: bool, upstream_key: bool) {
        match self {
            Self::Keys(keys) => tracing::info!(
                "API keys: {} key(s) from {}; any other request gets 401 (SIGHUP rereads the file)",
                keys.len(),
                keys.path().display()
            ),
            Self::AnyToken { anonymous: true } if allowed_by_flag => tracing::warn!(
                "no --api-keys file: every bearer token is an owner of its own, and requests \
                 without one are let in and share one space (--allow-anonymous)"
            ),
            Self::AnyToken { anonymous: true } if demo => tracing::info!(
                "no --api-keys file: every bearer token is an owner of its own, and requests \
                 without one are let in because the built-in demo model answers"
            ),
            Self::AnyToken { .. } => tracing::info!(
                "no --api-keys file: every bearer token is an owner of its own; requests \
                 without one get 401 (--allow-anonymous lets them in)"
            ),
        }
        if upstream_key && matches!(self, Self::AnyToken { .. }) {
            tracing::warn!(
                "UPSTREAM_API_KEY is set and no --api-keys file is: whoever can reach this \
                 proxy spends that key"
            );
        }
    }
}

fn unauthorized(message: &'static str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", message)
}

/// The middleware in front of every path but the health checks: lets a request on or
/// answers `401` in the OpenAI envelope.
pub async fn require_key(
    State(access): State<Arc<Access>>,
    mut request: Request,
    next: Next,
) -> Response {
    match access.check(&mut request) {
        Ok(()) => next.run(request).await,
        Err(error) => {
            let mut response: Response = error.into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// Rereads the key file on every SIGHUP, for as long as the proxy runs. Without a key
/// file the signal is only logged, so that it never stops the proxy.
pub fn reload_on_hangup(access: Arc<Access>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("SIGHUP cannot be handled: the key file is read at start only");
            return;
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match &*access {
                    Access::Keys(keys) => match keys.reload() {
                        Ok(count) => tracing::info!(
                            "SIGHUP: {count} key(s) from {} now allowed",
                            keys.path().display()
                        ),
                        Err(error) => tracing::error!(
                            "SIGHUP: {error}; the {} key(s) read before stay allowed",
                            keys.len()
                        ),
                    },
                    Access::AnyToken { .. } => {
                        tracing::info!("SIGHUP: no --api-keys file to reread")
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = access;
}

/// `GET /healthz` and `GET /readyz`, which need no key. `database` is what `/readyz`
/// asks; `None` (passthrough, which opens no database) makes the proxy ready as soon as
/// it serves.
pub fn health(database: Option<Pool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(move || ready(database.clone())))
}

/// `200` when the database answers a trivial query within the storage timeout (the
/// time a turn may take), `503` in the OpenAI envelope when it does not.
async fn ready(database: Option<Pool>) -> Response {
    let Some(database) = database else {
        return Json(json!({"status": "ready"})).into_response();
    };
    let why = match tokio::time::timeout(DEFAULT_STORAGE_TIMEOUT, database.answer()).await {
        Ok(Ok(())) => return Json(json!({"status": "ready"})).into_response(),
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("no answer within {DEFAULT_STORAGE_TIMEOUT:?}"),
    };
    tracing::warn!("not ready: the database does not answer: {why}");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "conversation_store_unavailable",
        "The conversation database does not answer.",
    )
    .into_response()
}

/// The histogram buckets of every `_seconds` metric: from a millisecond to past the
/// storage timeout, so that `histogram_quantile` works across instances.
const SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// How often the recorder drops the histogram samples it already rendered.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder, so that the layer's reports (and any other crate's)
/// are kept, and keeps it tidy in a task of its own.
pub fn install_metrics() -> Result<PrometheusHandle, BoxError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &SECONDS_BUCKETS)?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            interval.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// `GET /metrics`: the Prometheus text format.
pub fn metrics(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let text = handle.render();
            async move {
                let content_type = "text/plain; version=0.0.4; charset=utf-8";
                ([(header::CONTENT_TYPE, content_type)], text)
            }
        }),
    )
}

/// Serves `/metrics` on `addr`, with no key, until the process exits.
pub async fn serve_metrics(addr: &str, handle: PrometheusHandle) -> Result<(), BoxError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|error| format!("cannot listen for metrics on {addr}: {error}"))?;
    tracing::info!("metrics at http://{}/metrics", listener.local_addr()?);
    let app = metrics(handle);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!("serving metrics failed: {error}");
        }
    });
    Ok(())
}

/// How long a health check waits for its answer.
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(8);

/// `--healthcheck URL`: requests `url` and exits `0` on a `2xx` answer, `1` on anything
/// else, saying why; for images that have no curl.
pub async fn healthcheck(url: &str) -> ExitCode {
    let uri: http::Uri = match url.parse() {
        Ok(uri) => uri,
        Err(error) => {
            eprintln!("proxy: health check URL {url:?} is not a URL: {error}");
            return ExitCode::from(2);
        }
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = http::Request::get(uri).body(Empty::new());
    let request = match request {
        Ok(request) => request,
        Err(error) => {
            eprintln!("proxy: health check URL {url:?} cannot be requested: {error}");
            return ExitCode::from(2);
        }
    };
    match tokio::time::timeout(HEALTHCHECK_TIMEOUT, client.request(request)).await {
        Ok(Ok(answer)) if answer.status().is_success() => ExitCode::SUCCESS,
        Ok(Ok(answer)) => {
            eprintln!("proxy: {url} answered {}", answer.status());
            ExitCode::FAILURE
        }
        Ok(Err(error)) => {
            eprintln!("proxy: {url} cannot be reached: {error}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("proxy: {url} did not answer within {HEALTHCHECK_TIMEOUT:?}");
            ExitCode::FAILURE
        }
    }
}
