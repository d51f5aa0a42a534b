//! The management API from the outside: a client acting for one owner, and the servers it
//! talks to (the API nested in axum, or beside the layer in front of the test model).

use axum::Router;
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::Value;
use tower_conversations::{ConversationApi, ConversationLayer, OwnerResolver};

use super::db::TestDb;
use super::server::TestServer;
use super::upstream::TestModel;

/// Requests name their owner in this header; the resolver below reads it.
pub const OWNER_HEADER: &str = "x-owner";

/// The owner is the value of `x-owner`, when a request has one.
pub fn owners() -> OwnerResolver {
    OwnerResolver::new(|parts| {
        parts
            .headers
            .get(OWNER_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    })
}

/// The management API on `db`, with owners from `x-owner`.
pub fn api_for(db: &TestDb) -> ConversationApi {
    ConversationApi::new(db.store()).owner_resolver(owners())
}

/// The API nested in an axum router, as an application mounts it; its base URL.
async fn serve_in_axum(db: &TestDb) -> String {
    let app = Router::new().nest_service("/v1/conversations", api_for(db));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}/v1/conversations")
}

/// The test model behind the layer, with the management API from the same layer beside
/// it, as an application mounts both; the server and a client of its API.
pub async fn serve_with_layer(db: &TestDb, model: &TestModel) -> (TestServer, Client) {
    let layer = ConversationLayer::new(db.store()).owner_resolver(owners());
    let app = model
        .router()
        .layer(layer.clone())
        .nest_service("/v1/conversations", layer.api());
    let server = TestServer::start(app).await;
    let client = Client {
        base: server.url("/v1/conversations"),
        http: reqwest::Client::new(),
        owner: "alice",
    };
    (server, client)
}

/// A client acting for one owner against one server.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    pub owner: &'static str,
}

/// One answer: status, headers and the JSON body (`null` when the body is not JSON).
#[derive(Debug)]
pub struct ApiReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
}

impl ApiReply {
    pub fn error_code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }

    pub fn error_param(&self) -> Option<&str> {
        self.json["error"]["param"].as_str()
    }
}

impl Client {
    pub async fn axum(db: &TestDb) -> Client {
        Client {
            base: serve_in_axum(db).await,
            http: reqwest::Client::new(),
            owner: "alice",
        }
    }

    pub fn as_owner(&self, owner: &'static str) -> Client {
        Client {
            owner,
            ..self.clone()
        }
    }

    /// `path` is appended to the base URL: `""`, `"?limit=2"`, `"/{id}/messages"`.
    pub async fn send(&self, method: Method, path: &str, body: Option<reqwest::Body>) -> ApiReply {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(OWNER_HEADER, self.owner);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        ApiReply {
            status,
            headers,
            json,
        }
    }

    pub async fn get(&self, path: &str) -> ApiReply {
        self.send(Method::GET, path, None).await
    }

    pub async fn delete(&self, path: &str) -> ApiReply {
        self.send(Method::DELETE, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> ApiReply {
        self.send(Method::POST, path, Some(body.to_string().into()))
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> ApiReply {
        self.send(Method::PATCH, path, Some(body.to_string().into()))
            .await
    }

    /// Creates a conversation and returns its id.
    pub async fn create(&self, body: Value) -> String {
        let reply = self.post("", body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.json);
        reply.json["id"].as_str().unwrap().to_owned()
    }

    pub async fn list(&self, query: &str) -> Value {
        let reply = self.get(query).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
        reply.json
    }

    pub async fn detail(&self, id: &str) -> Value {
        let reply = self.get(&format!("/{id}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
        reply.json
    }
}

/// The text content of each message of a JSON list (`""` when it has none).
pub fn contents(messages: &Value) -> Vec<&str> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or(""))
        .collect()
}
