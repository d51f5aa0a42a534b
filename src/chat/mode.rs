//! Which mode a chat request runs in: contract section 3.

use uuid::Uuid;

use super::request::chat_request_from_spans;
use super::{ChatRequest, parse_chat_request, scan_chat_request};

/// How the layer decides whether a chat request is stateless or part of a conversation.
///
/// With either policy, an `X-Conversation-ID` that is neither empty, `new` nor a UUID is
/// answered with `400 invalid_conversation_id`, and a header on a body that is not a chat
/// request (not JSON, or no `messages` array) with `400 invalid_request`.
///
/// ```
/// use tower_conversations::ModePolicy;
/// assert_eq!(ModePolicy::default(), ModePolicy::SystemMessage);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModePolicy {
    /// The default: a request with a `system` or `developer` message is stateless; one
    /// without starts or (with `X-Conversation-ID`) continues a conversation.
    ///
    /// An empty header, or `new`, means the same as no header here: a request without a
    /// system message starts a conversation either way, and a request with one stays
    /// stateless. So a client written for the [`Header`](ModePolicy::Header) policy
    /// behaves the same under this one.
    #[default]
    SystemMessage,
    /// The header alone decides: none means stateless, an empty value (or `new`) starts
    /// a conversation, a UUID continues one. System messages are forwarded first and
    /// never stored.
    Header,
}

/// The `X-Conversation-ID` header as the client sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConversationHeader {
    /// Not sent.
    Absent,
    /// Sent empty (or `new`): start a conversation.
    New,
    /// A UUID.
    Id(Uuid),
    /// Anything else, including several values.
    Invalid,
}

/// The lengths of the two UUID spellings accepted: simple (32 hex digits) and
/// hyphenated (36 characters). Braced and `urn:uuid:` forms are refused, so that the id a
/// client sends back looks like the one the layer handed out.
const SIMPLE_UUID_LEN: usize = 32;
const HYPHENATED_UUID_LEN: usize = 36;

impl ConversationHeader {
    /// Reads every value the request carries under the header name.
    pub(crate) fn from_values<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut values = values.into_iter();
        let Some(value) = values.next() else {
            return Self::Absent;
        };
        // Several values could name several conversations: refuse rather than guess.
        if values.next().is_some() {
            return Self::Invalid;
        }
        Self::from_value(value)
    }

    fn from_value(value: &[u8]) -> Self {
        let Ok(text) = std::str::from_utf8(value) else {
            return Self::Invalid;
        };
        let text = text.trim_matches([' ', '\t']);
        if text.is_empty() || text.eq_ignore_ascii_case("new") {
            return Self::New;
        }
        if text.len() != SIMPLE_UUID_LEN && text.len() != HYPHENATED_UUID_LEN {
            return Self::Invalid;
        }
        match Uuid::try_parse_ascii(text.as_bytes()) {
            Ok(id) => Self::Id(id),
            Err(_) => Self::Invalid,
        }
    }
}

/// What the layer does with one request.
#[derive(Debug, PartialEq)]
pub(crate) enum Mode<'a> {
    /// Not a chat request the layer understands: forward untouched.
    Passthrough,
    /// Forward the original bytes; store nothing; no header on the response.
    Stateless,
    /// Start a conversation with this fresh UUIDv7.
    New(Uuid, ChatRequest<'a>),
    /// Continue this conversation.
    Continue(Uuid, ChatRequest<'a>),
}

/// Why a request cannot be served: the client's mistake, named for the error code the
/// service answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ModeError {
    /// `X-Conversation-ID` is neither empty, `new` nor a UUID.
    InvalidConversationId,
    /// A stateless request (it has a system message) names a conversation.
    ConversationIdWithSystemMessage,
    /// `X-Conversation-ID` was sent with a body that is not a chat request.
    NotAChatRequest,
}

