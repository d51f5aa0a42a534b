//! An OpenAI-compatible proxy with server-side conversation memory.
//!
//! ```text
//! cargo run --example proxy                                       # built-in demo model
//! cargo run --example proxy -- --upstream https://api.openai.com  # a real one
//! ```
//!
//! Clients send only their new messages and `X-Conversation-ID` from the previous
//! answer; the proxy keeps the history (SQLite by default, PostgreSQL with
//! `--database-url postgres://...`), splices it in, and stores each reply. OpenAI's
//! Responses API (`/v1/responses`, with `previous_response_id` and `conversation`) is
//! answered through chat completions, the demo model's included. The management API is
//! under `/v1/conversations`; every other path is forwarded as it is.
//! Each bearer token is an owner of its own; `--api-keys FILE` names the only keys let
//! in. `/healthz`, `/readyz` and `/metrics` tell how it is doing. Run with `--help` for
//! every option.
//!
//! This file starts the proxy and stops it: the options, the database, the routes, and
//! serving until Ctrl-C or SIGTERM.

mod config;
mod database;
mod demo;
mod forward;
mod model;
mod ops;
mod owner;
mod retention;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::middleware::from_fn_with_state;
use axum::serve::ListenerExt;
use axum::{BoxError, Router};
use http::Request;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::{Layer, ServiceExt};
use tower_conversations::{ConversationLayer, RequestBody};
use tracing_subscriber::EnvFilter;

use crate::config::{Command, Config};
use crate::database::Pool;
use crate::model::Model;
use crate::ops::{Access, KeyFile};

/// What reaches the model: the client's request, its body read by the conversation
/// layer or passed through untouched.
pub type ModelRequest = Request<RequestBody<Body>>;

/// How long in-flight requests may run on after a stop signal before they are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> ExitCode {
    let config = match config::parse(std::env::args().skip(1), |name| std::env::var(name).ok()) {
        Ok(Command::Run(config)) => *config,
        Ok(Command::Healthcheck(url)) => return ops::healthcheck(&url).await,
        Ok(Command::Help) => {
            print!("{}", config::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("proxy: {message}\nRun with --help for the options.");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{}", error_chain(&*error));
            ExitCode::FAILURE
        }
    }
}

/// An error and its sources, `: `-separated, each said once: a database's own message
/// is often both an error's text and its source's.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

async fn run(config: Config) -> Result<(), BoxError> {
    let access = Arc::new(access(&config)?);
    let metrics = ops::install_metrics()?;
    let model = model(&config)?;
    let (layer, pool) = if config.passthrough {
        tracing::info!("passthrough: the conversation layer is off and no database is opened");
        (None, None)
    } else {
        let migrations = config.migration_database_url.as_deref();
        let database = database::open(&config.database_url, migrations).await?;
        tracing::info!("conversations stored in {}", database.description);
        let mut layer = database
            .pool
            .layer()
            .owner_resolver(owner::by_bearer_token());
        if let Some(mib) = config.history_cache_mib {
            layer = layer.history_cache_limit(mib.saturating_mul(1 << 20));
        }
        if let Some(days) = config.retention_days {
            retention::purge_on_a_timer(database.pool.clone(), days);
        }
        (Some(layer), Some(database.pool))
    };
    let metrics_on_main = match &config.metrics_listen {
        Some(addr) => {
            ops::serve_metrics(addr, metrics).await?;
            None
        }
        None => Some(metrics),
    };
    ops::reload_on_hangup(access.clone());
    let app = router(model, layer.as_ref(), access, pool, metrics_on_main);

    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", config.listen))?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    serve(listener, app).await?;
    if let Some(layer) = layer {
        // Turns whose streams just ended may still be on their way to the database.
        layer.wait_for_pending_writes().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Who may use the proxy, said in the log.
fn access(config: &Config) -> Result<Access, BoxError> {
    let demo = config.upstream.is_none();
    let access = match &config.api_keys {
        Some(path) => Access::Keys(KeyFile::load(path)?),
        None => Access::AnyToken {
            anonymous: config.allow_anonymous || demo,
        },
    };
    access.announce(
        demo,
        config.allow_anonymous,
        config.upstream_api_key.is_some(),
    );
    Ok(access)
}

/// The upstream named in `config`, or the demo model when there is none.
fn model(config: &Config) -> Result<Model, BoxError> {
    let Some(base) = &config.upstream else {
        tracing::warn!(
            "no upstream given: a built-in demo model answers, not a real one (it replies \
             with how many messages it received, history included). To talk to a real \
             model, start with --upstream https://api.openai.com (or UPSTREAM_URL) and \
             set UPSTREAM_API_KEY"
        );
        return Ok(Model::Demo);
    };
    // One client for every request, so that they share its connection pool.
    let forward = Arc::new(forward::Forward::new(
        base.clone(),
        config.upstream_api_key.as_deref(),
    )?);
    tracing::info!("forwarding to {base}");
    if config.upstream_api_key.is_some() {
        tracing::info!("UPSTREAM_API_KEY is set: it replaces the client's Authorization upstream");
    }
    Ok(Model::Upstream(forward))
}

/// The proxy's whole HTTP surface. With the layer, the management API shares its store
/// and owners, and every other path goes through it to the model; without it, every
/// path goes straight to the model. `/metrics` (when not served on an address of its
/// own) is among them; all of them are behind the key check. The health checks are not,
/// and `/readyz` asks `pool`.
fn router(
    model: Model,
    layer: Option<&ConversationLayer>,
    access: Arc<Access>,
    pool: Option<Pool>,
    metrics: Option<PrometheusHandle>,
) -> Router {
    let app = match layer {
        Some(layer) => Router::new()
            .nest_service("/v1/conversations", layer.api())
            .fallback_service(layer.layer(model)),
        None => Router::new().fallback_service(
            model.map_request(|request: Request<Body>| request.map(RequestBody::original)),
        ),
    };
    let app = match metrics {
        Some(handle) => app.merge(ops::metrics(handle)),
        None => app,
    };
    app.layer(from_fn_with_state(access, ops::require_key))
        .merge(ops::health(pool))
}

/// Serves `app` over HTTP/1.1 and HTTP/2 until a stop signal; then stops accepting,
/// closes idle connections and waits (up to [`SHUTDOWN_GRACE`]) for the requests in
/// flight, streams included, to finish.
async fn serve(listener: TcpListener, app: Router) -> std::io::Result<()> {
    // Stream chunks are small and latency-bound: never wait to coalesce them.
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    // The grace period starts at the signal, not at start-up.
    let stopping = Arc::new(Notify::new());
    let signal = {
        let stopping = stopping.clone();
        async move {
            let signal = stop_signal().await;
            tracing::info!("{signal} received: no longer accepting; finishing requests in flight");
            stopping.notify_one();
        }
    };
    tokio::select! {
        served = axum::serve(listener, app).with_graceful_shutdown(signal) => {
            served?;
            tracing::info!("all connections finished");
        }
        () = async {
            stopping.notified().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}: cutting them off");
        }
    }
    Ok(())
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM (what `docker stop` and Kubernetes send),
/// naming the signal for the log.
async fn stop_signal() -> &'static str {
    let ctrl_c = async {
        // If the handler cannot be installed the proxy still runs; only SIGTERM stops it.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => "Ctrl-C",
        () = terminate => "SIGTERM",
    }
}
