//! Conversation memory for your own axum chat handler, on SQLite.
//!
//! ```text
//! cargo run --example axum
//! curl -i localhost:3000/v1/chat/completions -H 'content-type: application/json' \
//!      -d '{"messages":[{"role":"user","content":"Hi"}]}'
//! ```
//!
//! Send the `X-Conversation-ID` it answers with to continue; list what was stored with
//! `curl localhost:3000/v1/conversations`.

use std::convert::Infallible;

use axum::response::sse::{Event, Sse};
use axum::{Json, Router, routing::post};
use futures_util::stream::{self, Stream};
use serde_json::{Value, json};
use tower_conversations::ConversationLayer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = sqlx::SqlitePool::connect("sqlite://axum-example.db?mode=rwc").await?;
    tower_conversations::migrate(&pool).await?;
    let conversations = ConversationLayer::new(pool);

    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .layer(conversations.clone())
        .nest_service("/v1/conversations", conversations.api());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

/// A toy model: it streams back how many messages it received, history included.
async fn chat(Json(request): Json<Value>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let count = request["messages"].as_array().map_or(0, Vec::len);
    let words = format!("I have seen {count} messages so far.");
    let chunks = words
        .split_inclusive(' ')
        .map(|word| json!({"choices": [{"index": 0, "delta": {"content": word}}]}).to_string())
        .chain(["[DONE]".to_owned()])
        .map(|data| Ok(Event::default().data(data)))
        .collect::<Vec<_>>();
    Sse::new(stream::iter(chunks))
}
