//! Properties of the layer over HTTP (contract sections 4 and 5), on PostgreSQL:
//! splicing keeps every other member of arbitrary bodies, messages come back exactly as
//! they were sent, and a streamed reply cut anywhere is stored the same.
//!
//! The parser and splice themselves are checked far more often by the property tests
//! beside them (`src/sse/`, `src/chat/request.rs`); these check the whole path.
//!
//! PostgreSQL cannot hold U+0000 in `text` or `jsonb`, so generated text leaves it out;
//! `hostile_input` checks what such a message gets.

use std::sync::OnceLock;

use crate::support::db::TestDb;
use crate::support::server::*;
use crate::support::upstream::*;
use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestCaseError};
use serde_json::{Map, Number, Value, json};
use tokio::runtime::Runtime;
use tower_conversations::{ConversationLayer, ConversationStore};

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// The app under test, shared by every case of one property.
struct Fixture {
    db: TestDb,
    model: TestModel,
    app: TestServer,
}

impl Fixture {
    /// `None` when PostgreSQL is not there (and not required).
    fn start() -> Option<Self> {
        runtime().block_on(async {
            let db = TestDb::postgres().await?;
            let model = TestModel::new();
            let app = serve_layered(&model, ConversationLayer::new(db.store())).await;
            Some(Fixture { db, model, app })
        })
    }
}

/// Text without U+0000.
fn text() -> impl Strategy<Value = String> {
    any::<String>().prop_map(|text| text.replace('\0', ""))
}

/// Any JSON value, a few levels deep, its strings without U+0000.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            vec((text(), inner), 0..5)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// Whether two JSON values are the same, numbers compared by value: a database may
/// write `1e17` back as `100000000000000000`, which is the same JSON number.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i128(), y.as_i128()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, x)| y.get(key).is_some_and(|y| same_json(x, y)))
        }
        _ => a == b,
    }
}

fn body_with(others: &Map<String, Value>, messages: Value) -> Value {
    let mut body = others.clone();
    body.insert("stream".to_owned(), json!(true));
    body.insert("messages".to_owned(), messages);
    Value::Object(body)
}

fn check(ok: bool, what: &str) -> Result<(), TestCaseError> {
    if ok {
        Ok(())
    } else {
        Err(TestCaseError::fail(what.to_owned()))
    }
}

proptest! {
    // Failing cases are saved with the crate's others, in proptest-regressions/. By
    // default proptest would put them beside tests/it (the nearest directory holding a
    // main.rs), in tests/proptest-regressions/.
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/it/properties.txt"
        )))),
        ..ProptestConfig::with_cases(32)
    })]

    #[test]
    fn every_other_member_of_the_body_reaches_the_upstream_as_sent(
        others in vec((text(), value()), 0..6),
        first in text(),
        second in text(),
    ) {
        static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
        let Some(fixture) = FIXTURE.get_or_init(Fixture::start) else { return Ok(()) };
        let others: Map<String, Value> = others
            .into_iter()
            .filter(|(key, _)| key != "messages" && key != "stream")
            .collect();
        runtime().block_on(async {
            let body = body_with(&others, json!([user(&first)]));
            let started = send_chat(&fixture.app, None, &body).await;
            prop_assert_eq!(started.status, http::StatusCode::OK);
            let body = body_with(&others, json!([user(&second)]));
            let answer = send_chat(&fixture.app, Some(started.id()), &body).await;
            prop_assert_eq!(answer.status, http::StatusCode::OK);

            let seen = fixture.model.last_request().json.expect("JSON");
            let mut seen = seen.as_object().expect("an object").clone();
            let messages = seen.remove("messages").expect("messages");
            seen.remove("stream");
            check(same_json(&Value::Object(seen), &Value::Object(others.clone())), "other members")?;
            let said = format!("You said: {first}");
            prop_assert_eq!(
                messages,
                json!([user(&first), {"role": "assistant", "content": said}, user(&second)])
            );
            Ok(())
        })?;
    }

    #[test]
    fn a_message_is_stored_and_spliced_back_exactly_as_it_was_sent(
        content in value(),
        extra in vec((text(), value()), 0..4),
    ) {
        static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
        let Some(fixture) = FIXTURE.get_or_init(Fixture::start) else { return Ok(()) };
        let mut message: Map<String, Value> = extra.into_iter().collect();
        message.insert("role".to_owned(), json!("user"));
        message.insert("content".to_owned(), content);
        let message = Value::Object(message);
        runtime().block_on(async {
            let body = body_with(&Map::new(), json!([message]));
            let started = send_chat(&fixture.app, None, &body).await;
            prop_assert_eq!(started.status, http::StatusCode::OK);
            let id = started.id();
            let stored = fixture.db.store().get("", id).await.expect("stored").messages;
            check(same_json(&stored[0].message, &message), "stored as sent")?;

            let body = body_with(&Map::new(), json!([user("next")]));
            let answer = send_chat(&fixture.app, Some(id), &body).await;
            prop_assert_eq!(answer.status, http::StatusCode::OK);
            let spliced = fixture.model.last_request().messages();
            check(same_json(&spliced[0], &message), "spliced back as sent")?;
            Ok(())
        })?;
    }

    #[test]
    fn a_streamed_reply_cut_anywhere_reaches_the_client_and_the_store_the_same(
        pieces in vec(text(), 1..6),
        points in vec(any::<prop::sample::Index>(), 0..10),
    ) {
        static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
        let Some(fixture) = FIXTURE.get_or_init(Fixture::start) else { return Ok(()) };
        let stream = concat(&text_stream(&pieces));
        let mut cuts: Vec<usize> = points.iter().map(|p| p.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        let mut frames = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([stream.len()]) {
            frames.push(Bytes::copy_from_slice(&stream[start..cut]));
            start = cut;
        }
        runtime().block_on(async {
            fixture.model.push(Reply::sse(frames));
            let answer = send_chat(&fixture.app, None, &chat_body(json!([user("go")]))).await;
            prop_assert_eq!(answer.status, http::StatusCode::OK);
            let done_at = stream.len() - done().len();
            prop_assert_eq!(&answer.body[..done_at], &stream[..done_at]);
            prop_assert_eq!(&answer.body[done_at..], &done()[..]);

            let stored = fixture.db.store().get("", answer.id()).await.expect("stored").messages;
            prop_assert_eq!(
                &stored[1].message,
                &json!({"role": "assistant", "content": pieces.concat()})
            );
            prop_assert!(!stored[1].metadata.contains_key("incomplete"));
            Ok(())
        })?;
    }
}
