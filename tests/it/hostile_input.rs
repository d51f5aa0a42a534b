//! Hostile input, as a table: headers, bodies, query strings, titles, search terms and
//! upstream SSE streams, each with the answer it gets and a check that nothing wrong
//! was stored. Every case runs against one app (the layer and the management API over
//! the test model), on SQLite and on PostgreSQL, and the table of outcomes is printed.
//! Then JSON nested deeper than any parser should follow, in requests and in replies.

use crate::support::db::TestDb;
use crate::support::server::*;
use crate::support::turns::{storage_failed, stored_messages};
use crate::support::upstream::*;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tower_conversations::store::{ConversationDetail, ListQuery, NewMessage, TurnTarget};
use tower_conversations::{
    CONVERSATION_ID_HEADER, ConversationLayer, ConversationStore, OwnerResolver,
};
use uuid::Uuid;

/// Requests name their owner in this header.
const OWNER: &str = "x-owner";
/// The owner every case acts for unless it says otherwise.
const ALICE: &str = "alice";
/// The owner whose only conversation search cases look for.
const SEARCHER: &str = "searcher";

/// What a case did, for its check to judge.
struct Effect {
    /// The body the case sent.
    sent: Vec<u8>,
    /// The requests the upstream received for this case, their bodies.
    upstream: Vec<Bytes>,
    /// Conversations the case created (any owner), with their messages.
    created: Vec<ConversationDetail>,
    /// The conversation every case could touch, before and after.
    seed_before: ConversationDetail,
    seed_after: ConversationDetail,
    /// Message rows added across the whole database.
    rows_added: i64,
}

type Check = Box<dyn Fn(&Answer, &Effect) -> Result<(), String>>;

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
    /// What the upstream answers, when the request reaches it.
    reply: Option<Reply>,
    check: Check,
}

impl Case {
    fn new(name: &'static str, method: Method, path: &str, body: impl Into<Vec<u8>>) -> Self {
        Case {
            name,
            method,
            path: path.to_owned(),
            headers: vec![(
                HeaderName::from_static("content-type"),
                HeaderValue::from_static("application/json"),
            )],
            body: body.into(),
            reply: None,
            check: Box::new(|_, _| Err("no check".to_owned())),
        }
    }

    /// A chat request with this body.
    fn chat(name: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self::new(name, Method::POST, "/v1/chat/completions", body)
    }

    /// A chat request with these messages, streamed.
    fn chat_messages(name: &'static str, messages: Value) -> Self {
        Self::chat(name, chat_body(messages).to_string())
    }

    fn header(mut self, name: &'static str, value: HeaderValue) -> Self {
        self.headers.push((HeaderName::from_static(name), value));
        self
    }

    fn id(self, value: &str) -> Self {
        let value = HeaderValue::from_str(value).expect("a header value");
        self.header(CONVERSATION_ID_HEADER, value)
    }

    fn reply(mut self, reply: Reply) -> Self {
        self.reply = Some(reply);
        self
    }

    fn check(mut self, check: impl Fn(&Answer, &Effect) -> Result<(), String> + 'static) -> Self {
        self.check = Box::new(check);
        self
    }
}

fn ensure(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(why()) }
}

fn lossy(answer: &Answer) -> String {
    String::from_utf8_lossy(&answer.body).into_owned()
}

