//! Owners (contract section 7): a conversation created under one owner is invisible to
//! every other owner everywhere, on the chat path, in the store and in the management API.

use http::{Method, StatusCode};
use serde_json::json;
use tower_conversations::store::{
    ConversationStore, ConversationUpdate, MessageQuery, Metadata, Order, TurnTarget,
};
use tower_conversations::{CONVERSATION_ID_HEADER, ConversationLayer, OwnerResolver};
use uuid::Uuid;

use crate::support::api::{Client, OWNER_HEADER, contents, serve_with_layer};
use crate::support::server::*;
use crate::support::store::{assert_not_found, conversation_with, page, search, turn};
use crate::support::turns::{conversation_count, stored_messages};
use crate::support::upstream::*;

fn owner_from_x_user() -> OwnerResolver {
    OwnerResolver::new(|parts| {
        parts
            .headers
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    })
}

backend_tests! {
    async fn continuing_another_owners_conversation_is_404_as_if_it_did_not_exist(db: TestDb) {
        let model = TestModel::new();
        let layer = ConversationLayer::new(db.store()).owner_resolver(owner_from_x_user());
        let app = serve_layered(&model, layer).await;
        let body = chat_body(json!([user("secret plans")]));
        let id = send_chat_with(&app, &[("x-user", "alice")], &body)
            .await
            .id();

        let id_text = id.to_string();
        let continued = chat_body(json!([user("what were my plans?")]));
        let as_bob = send_chat_with(
            &app,
            &[("x-user", "bob"), (CONVERSATION_ID_HEADER, &id_text)],
            &continued,
        )
        .await;
        let unknown = Uuid::now_v7().to_string();
        let as_bob_unknown = send_chat_with(
            &app,
            &[("x-user", "bob"), (CONVERSATION_ID_HEADER, &unknown)],
            &continued,
        )
        .await;
        let shared_space = send_chat(&app, Some(id), &continued).await;

        assert_eq!(as_bob.status, StatusCode::NOT_FOUND);
        assert_eq!(as_bob.error_code(), "conversation_not_found");
        assert_eq!(
            as_bob.body, as_bob_unknown.body,
            "nothing tells the two apart"
        );
        assert_eq!(shared_space.status, StatusCode::NOT_FOUND);
        assert_eq!(
            model.chat_requests().len(),
            1,
            "only alice's first turn went upstream"
        );
        assert_eq!(stored_messages(&db, "alice", id).await.len(), 2);
        assert!(db.store().get("bob", id).await.is_err());

        let as_alice = send_chat_with(
            &app,
            &[("x-user", "alice"), (CONVERSATION_ID_HEADER, &id_text)],
            &continued,
        )
        .await;
        assert_eq!(as_alice.status, StatusCode::OK);
        assert_eq!(stored_messages(&db, "alice", id).await.len(), 4);
    }

    async fn every_store_operation_answers_not_found_for_another_owners_conversation(db: TestDb) {
        let store = db.store();
        let id = conversation_with(&store, "alice", &[turn("alice's question", "answer")]).await;
        let before = store.get("alice", id).await.unwrap();

        for owner in ["bob", ""] {
            assert_not_found(store.load_history(owner, id, None).await, "load_history");
            assert_not_found(store.append_turn(owner, id, TurnTarget::Existing, &turn("q", "a")).await, "append_turn");
            assert_not_found(store.get(owner, id).await, "get");
            assert_not_found(
                store.messages(owner, id, &MessageQuery { after: None, limit: 10, order: Order::Asc }).await,
                "messages",
            );
            assert_not_found(
                store.update(owner, id, &ConversationUpdate { title: Some("x".into()), metadata: Some(Metadata::new()) }).await,
                "update",
            );
            assert_not_found(store.fork(owner, id, 0).await, "fork");
            assert_not_found(store.truncate(owner, id, 0).await, "truncate");
            assert_not_found(store.delete(owner, id).await, "delete");
            let listed = store.list(owner, &page(100, 0)).await.unwrap();
            assert!(listed.conversations.is_empty());
            assert_eq!(listed.total, 0);
        }

        assert_eq!(store.get("alice", id).await.unwrap(), before);
        assert_eq!(db.scalar("SELECT count(*) FROM conversations").await, 1);
        assert_eq!(db.scalar("SELECT count(*) FROM messages").await, 2);
    }

    async fn search_never_finds_another_owners_conversation(db: TestDb) {
        let store = db.store();
        let alices = conversation_with(&store, "alice", &[turn("secret plan", "ok")]).await;
        let bobs = store.list("bob", &search("secret plan")).await.unwrap();
        assert!(bobs.conversations.is_empty());
        assert_eq!(bobs.total, 0);
        let shared = store.list("", &search("secret")).await.unwrap();
        assert_eq!(shared.total, 0);
        let alice = store.list("alice", &search("secret")).await.unwrap();
        assert_eq!(alice.conversations.iter().map(|c| c.id).collect::<Vec<_>>(), [alices]);
    }

    async fn in_the_management_api_another_owner_can_neither_see_nor_change_nor_delete_a_conversation(db: TestDb) {
        let alice = Client::axum(&db).await;
        let bob = alice.as_owner("bob");
        let id = alice.create(json!({"title": "secret plans", "metadata": {"k": "v"}, "messages": [
            user("the password is swordfish"), assistant("noted")
        ]})).await;
        let unknown = Uuid::now_v7();
        let not_found = alice.get(&format!("/{unknown}")).await.json;

        let listed = bob.list("").await;
        assert_eq!((listed["conversations"].clone(), listed["total"].clone()), (json!([]), json!(0)));
        let searched = bob.list("?q=swordfish").await;
        assert_eq!(searched["total"], 0);
        let attempts = [
            bob.get(&format!("/{id}")).await,
            bob.get(&format!("/{id}/messages")).await,
            bob.patch(&format!("/{id}"), json!({"title": "mine now", "metadata": {}})).await,
            bob.post(&format!("/{id}/fork"), json!({"at_sequence": 0})).await,
            bob.delete(&format!("/{id}/messages?from_sequence=0")).await,
            bob.delete(&format!("/{id}")).await,
        ];
        for reply in &attempts {
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{:?}", reply.json);
            assert_eq!(reply.json, not_found, "the same answer as for an id that never existed");
        }

        let detail = alice.detail(&id).await;
        assert_eq!((detail["title"].clone(), detail["metadata"].clone()), (json!("secret plans"), json!({"k": "v"})));
        assert_eq!(contents(&detail["messages"]), ["the password is swordfish", "noted"]);
        assert_eq!(alice.list("?q=swordfish").await["total"], 1);
        assert_eq!(conversation_count(&db).await, 1, "no fork was made for bob");
        let shared = alice.as_owner("");
        assert_eq!(shared.list("").await["total"], 0, "the shared space is an owner too");
    }

    async fn the_layer_and_the_api_it_builds_share_owners(db: TestDb) {
        let model = TestModel::new();
        let (app, client) = serve_with_layer(&db, &model).await;
        let id = client.create(json!({"messages": [user("mine")]})).await;
        let headers = [
            ("content-type", "application/json"),
            (CONVERSATION_ID_HEADER, id.as_str()),
            (OWNER_HEADER, "bob"),
        ];
        let body = chat_body(json!([user("let me in")])).to_string();
        let answer = send(&app, Method::POST, "/v1/chat/completions", &headers, body).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        assert_eq!(answer.error_code(), "conversation_not_found");
        assert_eq!(client.detail(&id).await["message_count"], 1);
    }
}
