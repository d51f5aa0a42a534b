//! The title a new conversation starts with.

use super::batch::text_without_nul;
use super::{NewConversation, NewMessage};

/// Longest title taken from a first user message, in characters.
const TITLE_CHARS: usize = 80;

/// The title a new conversation starts with: the one given, else the first user
/// message's text.
pub(crate) fn title_of(conversation: &NewConversation) -> Option<String> {
    match &conversation.title {
        Some(title) => Some(title.clone()),
        None => title_from(&conversation.messages),
    }
}

/// The title of a new conversation: the first user message's text, trimmed, cut to 80
/// characters on a char boundary. `None` when no user message has text.
pub(crate) fn title_from(messages: &[NewMessage]) -> Option<String> {
    let first_user = messages.iter().find(|m| m.role() == "user")?;
    // A title goes into a text column, which cannot hold NUL on PostgreSQL.
    let text = text_without_nul(first_user.search_words());
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return None;
    }
    let end = trimmed
        .char_indices()
        .nth(TITLE_CHARS)
        .map_or(trimmed.len(), |(at, _)| at);
    Some(trimmed[..end].trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn title_is_first_user_text_trimmed_to_80_chars_on_a_char_boundary() {
        let long = "é".repeat(100);
        let messages = vec![
            NewMessage::new(json!({"role": "tool", "content": "ignored"})),
            NewMessage::new(json!({"role": "user", "content": format!("  {long}  ")})),
        ];
        let title = title_from(&messages).expect("a title");
        assert_eq!(title.chars().count(), 80);
        assert!(title.chars().all(|c| c == 'é'));
    }

    #[test]
    fn a_title_cut_after_a_space_ends_without_it_and_a_short_one_is_whole() {
        let cut_at_space = format!("{} and more", "a".repeat(79));
        let messages = vec![NewMessage::new(
            json!({"role": "user", "content": cut_at_space}),
        )];
        assert_eq!(title_from(&messages), Some("a".repeat(79)));
        let short = vec![NewMessage::new(
            json!({"role": "user", "content": " \u{0}hi \n"}),
        )];
        assert_eq!(title_from(&short).as_deref(), Some("hi"));
    }

    #[test]
    fn a_title_holds_no_nul() {
        let messages = vec![NewMessage::new(
            json!({"role": "user", "content": "a\u{0}b"}),
        )];
        assert_eq!(title_from(&messages).as_deref(), Some("a b"));
    }

    #[test]
    fn no_title_without_user_text() {
        let messages = vec![NewMessage::new(json!({"role": "user", "content": "   "}))];
        assert_eq!(title_from(&messages), None);
    }
}
