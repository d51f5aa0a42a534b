//! An OpenAI-compatible proxy with server-side conversation memory.
//!
//! ```text
//! cargo run --example proxy                                       # built-in demo model
//! cargo run --example proxy -- --upstream https://api.openai.com  # a real one
//! ```
//!
//! Clients send only their new messages and `X-Conversation-ID` from the previous
//! answer; the proxy keeps the history (SQLite by default, PostgreSQL with
//! `--database-url postgres://...`), splices it in, and stores each reply. The
//! management API is under `/v1/conversations`; every other path is forwarded as it is.
//! Each bearer token is an owner of its own. Run with `--help` for every option.

mod config;
mod database;
mod demo;
mod forward;
mod owner;
mod response;
mod routes;
mod server;
mod shutdown;

use std::io::IsTerminal;
use std::process::ExitCode;

use tokio::net::TcpListener;
use tower::util::BoxCloneService;
use tower_conversations::ConversationLayer;
use tracing_subscriber::EnvFilter;

use crate::config::{Command, Config};
use crate::response::BoxError;
use crate::routes::{Model, Routes};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match config::parse(std::env::args().skip(1), |name| std::env::var(name).ok()) {
        Ok(Command::Run(config)) => config,
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
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), BoxError> {
    let model: Model = match &config.upstream {
        Some(base) => {
            let forward = forward::Forward::new(base.clone(), config.upstream_api_key.as_deref())?;
            tracing::info!("forwarding to {base}");
            if config.upstream_api_key.is_some() {
                tracing::info!(
                    "UPSTREAM_API_KEY is set: it replaces the client's Authorization upstream"
                );
            }
            BoxCloneService::new(forward)
        }
        None => {
            tracing::warn!(
                "no upstream given: a built-in demo model answers, not a real one (it replies \
                 with how many messages it received, history included). To talk to a real \
                 model, start with --upstream https://api.openai.com (or UPSTREAM_URL) and \
                 set UPSTREAM_API_KEY"
            );
            BoxCloneService::new(demo::DemoModel)
        }
    };

    let (routes, layer) = if config.passthrough {
        tracing::info!("passthrough: the conversation layer is off and no database is opened");
        (Routes::passthrough(model), None)
    } else {
        let database = database::open(&config.database_url).await?;
        tracing::info!("conversations stored in {}", database.description);
        let layer = ConversationLayer::new(database.store).owner_resolver(owner::by_bearer_token());
        (Routes::with_layer(&layer, model), Some(layer))
    };

    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", config.listen))?;
    let address = listener.local_addr()?;
    tracing::info!("listening on http://{address}");

    server::serve(listener, routes, shutdown::signal()).await;
    if let Some(layer) = layer {
        // Turns whose streams just ended may still be on their way to the database.
        layer.wait_for_pending_writes().await;
    }
    tracing::info!("stopped");
    Ok(())
}
