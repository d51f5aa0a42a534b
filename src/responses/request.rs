//! [`ResponsesRequest`]: a `POST /v1/responses` body, checked and translated into the
//! chat-completions request the inner service answers.
//!
//! | Responses | chat completions |
//! |---|---|
//! | `model` | `model` |
//! | `input` (a string, or input items) | `messages`, after the history |
//! | `instructions` | a leading `system` message, for this request only |
//! | `tools` (`function` tools) | `tools` (`{"type": "function", "function": {...}}`) |
//! | `tool_choice` | `tool_choice` |
//! | `temperature`, `top_p`, `user`, `parallel_tool_calls` | the same |
//! | `max_output_tokens` | `max_completion_tokens` (or `max_tokens`, a layer setting) |
//! | `text.format` (`json_schema`, `json_object`) | `response_format` |
//! | `text.verbosity` | `verbosity` |
//! | `reasoning.effort` | `reasoning_effort` |
//! | `service_tier`, `prompt_cache_key`, `safety_identifier` | the same |
//! | `stream` | `stream` (with `stream_options.include_usage`) |
//!
//! `metadata` stays with the response (echoed and stored) and is not sent upstream:
//! OpenAI's own chat API refuses `metadata` unless it stores the completion itself.
//! `store`, `previous_response_id`, `conversation` and `truncation` are the layer's.
//! Everything chat completions cannot express is refused with `400` naming it: built-in
//! tools, `background: true`, `include`, `prompt`, `top_logprobs`, `max_tool_calls`, and
//! any parameter this list does not name. A field set to `null` counts as absent.

use std::borrow::Cow;

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::id::ResponseId;
use crate::error::ApiError;
use crate::items::to_messages;

/// Which chat field `max_output_tokens` becomes.
///
/// ```
/// use tower_conversations::MaxTokensField;
/// assert_eq!(MaxTokensField::default(), MaxTokensField::MaxCompletionTokens);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MaxTokensField {
    /// `max_completion_tokens`, the field OpenAI's chat API reads today.
    #[default]
    MaxCompletionTokens,
    /// `max_tokens`, for servers that know only the older field.
    MaxTokens,
}

impl MaxTokensField {
    fn name(self) -> &'static str {
        match self {
            Self::MaxCompletionTokens => "max_completion_tokens",
            Self::MaxTokens => "max_tokens",
        }
    }
}

/// Fields copied to the chat request as they are, after a type check.
const COPIED: [(&str, Kind); 7] = [
    ("temperature", Kind::Number),
    ("top_p", Kind::Number),
    ("user", Kind::String),
    ("parallel_tool_calls", Kind::Bool),
    ("service_tier", Kind::String),
    ("prompt_cache_key", Kind::String),
    ("safety_identifier", Kind::String),
];

#[derive(Clone, Copy)]
enum Kind {
    Number,
    String,
    Bool,
}

impl Kind {
    fn check(self, value: &Value) -> bool {
        match self {
            Self::Number => value.is_number(),
            Self::String => value.is_string(),
            Self::Bool => value.is_boolean(),
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Self::Number => "must be a number",
            Self::String => "must be a string",
            Self::Bool => "must be a boolean",
        }
    }
}

/// What state a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// A new chain.
    Fresh,
    /// `previous_response_id`: continue (or branch from) a stored response.
    Previous(ResponseId),
    /// `conversation`: continue a conversation.
    Conversation(Uuid),
}

/// A checked `POST /v1/responses` body.
#[derive(Debug)]
pub(crate) struct ResponsesRequest {
    /// The chat request's fields, all but `messages` and `stream`.
    chat: Map<String, Value>,
    /// The input as chat messages: what the turn stores before the reply.
    pub(crate) input: Vec<Value>,
    pub(crate) instructions: Option<String>,
    pub(crate) stream: bool,
    pub(crate) store: bool,
    pub(crate) state: State,
    /// `truncation: "auto"`: the layer's history window applies.
    pub(crate) truncate: bool,
    /// The request fields the response object repeats, as OpenAI's does.
    pub(crate) echo: Map<String, Value>,
}

