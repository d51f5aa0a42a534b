//! [`ConversationStore`] for [`sqlx::SqlitePool`].

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

use super::{
    Conversation, ConversationDetail, ConversationList, ConversationStore, ConversationUpdate,
    ListQuery, MessagePage, MessageQuery, NewConversation, NewMessage, StoreError,
};

#[async_trait]
impl ConversationStore for sqlx::SqlitePool {
    async fn migrate(&self) -> Result<(), StoreError> {
        todo!()
    }
    async fn load_history(
        &self,
        owner: &str,
        id: Uuid,
        last: Option<u32>,
    ) -> Result<Vec<Value>, StoreError> {
        todo!()
    }
    async fn append_turn(
        &self,
        owner: &str,
        id: Uuid,
        create: bool,
        messages: &[NewMessage],
    ) -> Result<i64, StoreError> {
        todo!()
    }
    async fn create(
        &self,
        owner: &str,
        conversation: &NewConversation,
    ) -> Result<Conversation, StoreError> {
        todo!()
    }
    async fn list(&self, owner: &str, query: &ListQuery) -> Result<ConversationList, StoreError> {
        todo!()
    }
    async fn get(&self, owner: &str, id: Uuid) -> Result<ConversationDetail, StoreError> {
        todo!()
    }
    async fn messages(
        &self,
        owner: &str,
        id: Uuid,
        query: &MessageQuery,
    ) -> Result<MessagePage, StoreError> {
        todo!()
    }
    async fn update(
        &self,
        owner: &str,
        id: Uuid,
        update: &ConversationUpdate,
    ) -> Result<Conversation, StoreError> {
        todo!()
    }
    async fn delete(&self, owner: &str, id: Uuid) -> Result<(), StoreError> {
        todo!()
    }
    async fn fork(
        &self,
        owner: &str,
        id: Uuid,
        at_sequence: i64,
    ) -> Result<Conversation, StoreError> {
        todo!()
    }
    async fn truncate(&self, owner: &str, id: Uuid, from_sequence: i64) -> Result<u64, StoreError> {
        todo!()
    }
}