/// Decides the mode from the policy, the header and the body.
///
/// The body is read once, by a scan ([`scan_chat_request`]) that builds no values: a
/// stateless request is forwarded as it came, so its mode is settled by the scan alone;
/// a request that starts or continues a conversation builds its messages from the spans
/// the scan noted. A body the scan is unsure of, or one with a system message where the
/// request cannot be stateless (it names a conversation), is parsed whole and decided by
/// [`decide_parsed`], the reference. Both give the same mode and the same request for
/// every body (a differential property test and the `request_scan` fuzz target check
/// the scan).
pub(crate) fn decide(
    policy: ModePolicy,
    header: ConversationHeader,
    body: &[u8],
) -> Result<Mode<'_>, ModeError> {
    // A malformed id is the client's mistake whatever the body holds: say so first.
    if header == ConversationHeader::Invalid {
        return Err(ModeError::InvalidConversationId);
    }
    let Some(shape) = scan_chat_request(body) else {
        return decide_parsed(policy, header, parse_chat_request(body));
    };
    if may_be_stateless(policy, header)
        && let Some(settled) = settled_without_messages(policy, header, shape.has_system_message)
    {
        return settled;
    }
    let request = shape
        .spans
        .and_then(|spans| chat_request_from_spans(body, spans))
        .or_else(|| parse_chat_request(body));
    decide_parsed(policy, header, request)
}

/// Whether a chat request under `policy` with `header` can be stateless: with a system
/// message under [`ModePolicy::SystemMessage`] when the header names no conversation, and
/// always under [`ModePolicy::Header`] without the header. A request that names a
/// conversation, or asks for a new one under the header policy, is a conversation or an
/// error, which whether it has a system message does not settle alone.
fn may_be_stateless(policy: ModePolicy, header: ConversationHeader) -> bool {
    use ConversationHeader::{Absent, New};

    match policy {
        ModePolicy::SystemMessage => matches!(header, Absent | New),
        ModePolicy::Header => header == Absent,
    }
}

/// Decides the mode from the policy, the header and the parsed body (`None` when the
/// body is not a chat request: not JSON, or no `messages` array of messages).
pub(crate) fn decide_parsed(
    policy: ModePolicy,
    header: ConversationHeader,
    request: Option<ChatRequest<'_>>,
) -> Result<Mode<'_>, ModeError> {
    use ConversationHeader::{Absent, Id, Invalid, New};

    if header == Invalid {
        return Err(ModeError::InvalidConversationId);
    }
    let Some(request) = request else {
        return match header {
            Absent => Ok(Mode::Passthrough),
            // Under the system-message policy an empty header means no header at all.
            New if policy == ModePolicy::SystemMessage => Ok(Mode::Passthrough),
            _ => Err(ModeError::NotAChatRequest),
        };
    };
    if let Some(settled) = settled_without_messages(policy, header, request.has_system_message()) {
        return settled;
    }
    // What is left starts or continues a conversation.
    Ok(match header {
        Id(id) => Mode::Continue(id, request),
        _ => Mode::New(Uuid::now_v7(), request),
    })
}

