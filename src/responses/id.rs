//! [`ResponseId`]: the id of a response, which names the conversation it is filed under.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::store::ResponseKey;

/// The id of a response: `resp_` followed by the 32 hex digits of the conversation the
/// response is filed under, then the 32 of its own UUIDv7.
///
/// Carrying the conversation id lets every lookup of a response filter by conversation,
/// so that on a distributed database (Citus) it reaches one shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ResponseId(pub(crate) ResponseKey);

impl ResponseId {
    /// A new response filed under `conversation_id`.
    pub(crate) fn new(conversation_id: Uuid) -> Self {
        Self(ResponseKey {
            conversation_id,
            id: Uuid::now_v7(),
        })
    }
}

impl fmt::Display for ResponseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "resp_{}{}",
            self.0.conversation_id.simple(),
            self.0.id.simple()
        )
    }
}

/// A string that is not an id this layer makes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NotAResponseId;

impl FromStr for ResponseId {
    type Err = NotAResponseId;

    /// Reads exactly what `Display` writes (lowercase hex), so one response has one id.
    fn from_str(id: &str) -> Result<Self, Self::Err> {
        let hex = id.strip_prefix("resp_").ok_or(NotAResponseId)?;
        let lowercase_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if hex.len() != 64 || !hex.bytes().all(lowercase_hex) {
            return Err(NotAResponseId);
        }
        let (conversation, own) = hex.split_at(32);
        let parse = |part: &str| Uuid::try_parse(part).map_err(|_| NotAResponseId);
        Ok(Self(ResponseKey {
            conversation_id: parse(conversation)?,
            id: parse(own)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_reads_back_as_itself_and_names_its_conversation() {
        let conversation = Uuid::now_v7();
        let id = ResponseId::new(conversation);
        let text = id.to_string();
        assert_eq!(text.len(), 5 + 64);
        let read: ResponseId = text.parse().unwrap();
        assert_eq!(read, id);
        assert_eq!(read.0.conversation_id, conversation);
    }

    #[test]
    fn other_spellings_are_not_ids() {
        let good = ResponseId::new(Uuid::now_v7()).to_string();
        for bad in [
            String::new(),
            "resp_".to_owned(),
            good.to_uppercase(),
            good.replacen("resp_", "msg_", 1),
            format!("{good}0"),
            good[..good.len() - 1].to_owned(),
            format!("{}g", &good[..good.len() - 1]),
        ] {
            assert_eq!(bad.parse::<ResponseId>(), Err(NotAResponseId), "{bad}");
        }
    }
}