fn error_code(answer: &Answer) -> String {
    serde_json::from_slice::<Value>(&answer.body)
        .ok()
        .and_then(|body| body["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn status(answer: &Answer, expected: StatusCode) -> Result<(), String> {
    ensure(answer.status == expected, || {
        format!(
            "status {} (expected {expected}): {}",
            answer.status,
            lossy(answer)
        )
    })
}

/// Nothing in the database moved.
fn unchanged(effect: &Effect) -> Result<(), String> {
    ensure(effect.created.is_empty(), || {
        format!("{} conversations created", effect.created.len())
    })?;
    ensure(effect.rows_added == 0, || {
        format!("{} rows added", effect.rows_added)
    })?;
    ensure(
        effect.seed_after.messages.len() == effect.seed_before.messages.len()
            && effect.seed_after.conversation.title == effect.seed_before.conversation.title,
        || "the seed conversation changed".to_owned(),
    )
}

/// Answered by the layer or the API itself with this status and code; the upstream
/// never saw it; nothing stored.
fn refused(
    expected: StatusCode,
    code: &'static str,
) -> impl Fn(&Answer, &Effect) -> Result<(), String> {
    move |answer, effect| {
        status(answer, expected)?;
        ensure(error_code(answer) == code, || {
            format!("code {:?} (expected {code})", error_code(answer))
        })?;
        ensure(effect.upstream.is_empty(), || {
            "reached the upstream".to_owned()
        })?;
        unchanged(effect)
    }
}

/// Not the layer's to handle: forwarded to the upstream byte for byte, answered by it
/// with this status, no `X-Conversation-ID`, nothing stored.
fn untouched(expected: StatusCode) -> impl Fn(&Answer, &Effect) -> Result<(), String> {
    move |answer, effect| {
        status(answer, expected)?;
        ensure(answer.conversation_id().is_none(), || {
            "has X-Conversation-ID".to_owned()
        })?;
        ensure(effect.upstream.len() == 1, || {
            format!("{} upstream requests", effect.upstream.len())
        })?;
        ensure(effect.upstream[0][..] == effect.sent[..], || {
            "the body was changed on its way".to_owned()
        })?;
        unchanged(effect)
    }
}

/// Stored as one new conversation: its messages are `expected` exactly, and nothing
/// else changed.
fn stored(expected: Vec<Value>) -> impl Fn(&Answer, &Effect) -> Result<(), String> {
    move |answer, effect| {
        let detail = stored_one(answer, effect)?;
        let messages: Vec<&Value> = detail.messages.iter().map(|m| &m.message).collect();
        let expected: Vec<&Value> = expected.iter().collect();
        ensure(messages == expected, || {
            format!("stored {} messages, not as sent", messages.len())
        })
    }
}

/// The one conversation a 200 answer created, checked for consistency.
fn stored_one<'e>(answer: &Answer, effect: &'e Effect) -> Result<&'e ConversationDetail, String> {
    status(answer, StatusCode::OK)?;
    ensure(!storage_failed(answer), || "storage_failed".to_owned())?;
    ensure(effect.created.len() == 1, || {
        format!("{} conversations created", effect.created.len())
    })?;
    let detail = &effect.created[0];
    ensure(
        answer.conversation_id() == Some(detail.conversation.id),
        || "the header names another conversation".to_owned(),
    )?;
    ensure(
        effect.rows_added == detail.messages.len() as i64
            && detail.conversation.message_count == detail.messages.len() as i64,
        || "counts disagree".to_owned(),
    )?;
    for (at, message) in detail.messages.iter().enumerate() {
        ensure(message.sequence_number == at as i64, || "a gap".to_owned())?;
    }
    Ok(detail)
}

/// The assistant message of the one stored turn.
fn assistant_of(answer: &Answer, effect: &Effect) -> Result<Value, String> {
    let detail = stored_one(answer, effect)?;
    let last = detail.messages.last().ok_or("no messages")?;
    ensure(last.message["role"] == "assistant", || {
        format!("{}", last.message)
    })?;
    Ok(last.message.clone())
}

fn assistant_says(text: &'static str) -> impl Fn(&Answer, &Effect) -> Result<(), String> {
    move |answer, effect| {
        let message = assistant_of(answer, effect)?;
        ensure(
            message == json!({"role": "assistant", "content": text}),
            || format!("stored {message}"),
        )
    }
}

fn list_total(answer: &Answer, expected: u64) -> Result<(), String> {
    status(answer, StatusCode::OK)?;
    let body: Value = serde_json::from_slice(&answer.body).map_err(|e| e.to_string())?;
    ensure(body["total"] == expected, || {
        format!("total {} (expected {expected})", body["total"])
    })
}

fn search(name: &'static str, query: &str, expected: u64) -> Case {
    Case::new(
        name,
        Method::GET,
        &format!("/v1/conversations?q={query}"),
        "",
    )
    .header(OWNER, HeaderValue::from_static(SEARCHER))
    .check(move |answer, effect| {
        list_total(answer, expected)?;
        unchanged(effect)
    })
}