/// The modes of a chat request that need nothing of its messages but whether one is a
/// system message: stateless, or refused. `None` when the request starts or continues
/// a conversation.
fn settled_without_messages(
    policy: ModePolicy,
    header: ConversationHeader,
    has_system_message: bool,
) -> Option<Result<Mode<'static>, ModeError>> {
    use ConversationHeader::{Absent, Id, Invalid};

    match (policy, header, has_system_message) {
        (_, Invalid, _) => Some(Err(ModeError::InvalidConversationId)),
        (ModePolicy::SystemMessage, Id(_), true) => {
            Some(Err(ModeError::ConversationIdWithSystemMessage))
        }
        (ModePolicy::SystemMessage, _, true) | (ModePolicy::Header, Absent, _) => {
            Some(Ok(Mode::Stateless))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0190f0c4-5b4e-7c3a-9f1e-2d3c4b5a6978";

    fn header(values: &[&[u8]]) -> ConversationHeader {
        ConversationHeader::from_values(values.iter().copied())
    }

    fn id() -> Uuid {
        Uuid::parse_str(ID).unwrap()
    }

    const CHAT: &[u8] = br#"{"messages":[{"role":"user","content":"hi"}]}"#;
    const WITH_SYSTEM: &[u8] =
        br#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"}]}"#;
    const WITH_DEVELOPER: &[u8] =
        br#"{"messages":[{"role":"developer","content":"d"},{"role":"user","content":"hi"}]}"#;

    fn decide_on(
        policy: ModePolicy,
        header: ConversationHeader,
        body: &[u8],
    ) -> Result<Mode<'_>, ModeError> {
        decide(policy, header, body)
    }

    /// The conversation a continued request names.
    fn continued(mode: Result<Mode<'_>, ModeError>) -> Option<Uuid> {
        match mode {
            Ok(Mode::Continue(id, _)) => Some(id),
            _ => None,
        }
    }

    fn assert_new(mode: Result<Mode<'_>, ModeError>) {
        match mode {
            Ok(Mode::New(id, _)) => assert_eq!(id.get_version_num(), 7, "ids are UUIDv7"),
            other => panic!("expected a new conversation, got {other:?}"),
        }
    }

    fn assert_error(mode: Result<Mode<'_>, ModeError>, error: ModeError) {
        assert_eq!(mode.expect_err("expected an error"), error);
    }

    /// A mode with its fresh id left out, to compare two decisions.
    fn shape(
        mode: &Result<Mode<'_>, ModeError>,
    ) -> Result<(&'static str, Option<Uuid>), ModeError> {
        match mode {
            Ok(Mode::Passthrough) => Ok(("passthrough", None)),
            Ok(Mode::Stateless) => Ok(("stateless", None)),
            Ok(Mode::New(..)) => Ok(("new", None)),
            Ok(Mode::Continue(id, _)) => Ok(("continue", Some(*id))),
            Err(error) => Err(*error),
        }
    }

    #[test]
    fn decide_agrees_with_the_parse_under_every_policy_and_header() {
        let headers = [
            ConversationHeader::Absent,
            ConversationHeader::New,
            ConversationHeader::Id(id()),
            ConversationHeader::Invalid,
        ];
        let bodies: [&[u8]; 6] = [
            CHAT,
            WITH_SYSTEM,
            WITH_DEVELOPER,
            b"not json",
            br#"{"model":"m"}"#,
            br#"{"messages":[{"role":"syst\u0065m"}]}"#,
        ];
        for policy in [ModePolicy::SystemMessage, ModePolicy::Header] {
            for header in headers {
                for body in bodies {
                    let parsed = decide_parsed(policy, header, parse_chat_request(body));
                    assert_eq!(
                        shape(&decide(policy, header, body)),
                        shape(&parsed),
                        "{policy:?}, {header:?}, {}",
                        String::from_utf8_lossy(body)
                    );
                }
            }
        }
    }

    #[test]
    fn the_scan_settles_the_mode_alone_only_where_the_request_may_be_stateless() {
        use ConversationHeader::{Absent, Id, New};
        let system = ModePolicy::SystemMessage;
        assert!(may_be_stateless(system, Absent));
        assert!(may_be_stateless(system, New));
        assert!(!may_be_stateless(system, Id(id())));
        assert!(may_be_stateless(ModePolicy::Header, Absent));
        assert!(!may_be_stateless(ModePolicy::Header, New));
        assert!(!may_be_stateless(ModePolicy::Header, Id(id())));
    }

    #[test]
    fn no_header_is_absent() {
        assert_eq!(header(&[]), ConversationHeader::Absent);
    }

    #[test]
    fn an_empty_header_starts_a_conversation() {
        assert_eq!(header(&[b""]), ConversationHeader::New);
        assert_eq!(header(&[b"  \t "]), ConversationHeader::New);
    }

    #[test]
    fn new_in_any_case_starts_a_conversation() {
        for value in [&b"new"[..], b"NEW", b"New", b" nEw "] {
            assert_eq!(header(&[value]), ConversationHeader::New, "{value:?}");
        }
    }

    #[test]
    fn a_hyphenated_or_simple_uuid_names_a_conversation() {
        let simple = id().simple().to_string();
        let upper = ID.to_ascii_uppercase();
        let padded = format!("  {ID}\t");
        for value in [ID, &simple, &upper, &padded] {
            assert_eq!(
                header(&[value.as_bytes()]),
                ConversationHeader::Id(id()),
                "{value}"
            );
        }
    }

    #[test]
    fn a_header_that_is_not_a_uuid_is_invalid() {
        let braced = format!("{{{ID}}}");
        let urn = format!("urn:uuid:{ID}");
        let truncated = &ID[..35];
        let bad_digit = ID.replace('a', "g");
        for value in ["nope", "newer", "0", &braced, &urn, truncated, &bad_digit] {
            assert_eq!(
                header(&[value.as_bytes()]),
                ConversationHeader::Invalid,
                "{value}"
            );
        }
    }

    #[test]
    fn a_header_that_is_not_utf8_is_invalid() {
        assert_eq!(header(&[b"\xff\xfe"]), ConversationHeader::Invalid);
    }

    #[test]
    fn several_header_values_are_invalid() {
        assert_eq!(
            header(&[ID.as_bytes(), ID.as_bytes()]),
            ConversationHeader::Invalid
        );
        assert_eq!(header(&[b"", b""]), ConversationHeader::Invalid);
    }

    #[test]
    fn an_invalid_header_is_refused_before_anything_else() {
        for policy in [ModePolicy::SystemMessage, ModePolicy::Header] {
            for body in [CHAT, WITH_SYSTEM, b"not json"] {
                let mode = decide_on(policy, ConversationHeader::Invalid, body);
                assert_error(mode, ModeError::InvalidConversationId);
            }
        }
    }

    #[test]
    fn system_policy_passes_through_a_body_that_is_not_a_chat_request_without_a_header() {
        let policy = ModePolicy::SystemMessage;
        for header in [ConversationHeader::Absent, ConversationHeader::New] {
            for body in [&b"not json"[..], br#"{"model":"m"}"#] {
                assert_eq!(decide_on(policy, header, body), Ok(Mode::Passthrough));
            }
        }
    }

    #[test]
    fn system_policy_refuses_a_conversation_id_on_a_body_that_is_not_a_chat_request() {
        let mode = decide_on(
            ModePolicy::SystemMessage,
            ConversationHeader::Id(id()),
            b"[]",
        );
        assert_error(mode, ModeError::NotAChatRequest);
    }

    #[test]
    fn system_policy_keeps_a_request_with_a_system_or_developer_message_stateless() {
        let policy = ModePolicy::SystemMessage;
        for header in [ConversationHeader::Absent, ConversationHeader::New] {
            for body in [WITH_SYSTEM, WITH_DEVELOPER] {
                assert_eq!(decide_on(policy, header, body), Ok(Mode::Stateless));
            }
        }
    }

    #[test]
    fn system_policy_refuses_a_conversation_id_with_a_system_message() {
        for body in [WITH_SYSTEM, WITH_DEVELOPER] {
            let mode = decide_on(
                ModePolicy::SystemMessage,
                ConversationHeader::Id(id()),
                body,
            );
            assert_error(mode, ModeError::ConversationIdWithSystemMessage);
        }
    }

    #[test]
    fn system_policy_starts_a_conversation_without_a_system_message_or_header() {
        let policy = ModePolicy::SystemMessage;
        assert_new(decide_on(policy, ConversationHeader::Absent, CHAT));
        assert_new(decide_on(policy, ConversationHeader::New, CHAT));
    }

    #[test]
    fn system_policy_continues_the_conversation_the_header_names() {
        let mode = decide_on(
            ModePolicy::SystemMessage,
            ConversationHeader::Id(id()),
            CHAT,
        );
        assert_eq!(continued(mode), Some(id()));
    }

    #[test]
    fn each_new_conversation_gets_its_own_id() {
        let first = decide_on(ModePolicy::SystemMessage, ConversationHeader::Absent, CHAT);
        let second = decide_on(ModePolicy::SystemMessage, ConversationHeader::Absent, CHAT);
        assert_ne!(first, second);
    }

    #[test]
    fn header_policy_passes_through_a_body_that_is_not_a_chat_request_only_without_a_header() {
        let policy = ModePolicy::Header;
        let body = b"not json";
        assert_eq!(
            decide_on(policy, ConversationHeader::Absent, body),
            Ok(Mode::Passthrough)
        );
        for header in [ConversationHeader::New, ConversationHeader::Id(id())] {
            assert_error(decide_on(policy, header, body), ModeError::NotAChatRequest);
        }
    }

    #[test]
    fn header_policy_without_a_header_is_stateless() {
        for body in [CHAT, WITH_SYSTEM] {
            assert_eq!(
                decide_on(ModePolicy::Header, ConversationHeader::Absent, body),
                Ok(Mode::Stateless)
            );
        }
    }

    #[test]
    fn header_policy_with_an_empty_header_starts_a_conversation_even_with_a_system_message() {
        for body in [CHAT, WITH_SYSTEM, WITH_DEVELOPER] {
            assert_new(decide_on(ModePolicy::Header, ConversationHeader::New, body));
        }
    }

    #[test]
    fn header_policy_with_a_uuid_continues_even_with_a_system_message() {
        for body in [CHAT, WITH_SYSTEM] {
            let mode = decide_on(ModePolicy::Header, ConversationHeader::Id(id()), body);
            assert_eq!(continued(mode), Some(id()));
        }
    }
}