fn bad(param: impl Into<Cow<'static, str>>, message: impl Into<Cow<'static, str>>) -> ApiError {
    ApiError::invalid_request(message).with_param(param)
}

fn unsupported(param: impl Into<Cow<'static, str>>, what: &str) -> ApiError {
    ApiError::new(
        http::StatusCode::BAD_REQUEST,
        "unsupported_parameter",
        format!("{what} cannot be expressed as a chat completion, which this server answers with."),
    )
    .with_param(param)
}

impl ResponsesRequest {
    /// Reads and checks a body; `400` with `param` for the first field at fault.
    pub(crate) fn parse(body: &[u8], max_tokens: MaxTokensField) -> Result<Self, ApiError> {
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
            return Err(ApiError::invalid_request("The body must be a JSON object."));
        };
        let mut request = Self {
            chat: Map::new(),
            input: Vec::new(),
            instructions: None,
            stream: false,
            store: true,
            state: State::Fresh,
            truncate: false,
            echo: Map::new(),
        };
        let mut previous = None;
        let mut conversation = None;
        for (name, value) in fields {
            if value.is_null() {
                continue;
            }
            request.field(&name, value, max_tokens, &mut previous, &mut conversation)?;
        }
        if !request.chat.contains_key("model") {
            return Err(bad("model", "model is required."));
        }
        request.state = match (previous, conversation) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "previous_response_id",
                    "previous_response_id and conversation cannot be used together.",
                ));
            }
            (Some(previous), None) => State::Previous(previous),
            (None, Some(conversation)) => State::Conversation(conversation),
            (None, None) => State::Fresh,
        };
        Ok(request)
    }

    fn field(
        &mut self,
        name: &str,
        value: Value,
        max_tokens: MaxTokensField,
        previous: &mut Option<ResponseId>,
        conversation: &mut Option<Uuid>,
    ) -> Result<(), ApiError> {
        if let Some((_, kind)) = COPIED.iter().find(|(copied, _)| *copied == name) {
            if !kind.check(&value) {
                return Err(bad(name.to_owned(), format!("{name} {}.", kind.expected())));
            }
            self.echo.insert(name.to_owned(), value.clone());
            self.chat.insert(name.to_owned(), value);
            return Ok(());
        }
        match name {
            "model" => {
                if !value.is_string() {
                    return Err(bad("model", "model must be a string."));
                }
                self.echo.insert("model".to_owned(), value.clone());
                self.chat.insert("model".to_owned(), value);
            }
            "input" => self.input = input_messages(&value)?,
            "instructions" => match value {
                Value::String(text) => {
                    self.echo.insert(name.to_owned(), json!(text));
                    self.instructions = Some(text);
                }
                _ => return Err(bad("instructions", "instructions must be a string.")),
            },
            "tools" => {
                let tools = chat_tools(&value)?;
                if !tools.is_empty() {
                    self.chat.insert("tools".to_owned(), Value::Array(tools));
                }
                self.echo.insert(name.to_owned(), value);
            }
            "tool_choice" => {
                self.chat.insert(name.to_owned(), chat_tool_choice(&value)?);
                self.echo.insert(name.to_owned(), value);
            }
            "max_output_tokens" => {
                if matches!(value.as_u64(), None | Some(0)) {
                    return Err(bad(
                        "max_output_tokens",
                        "max_output_tokens must be a positive integer.",
                    ));
                }
                self.chat
                    .insert(max_tokens.name().to_owned(), value.clone());
                self.echo.insert(name.to_owned(), value);
            }
            "metadata" => {
                check_metadata(&value)?;
                self.echo.insert(name.to_owned(), value);
            }
            "text" => {
                self.text(&value)?;
                self.echo.insert(name.to_owned(), value);
            }
            "reasoning" => {
                let Value::Object(reasoning) = &value else {
                    return Err(bad("reasoning", "reasoning must be an object."));
                };
                match reasoning.get("effort") {
                    None | Some(Value::Null) => {}
                    Some(effort @ Value::String(_)) => {
                        self.chat
                            .insert("reasoning_effort".to_owned(), effort.clone());
                    }
                    Some(_) => return Err(bad("reasoning.effort", "effort must be a string.")),
                }
                self.echo.insert(name.to_owned(), value);
            }
            "stream" => self.stream = flag(name, &value)?,
            "store" => self.store = flag(name, &value)?,
            "background" => {
                if flag(name, &value)? {
                    return Err(unsupported("background", "background: true"));
                }
            }
            "include" => match &value {
                Value::Array(values) if values.is_empty() => {}
                Value::Array(_) => return Err(unsupported("include", "include")),
                _ => return Err(bad("include", "include must be an array.")),
            },
            // Only OpenAI's stream obfuscation lives here; a translated stream has none.
            "stream_options" if value.is_object() => {}
            "previous_response_id" => {
                let id = value.as_str().ok_or_else(|| {
                    bad(
                        "previous_response_id",
                        "previous_response_id must be a string.",
                    )
                })?;
                *previous = Some(id.parse().map_err(|_| previous_not_found(id))?);
                self.echo.insert(name.to_owned(), value);
            }
            "conversation" => {
                let id = match &value {
                    Value::String(id) => id.as_str(),
                    Value::Object(object) => {
                        object.get("id").and_then(Value::as_str).ok_or_else(|| {
                            bad("conversation.id", "conversation.id must be a string.")
                        })?
                    }
                    _ => {
                        return Err(bad(
                            "conversation",
                            "conversation must be an id or an object with an id.",
                        ));
                    }
                };
                let id = Uuid::try_parse(id)
                    .map_err(|_| ApiError::invalid_conversation_id().with_param("conversation"))?;
                *conversation = Some(id);
                self.echo
                    .insert(name.to_owned(), json!({"id": id.to_string()}));
            }
            "truncation" => {
                self.truncate = match value.as_str() {
                    Some("auto") => true,
                    Some("disabled") => false,
                    _ => return Err(bad("truncation", "truncation is auto or disabled.")),
                };
                self.echo.insert(name.to_owned(), value);
            }
            other => {
                return Err(unsupported(
                    other.to_owned(),
                    &format!("The parameter {other}"),
                ));
            }
        }
        Ok(())
    }

    /// `text.format` becomes `response_format`, `text.verbosity` `verbosity`.
    fn text(&mut self, text: &Value) -> Result<(), ApiError> {
        let Value::Object(text) = text else {
            return Err(bad("text", "text must be an object."));
        };
        for (name, value) in text {
            match (name.as_str(), value) {
                (_, Value::Null) => {}
                ("verbosity", Value::String(_)) => {
                    self.chat.insert("verbosity".to_owned(), value.clone());
                }
                ("format", Value::Object(format)) => {
                    if let Some(format) = response_format(format)? {
                        self.chat.insert("response_format".to_owned(), format);
                    }
                }
                (other, _) => {
                    return Err(bad(
                        format!("text.{other}"),
                        "text has format and verbosity.",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The chat-completions body for these messages.
    pub(crate) fn chat_body(&self, messages: Vec<Value>) -> Value {
        let mut body = self.chat.clone();
        body.insert("messages".to_owned(), Value::Array(messages));
        if self.stream {
            body.insert("stream".to_owned(), json!(true));
            body.insert("stream_options".to_owned(), json!({"include_usage": true}));
        } else {
            body.insert("stream".to_owned(), json!(false));
        }
        // Chat APIs refuse parallel_tool_calls without tools.
        if !body.contains_key("tools") {
            body.remove("parallel_tool_calls");
        }
        Value::Object(body)
    }

    /// The model the request names.
    pub(crate) fn model(&self) -> &Value {
        &self.chat["model"]
    }
}

/// The `404` for a `previous_response_id` that names no stored response of the caller.
pub(crate) fn previous_not_found(id: &str) -> ApiError {
    ApiError::new(
        http::StatusCode::NOT_FOUND,
        "previous_response_not_found",
        format!("Previous response with id '{id}' not found."),
    )
    .with_param("previous_response_id")
}

fn flag(name: &str, value: &Value) -> Result<bool, ApiError> {
    value
        .as_bool()
        .ok_or_else(|| bad(name.to_owned(), format!("{name} must be a boolean.")))
}

/// The input as chat messages. Reasoning items (a previous output sent back) are left
/// out: reasoning is never sent upstream again.
fn input_messages(input: &Value) -> Result<Vec<Value>, ApiError> {
    let items = match input {
        Value::String(text) => return Ok(vec![json!({"role": "user", "content": text})]),
        Value::Array(items) => items,
        _ => return Err(bad("input", "input is a string or an array of items.")),
    };
    let mut kept = Vec::with_capacity(items.len());
    let mut positions = Vec::with_capacity(items.len());
    for (position, item) in items.iter().enumerate() {
        if item["type"] != "reasoning" {
            kept.push(item.clone());
            positions.push(position);
        }
    }
    to_messages(&kept).map_err(|error| {
        // `items[<kept index>].field` names the place in `input` instead.
        let param = error.param();
        let renamed = param
            .strip_prefix("items[")
            .and_then(|rest| rest.split_once(']'))
            .and_then(|(index, field)| {
                let index: usize = index.parse().ok()?;
                Some(format!("input[{}]{field}", positions.get(index)?))
            })
            .unwrap_or_else(|| "input".to_owned());
        bad(renamed, error.message())
    })
}

/// Responses function tools as chat tools; any other kind is refused, naming it.
fn chat_tools(tools: &Value) -> Result<Vec<Value>, ApiError> {
    let Value::Array(tools) = tools else {
        return Err(bad("tools", "tools must be an array."));
    };
    let mut chat = Vec::with_capacity(tools.len());
    for (index, tool) in tools.iter().enumerate() {
        match tool["type"].as_str() {
            Some("function") => {}
            Some(kind) => {
                return Err(unsupported(
                    format!("tools[{index}].type"),
                    &format!("The built-in tool {kind}"),
                ));
            }
            None => return Err(bad(format!("tools[{index}].type"), "a tool needs a type.")),
        }
        let Some(name) = tool["name"].as_str() else {
            return Err(bad(
                format!("tools[{index}].name"),
                "a function tool needs a name.",
            ));
        };
        let mut function = Map::new();
        function.insert("name".to_owned(), json!(name));
        for field in ["description", "parameters", "strict"] {
            if let Some(value) = tool.get(field).filter(|value| !value.is_null()) {
                function.insert(field.to_owned(), value.clone());
            }
        }
        chat.push(json!({"type": "function", "function": function}));
    }
    Ok(chat)
}

fn chat_tool_choice(choice: &Value) -> Result<Value, ApiError> {
    match choice {
        Value::String(mode) if ["none", "auto", "required"].contains(&mode.as_str()) => {
            Ok(choice.clone())
        }
        Value::Object(object) if object.get("type") == Some(&json!("function")) => {
            match object.get("name").and_then(Value::as_str) {
                Some(name) => Ok(json!({"type": "function", "function": {"name": name}})),
                None => Err(bad(
                    "tool_choice.name",
                    "a function tool choice needs a name.",
                )),
            }
        }
        Value::Object(_) => Err(unsupported("tool_choice", "This tool_choice")),
        _ => Err(bad(
            "tool_choice",
            "tool_choice is none, auto, required or a function.",
        )),
    }
}

fn response_format(format: &Map<String, Value>) -> Result<Option<Value>, ApiError> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            for field in ["name", "schema", "strict", "description"] {
                if let Some(value) = format.get(field).filter(|value| !value.is_null()) {
                    schema.insert(field.to_owned(), value.clone());
                }
            }
            if !schema.contains_key("name") {
                return Err(bad(
                    "text.format.name",
                    "a json_schema format needs a name.",
                ));
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        _ => Err(bad(
            "text.format.type",
            "text.format.type is text, json_object or json_schema.",
        )),
    }
}

/// At most 16 pairs of strings, keys up to 64 characters, values up to 512.
fn check_metadata(metadata: &Value) -> Result<(), ApiError> {
    let Value::Object(pairs) = metadata else {
        return Err(bad("metadata", "metadata must be an object of strings."));
    };
    if pairs.len() > 16 {
        return Err(bad("metadata", "metadata holds at most 16 pairs."));
    }
    for (key, value) in pairs {
        let fits = key.chars().count() <= 64
            && value
                .as_str()
                .is_some_and(|value| value.chars().count() <= 512);
        if !fits {
            return Err(bad(
                format!("metadata.{key}"),
                "metadata keys are at most 64 characters, values strings of at most 512.",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<ResponsesRequest, ApiError> {
        ResponsesRequest::parse(body.to_string().as_bytes(), MaxTokensField::default())
    }

    #[test]
    fn every_translated_field_reaches_the_chat_request() {
        let request = parse(json!({
            "model": "m", "input": "hi", "instructions": "be brief",
            "tools": [{"type": "function", "name": "clock", "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": {"type": "function", "name": "clock"},
            "temperature": 0.5, "top_p": 0.9, "max_output_tokens": 64, "parallel_tool_calls": false,
            "user": "u", "metadata": {"k": "v"}, "text": {"format": {"type": "json_schema", "name": "s", "schema": {}}},
            "reasoning": {"effort": "low"}, "stream": true
        }))
        .unwrap();
        let body = request.chat_body(request.input.clone());
        assert_eq!(
            body,
            json!({
                "model": "m", "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "clock", "parameters": {"type": "object"}, "strict": true}}],
                "tool_choice": {"type": "function", "function": {"name": "clock"}},
                "temperature": 0.5, "top_p": 0.9, "max_completion_tokens": 64,
                "parallel_tool_calls": false, "user": "u",
                "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {}}},
                "reasoning_effort": "low", "stream": true, "stream_options": {"include_usage": true}
            })
        );
        assert_eq!(request.instructions.as_deref(), Some("be brief"));
    }

    #[test]
    fn max_output_tokens_can_become_max_tokens() {
        let body = json!({"model": "m", "input": "hi", "max_output_tokens": 5}).to_string();
        let request = ResponsesRequest::parse(body.as_bytes(), MaxTokensField::MaxTokens).unwrap();
        assert_eq!(request.chat_body(vec![])["max_tokens"], 5);
    }

    #[test]
    fn what_chat_completions_cannot_express_is_refused_by_name() {
        for (body, param) in [
            (
                json!({"model": "m", "tools": [{"type": "web_search"}]}),
                "tools[0].type",
            ),
            (json!({"model": "m", "background": true}), "background"),
            (
                json!({"model": "m", "include": ["reasoning.encrypted_content"]}),
                "include",
            ),
            (json!({"model": "m", "prompt": {"id": "p"}}), "prompt"),
            (
                json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}),
                "input[0].type",
            ),
        ] {
            let error = parse(body).unwrap_err();
            assert_eq!(error.status, http::StatusCode::BAD_REQUEST);
            assert_eq!(error.param.as_deref(), Some(param));
        }
    }

    #[test]
    fn previous_response_id_and_conversation_exclude_each_other() {
        let id = ResponseId::new(Uuid::now_v7()).to_string();
        let error = parse(json!({
            "model": "m", "previous_response_id": id, "conversation": Uuid::now_v7().to_string()
        }))
        .unwrap_err();
        assert_eq!(error.param.as_deref(), Some("previous_response_id"));
    }

    #[test]
    fn reasoning_items_sent_back_are_left_out() {
        let request = parse(json!({"model": "m", "input": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"role": "user", "content": "hi"},
            {"role": "user", "content": 5}
        ]}))
        .unwrap_err();
        assert_eq!(request.param.as_deref(), Some("input[2].content"));
    }
}