/// SSE frames of a reply: these events' data, each as one frame.
fn sse(events: &[&str]) -> Reply {
    Reply::sse(
        events
            .iter()
            .map(|data| Bytes::from(format!("data: {data}\n\n")))
            .collect::<Vec<_>>(),
    )
}

fn content(text: &str) -> String {
    String::from_utf8(content_chunk(text)[6..].trim_ascii_end().to_vec()).expect("UTF-8")
}

fn cases(seed: Uuid) -> Vec<Case> {
    let seed = seed.to_string();
    let hi = || chat_body(json!([user("hi")])).to_string();
    let sql = "'); DROP TABLE messages; --";
    let metacharacters = r#"100% _done_ \ * "quoted" NEAR(a b) a:b ^c"#;
    let nul = "before\u{0}after";
    let many: Vec<Value> = (0..10_000).map(|i| user(&format!("message {i}"))).collect();
    let huge_arguments = format!("{{\"blob\":\"{}\"}}", "x".repeat(4 * 1024 * 1024));
    let tool_call = json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "store_blob", "arguments": huge_arguments}}]});
    let tool_result = json!({"role": "tool", "tool_call_id": "call_1", "content": "ok"});
    let streamed_arguments: Vec<Bytes> =
        std::iter::once(tool_call_chunk(0, Some("call_2"), Some("f"), "{\"a\":\""))
            .chain((0..2_000).map(|_| tool_call_chunk(0, None, None, &"y".repeat(1024))))
            .chain([
                tool_call_chunk(0, None, None, "\"}"),
                finish_chunk("tool_calls"),
                done(),
            ])
            .collect();
    let many_choices: Vec<Value> = (0..1_000)
        .rev()
        .map(|i| json!({"index": i, "delta": {"content": format!("choice {i}")}}))
        .collect();

    vec![
        // Headers.
        Case::chat("X-Conversation-ID that is not UTF-8", hi())
            .header(CONVERSATION_ID_HEADER, HeaderValue::from_bytes(b"\xff\xfe\xfd").unwrap())
            .check(refused(StatusCode::BAD_REQUEST, "invalid_conversation_id")),
        Case::chat("X-Conversation-ID sent twice", hi())
            .id(&seed)
            .id(&seed)
            .check(refused(StatusCode::BAD_REQUEST, "invalid_conversation_id")),
        Case::chat("several ids in one X-Conversation-ID", hi())
            .id(&format!("{seed}, {}", Uuid::now_v7()))
            .check(refused(StatusCode::BAD_REQUEST, "invalid_conversation_id")),
        Case::chat("SQL in X-Conversation-ID", hi())
            .id("' OR '1'='1")
            .check(refused(StatusCode::BAD_REQUEST, "invalid_conversation_id")),
        Case::chat("a braced UUID in X-Conversation-ID", hi())
            .id(&format!("{{{seed}}}"))
            .check(refused(StatusCode::BAD_REQUEST, "invalid_conversation_id")),
        Case::chat("an 8 KiB X-Conversation-ID", hi())
            .id(&"0".repeat(8192))
            .check(refused(StatusCode::BAD_REQUEST, "invalid_conversation_id")),
        Case::chat("the nil UUID", hi())
            .id("00000000-0000-0000-0000-000000000000")
            .check(refused(StatusCode::NOT_FOUND, "conversation_not_found")),
        Case::chat("another owner's conversation id", hi())
            .id(&seed)
            .header(OWNER, HeaderValue::from_static("mallory"))
            .check(refused(StatusCode::NOT_FOUND, "conversation_not_found")),
        Case::chat("SQL as the owner", hi())
            .id(&seed)
            .header(OWNER, HeaderValue::from_static("alice' OR '1'='1"))
            .check(refused(StatusCode::NOT_FOUND, "conversation_not_found")),
        // Bodies.
        Case::chat("invalid UTF-8 in a message", &b"{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}"[..])
            .check(untouched(StatusCode::BAD_REQUEST)),
        Case::chat("invalid UTF-8 in a message, with X-Conversation-ID", &b"{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}"[..])
            .id(&seed)
            .check(refused(StatusCode::BAD_REQUEST, "invalid_request")),
        Case::chat("invalid UTF-8 outside the messages", &b"{\"user\":\"\x82\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"[..])
            .check(untouched(StatusCode::BAD_REQUEST)),
        Case::chat("a raw NUL byte in a message", &b"{\"messages\":[{\"role\":\"user\",\"content\":\"a\x00b\"}]}"[..])
            .check(untouched(StatusCode::BAD_REQUEST)),
        Case::chat_messages("an escaped NUL in a message", json!([user(nul)])).check(stored(vec![
            user(nul),
            json!({"role": "assistant", "content": format!("You said: {nul}")}),
        ])),
        Case::chat_messages("SQL in a message", json!([user(sql)]))
            .check(stored(vec![user(sql), json!({"role": "assistant", "content": format!("You said: {sql}")})])),
        Case::chat_messages("LIKE and full-text metacharacters in a message", json!([user(metacharacters)]))
            .check(stored(vec![user(metacharacters), json!({"role": "assistant", "content": format!("You said: {metacharacters}")})])),
        Case::chat_messages("10,000 messages in one request", Value::Array(many.clone())).check({
            let mut expected = many;
            expected.push(json!({"role": "assistant", "content": "You said: message 9999"}));
            stored(expected)
        }),
        Case::chat_messages("enormous tool-call arguments in a request", json!([user("go"), tool_call, tool_result]))
            .check(stored(vec![user("go"), tool_call.clone(), tool_result.clone(), json!({"role": "assistant", "content": "You said: go"})])),
        Case::chat("two messages keys", r#"{"messages":[{"role":"user","content":"a"}],"messages":[{"role":"user","content":"b"}]}"#)
            .check(untouched(StatusCode::OK)),
        Case::chat("messages that is an object", r#"{"messages":{"role":"user","content":"a"}}"#)
            .check(untouched(StatusCode::BAD_REQUEST)),
        Case::chat("a role that is a number", r#"{"messages":[{"role":7,"content":"a"}]}"#)
            .check(untouched(StatusCode::OK)),
        Case::chat("a JSON array for a body", r#"[{"messages":[{"role":"user","content":"a"}]}]"#)
            .check(untouched(StatusCode::BAD_REQUEST)),
        Case::chat("a byte-order mark before the JSON", [&b"\xef\xbb\xbf"[..], hi().as_bytes()].concat())
            .check(untouched(StatusCode::BAD_REQUEST)),
        Case::chat("JSON nested 100,000 deep", format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)))
            .check(untouched(StatusCode::BAD_REQUEST)),
        Case::chat("an empty body with X-Conversation-ID", "")
            .id(&seed)
            .check(refused(StatusCode::BAD_REQUEST, "invalid_request")),
        Case::new("a query string on the chat path", Method::POST, "/v1/chat/completions?api-version=2024-10-21", hi())
            .check(stored(vec![user("hi"), json!({"role": "assistant", "content": "You said: hi"})])),
        Case::new("a trailing slash on the chat path", Method::POST, "/v1/chat/completions/", hi())
            .check(untouched(StatusCode::NOT_FOUND)),
        Case::new("GET on the chat path", Method::GET, "/v1/chat/completions", "")
            .check(untouched(StatusCode::METHOD_NOT_ALLOWED)),
        // Upstream SSE streams.
        Case::chat("a stream without [DONE]", hi())
            .reply(Reply::sse([content_chunk("no "), content_chunk("end"), stop_chunk()]))
            .check(|answer, effect| {
                assistant_says("no end")(answer, effect)?;
                ensure(!lossy(answer).contains("[DONE]"), || "a [DONE] was made up".to_owned())
            }),
        Case::chat("data after [DONE]", hi())
            .reply(Reply::sse([content_chunk("before"), done(), content_chunk(" after"), done()]))
            .check(|answer, effect| {
                assistant_says("before")(answer, effect)?;
                ensure(!lossy(answer).contains("after"), || "data after [DONE] was sent".to_owned())
            }),
        Case::chat("events without choices", hi())
            .reply(sse(&[r#"{"id":"x","object":"chat.completion.chunk"}"#, &content("kept"), r#"{"choices":null}"#, "[DONE]"]))
            .check(assistant_says("kept")),
        Case::chat("data that is not JSON", hi())
            .reply(sse(&["hello", "{\"choices\":[{", &content("kept"), "<html>", "[DONE]"]))
            .check(assistant_says("kept")),
        Case::chat("invalid UTF-8 in a data line", hi())
            .reply(Reply::sse([
                content_chunk("kept"),
                Bytes::from_static(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\xff\"}}]}\n\n"),
                done(),
            ]))
            .check(|answer, effect| {
                assistant_says("kept")(answer, effect)?;
                ensure(answer.body.windows(2).any(|w| w == b"\"\xff"), || "bytes changed".to_owned())
            }),
        Case::chat("an escaped NUL in streamed content", hi())
            .reply(Reply::sse([content_chunk(nul), stop_chunk(), done()]))
            .check(assistant_says(nul_str())),
        Case::chat("an escaped NUL in streamed reasoning and metadata", hi())
            .reply(Reply::sse([
                reasoning_chunk(nul),
                event(&json!({"id": nul, "model": nul, "choices": [{"index": 0, "delta": {"content": "ok"}}]})),
                error_event(nul),
                done(),
            ]))
            .check(|answer, effect| {
                let detail = stored_one(answer, effect)?;
                let last = detail.messages.last().ok_or("no messages")?;
                ensure(last.message == json!({"role": "assistant", "content": "ok"}), || format!("{}", last.message))?;
                ensure(last.reasoning.as_deref() == Some("before after"), || format!("{:?}", last.reasoning))?;
                ensure(last.metadata["model"] == "before after", || format!("{:?}", last.metadata))?;
                ensure(last.metadata["error"]["message"] == "before after", || format!("{:?}", last.metadata))
            }),
        Case::chat("SQL in streamed content", hi())
            .reply(Reply::sse([content_chunk("'); DELETE FROM conversations; --"), done()]))
            .check(assistant_says("'); DELETE FROM conversations; --")),
        Case::chat("2 MiB of tool-call arguments in 2,000 deltas", hi())
            .reply(Reply::sse(streamed_arguments))
            .check(|answer, effect| {
                let message = assistant_of(answer, effect)?;
                let arguments = message["tool_calls"][0]["function"]["arguments"].as_str().unwrap_or("");
                let expected = format!("{{\"a\":\"{}\"}}", "y".repeat(2_000 * 1024));
                ensure(arguments == expected, || format!("{} bytes of arguments", arguments.len()))
            }),
        Case::chat("an error event mid-stream", hi())
            .reply(Reply::sse([content_chunk("par"), error_event("overloaded"), done()]))
            .check(|answer, effect| {
                let detail = stored_one(answer, effect)?;
                let last = detail.messages.last().ok_or("no messages")?;
                ensure(last.metadata.get("incomplete") == Some(&json!(true)), || "not incomplete".to_owned())?;
                ensure(last.metadata["error"]["message"] == "overloaded", || "no error".to_owned())
            }),
        Case::chat("1,000 choices in one chunk", hi())
            .reply(Reply::sse([event(&chunk_with_choices(Value::Array(many_choices))), done()]))
            .check(assistant_says("choice 0")),
        // Titles (PATCH), on the seed conversation and others.
        Case::new("SQL in a title", Method::PATCH, &format!("/v1/conversations/{seed}"), json!({"title": sql}).to_string())
            .check(move |answer, effect| {
                status(answer, StatusCode::OK)?;
                ensure(effect.seed_after.conversation.title.as_deref() == Some(sql), || "title not as sent".to_owned())?;
                ensure(effect.created.is_empty() && effect.rows_added == 0, || "rows moved".to_owned())
            }),
        Case::new("U+0000 in a title", Method::PATCH, &format!("/v1/conversations/{seed}"), json!({"title": nul}).to_string())
            .check(refused(StatusCode::BAD_REQUEST, "invalid_request")),
        Case::new("a 201-character title", Method::PATCH, &format!("/v1/conversations/{seed}"), json!({"title": "t".repeat(201)}).to_string())
            .check(refused(StatusCode::BAD_REQUEST, "invalid_request")),
        Case::new("U+0000 in metadata", Method::PATCH, &format!("/v1/conversations/{seed}"), json!({"metadata": {"k": nul}}).to_string())
            .check(refused(StatusCode::BAD_REQUEST, "invalid_request")),
        Case::new("SQL in seed messages", Method::POST, "/v1/conversations", json!({"title": sql, "messages": [user(sql)]}).to_string())
            .check(move |answer, effect| {
                status(answer, StatusCode::CREATED)?;
                ensure(effect.created.len() == 1, || "not one conversation".to_owned())?;
                let detail = &effect.created[0];
                ensure(detail.conversation.title.as_deref() == Some(sql), || "title".to_owned())?;
                ensure(detail.messages.len() == 1 && detail.messages[0].message == user(sql), || "messages".to_owned())
            }),
        Case::new("U+0000 in seed messages", Method::POST, "/v1/conversations", json!({"messages": [user(nul)]}).to_string())
            .check(move |answer, effect| {
                status(answer, StatusCode::CREATED)?;
                ensure(effect.created.len() == 1, || "not one conversation".to_owned())?;
                let detail = &effect.created[0];
                ensure(detail.conversation.title.as_deref() == Some("before after"), || format!("{:?}", detail.conversation.title))?;
                ensure(detail.messages.len() == 1 && detail.messages[0].message == user(nul), || "messages".to_owned())
            }),
        // Query strings and path ids.
        Case::new("SQL as the limit", Method::GET, "/v1/conversations?limit=1;DROP%20TABLE%20messages", "")
            .check(refused(StatusCode::BAD_REQUEST, "invalid_request")),
        Case::new("the limit given twice", Method::GET, "/v1/conversations?limit=1&limit=2", "")
            .check(refused(StatusCode::BAD_REQUEST, "invalid_request")),
        Case::new("an offset past i64", Method::GET, "/v1/conversations?offset=9223372036854775808", "")
            .check(refused(StatusCode::BAD_REQUEST, "invalid_request")),
        Case::new("the largest offset", Method::GET, "/v1/conversations?offset=9223372036854775807", "")
            .check(|answer, effect| {
                status(answer, StatusCode::OK)?;
                unchanged(effect)
            }),
        Case::new("a cursor below i64", Method::GET, &format!("/v1/conversations/{seed}/messages?after=-99999999999999999999"), "")
            .check(refused(StatusCode::BAD_REQUEST, "invalid_request")),
        Case::new("SQL as a path id", Method::GET, "/v1/conversations/'%3B%20DROP%20TABLE%20conversations%3B--", "")
            .check(refused(StatusCode::BAD_REQUEST, "invalid_conversation_id")),
        Case::new("an encoded NUL after a path id", Method::GET, &format!("/v1/conversations/{seed}%00"), "")
            .check(refused(StatusCode::BAD_REQUEST, "invalid_conversation_id")),
        Case::new("truncation from SQL", Method::DELETE, &format!("/v1/conversations/{seed}/messages?from_sequence=0%20OR%201=1"), "")
            .check(refused(StatusCode::BAD_REQUEST, "invalid_request")),
        // Search terms, as the owner whose one conversation says "needle in a haystack".
        search("a search that is SQL", "'%20OR%201=1%20--", 0),
        search("a search for %", "%25", 0),
        search("a search for _", "_", 0),
        search("a search for *", "*", 0),
        search("a search with a LIKE wildcard after a word", "needle%25", 1),
        search("a search with OR between words", "needle%20OR%20nothing", 0),
        search("a search with full-text operators", "NEAR(needle%20haystack)%20%26%20!x%20%3C-%3E%20%22", 0),
        search("a search in quotes", "%22needle%22", 1),
        search("a search with U+0000", "needle%00", 1),
        search("a search that is only U+0000", "%00", 1),
        search("a search that is not UTF-8", "%FF%FE", 0),
        search("a search of 2,000 words", &"needle+".repeat(2_000), 1),
    ]
}

fn nul_str() -> &'static str {
    "before\u{0}after"
}

/// Reads what the case changed: conversations of every owner the cases use, the seed,
/// the rows.
async fn snapshot(db: &TestDb, seed: Uuid) -> (Vec<Uuid>, ConversationDetail, i64) {
    let store = db.store();
    let mut ids = Vec::new();
    for owner in [ALICE, SEARCHER, "mallory", "alice' OR '1'='1", ""] {
        let query = ListQuery {
            limit: 100,
            offset: 0,
            search: None,
        };
        let list = store.list(owner, &query).await.expect("list");
        ids.extend(list.conversations.iter().map(|c| c.id));
    }
    let seed = store.get(ALICE, seed).await.expect("the seed");
    let rows = db.scalar("SELECT count(*) FROM messages").await;
    (ids, seed, rows)
}

async fn run_table(db: TestDb) {
    let model = TestModel::new();
    let owners = OwnerResolver::new(|parts| {
        let value = parts.headers.get(OWNER)?.to_str().ok()?;
        Some(value.to_owned())
    });
    let layer = ConversationLayer::new(db.store()).owner_resolver(owners);
    let app = model
        .router()
        .layer(layer.clone())
        .nest_service("/v1/conversations", layer.api());
    let app = TestServer::start(app).await;
    let store = db.store();
    let seed = Uuid::now_v7();
    store
        .append_turn(
            ALICE,
            seed,
            TurnTarget::NewConversation,
            &[NewMessage::new(user("seed"))],
        )
        .await
        .expect("the seed");
    store
        .append_turn(
            SEARCHER,
            Uuid::now_v7(),
            TurnTarget::NewConversation,
            &[NewMessage::new(user("needle in a haystack"))],
        )
        .await
        .expect("the searcher's conversation");

    let http = reqwest::Client::new();
    let mut table = Vec::new();
    let mut failures = Vec::new();
    let cases = cases(seed);
    assert!(cases.len() >= 25, "{} cases", cases.len());
    for case in cases {
        if let Some(reply) = case.reply.clone() {
            model.push(reply);
        }
        let (ids_before, seed_before, rows_before) = snapshot(&db, seed).await;
        let upstream_before = model.requests().len();

        let mut request = http
            .request(case.method.clone(), app.url(&case.path))
            .body(case.body.clone());
        let names_owner = case.headers.iter().any(|(name, _)| name == OWNER);
        if !names_owner {
            request = request.header(OWNER, ALICE);
        }
        for (name, value) in &case.headers {
            request = request.header(name.clone(), value.clone());
        }
        let response = request.send().await.expect("answered");
        let answer = Answer {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.bytes().await.expect("the whole body"),
        };

        let (ids_after, seed_after, rows_after) = snapshot(&db, seed).await;
        let mut created = Vec::new();
        for id in ids_after.iter().filter(|id| !ids_before.contains(id)) {
            let mut found = None;
            for owner in [ALICE, SEARCHER, "mallory", ""] {
                if let Ok(detail) = store.get(owner, *id).await {
                    found = Some(detail);
                }
            }
            created.push(found.expect("a created conversation"));
        }
        let effect = Effect {
            sent: case.body.clone(),
            upstream: model.requests()[upstream_before..]
                .iter()
                .map(|r| r.body.clone())
                .collect(),
            created,
            seed_before,
            seed_after,
            rows_added: rows_after - rows_before,
        };
        let verdict = (case.check)(&answer, &effect);
        table.push(format!(
            "{:<55} {} {}",
            case.name,
            answer.status.as_u16(),
            error_code(&answer)
        ));
        if let Err(why) = verdict {
            failures.push(format!("{}: {why}", case.name));
        }
    }
    eprintln!("{:?}:\n{}", db.backend, table.join("\n"));
    assert!(failures.is_empty(), "{:#?}", failures);
}

backend_tests! {
    async fn hostile_input_gets_a_clean_answer_and_stores_nothing_wrong(db: TestDb) {
        run_table(db).await;
    }
}

/// `[[[ ... 1 ... ]]]`, `depth` arrays deep.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

backend_tests! {
    async fn deeply_nested_json_gets_a_clean_400_and_stores_nothing(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let id = send_chat(&app, None, &chat_body(json!([user("hi")]))).await.id();
        let deep = nested(100_000);
        let bodies = [
            // Too deep to read as a chat request at all.
            deep.clone(),
            format!(r#"{{"messages":{deep}}}"#),
            format!(r#"{{"messages":[{{"role":"user","content":{deep}}}]}}"#),
            format!(r#"{{"messages":[{{"role":"user","content":{}}}]}}"#, nested(200)),
        ];
        for body in &bodies {
            // Continuing a conversation needs a chat request: the layer says so.
            let header = id.to_string();
            let answer = send(
                &app,
                Method::POST,
                "/v1/chat/completions",
                &[("content-type", "application/json"), (CONVERSATION_ID_HEADER, &header)],
                body.clone(),
            )
            .await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", &body[..40]);
            assert_eq!(answer.error_code(), "invalid_request");

            // Without a header it is not the layer's request: the upstream answers.
            let answer = send(
                &app,
                Method::POST,
                "/v1/chat/completions",
                &[("content-type", "application/json")],
                body.clone(),
            )
            .await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", &body[..40]);
            assert_eq!(answer.conversation_id(), None);
            assert_eq!(&model.last_request().body[..], body.as_bytes(), "untouched");
        }
        assert_eq!(db.scalar("SELECT count(*) FROM conversations").await, 1);
        assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 2);
    }

    async fn deep_nesting_outside_messages_is_forwarded_as_it_came(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let id = send_chat(&app, None, &chat_body(json!([user("hi")]))).await.id();
        // serde_json skips an unread field without recursing, so the layer can splice
        // this body; the upstream then refuses it, and a refusal stores nothing.
        let body = format!(
            r#"{{"model":"m","stream":true,"tools":{},"messages":[{{"role":"user","content":"deep"}}]}}"#,
            nested(100_000)
        );
        let header = id.to_string();
        let answer = send(
            &app,
            Method::POST,
            "/v1/chat/completions",
            &[("content-type", "application/json"), (CONVERSATION_ID_HEADER, &header)],
            body.clone(),
        )
        .await;

        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "the upstream's answer");
        let forwarded = model.last_request().body;
        let tools = nested(100_000);
        assert!(
            forwarded.windows(tools.len()).any(|w| w == tools.as_bytes()),
            "the deep field reaches the upstream byte for byte"
        );
        assert_eq!(stored_messages(&db, "", id).await.len(), 2, "nothing stored");
    }

    async fn deeply_nested_reply_fields_lose_their_chunk_not_the_turn(db: TestDb) {
        let model = TestModel::new();
        let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
        let deep = nested(100_000);
        let odd = format!(
            r#"{{"id":"c","choices":[{{"index":0,"delta":{{"content":"lost"}}}}],"usage":{deep}}}"#
        );
        model.push(Reply::sse([
            content_chunk("kept "),
            Bytes::from(format!("data: {odd}\n\n")),
            content_chunk("too"),
            stop_chunk(),
            done(),
        ]));
        let answer = send_chat(&app, None, &chat_body(json!([user("hi")]))).await;

        assert_eq!(answer.status, StatusCode::OK);
        assert!(!storage_failed(&answer));
        let stored = stored_messages(&db, "", answer.id()).await;
        assert_eq!(stored[1], json!({"role": "assistant", "content": "kept too"}));

        // A JSON reply too deep to read is not stored, and says so.
        let reply = format!(
            r#"{{"object":"chat.completion","choices":[{{"index":0,"message":{{"role":"assistant","content":{deep}}}}}]}}"#
        );
        let frames = vec![Bytes::from(reply)];
        model.push(Reply::sse(frames).header("content-type", "application/json"));
        let body = json!({"model": MODEL, "stream": false, "messages": [user("deep")]});
        let answer = send_chat(&app, None, &body).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.text().ends_with(r#","metadata":{"storage_failed":true}}"#));
        assert_eq!(db.scalar("SELECT count(*) FROM conversations").await, 1);
    }
}
