//! Streaming: the chat-completions SSE stream translated into the Responses event
//! sequence, each event with its `sequence_number`:
//!
//! `response.created`, `response.in_progress`; per output item
//! `response.output_item.added` and, for a message, `response.content_part.added`,
//! `response.output_text.delta`... (or `response.refusal.delta`...),
//! `response.output_text.done`, `response.content_part.done`; for a reasoning item
//! `response.reasoning_text.delta`... and `.done`; for a function call
//! `response.function_call_arguments.delta`... and `.done`; then
//! `response.output_item.done`. Last comes `response.completed`, `response.incomplete` or
//! (after an `error` event for an upstream error inside the stream) `response.failed`,
//! sent only once the turn is stored.
//!
//! [`EventTranslator`] is plain synchronous code, fed one chunk's data at a time; the task
//! in [`translate`] reads the upstream body, feeds it, and sends the events on a channel
//! the response body reads. A client that goes away drops the channel: the task then
//! drops the upstream body (which cancels the upstream call) and stores what arrived,
//! marked incomplete, as the chat path does.

use std::fmt::Write;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;

use bytes::Bytes;
use http_body::Body;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::delta::Delta;
use super::finish::Finisher;
use super::object::Status;
use crate::chat::ReplyAssembler;
use crate::sse::SseParser;
use crate::store::NewMessage;
use crate::store::json_text::{write_string, write_value};

/// Events waiting in the channel before the task waits for the client to read.
const CHANNEL_EVENTS: usize = 32;

/// The kind of output item being streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemKind {
    Reasoning,
    Message,
    /// A function call, by its index in the chat deltas.
    Call(u64),
}

/// An output item opened in the stream and not yet done.
#[derive(Debug)]
struct OpenItem {
    kind: ItemKind,
    id: String,
    output_index: usize,
    /// Reasoning text, message text, or call arguments.
    text: String,
    refusal: String,
    /// Content parts opened (message: the text part, then the refusal part).
    text_part: Option<usize>,
    refusal_part: Option<usize>,
    call_id: String,
    name: String,
}

/// Turns chat-completion chunks into Responses events, numbering them.
#[derive(Debug)]
pub(crate) struct EventTranslator {
    /// The sequence number the assistant message will be stored under: item ids.
    sequence: i64,
    items_opened: usize,
    calls_opened: usize,
    open: Option<OpenItem>,
    events: Events,
}

/// The events written and not yet taken, and the next one's number.
#[derive(Debug, Default)]
struct Events {
    next: u64,
    out: Vec<Bytes>,
}

/// A member of an event's data, as [`Events::push`] writes it.
enum Member<'a> {
    Text(&'a str),
    Number(usize),
    Json(&'a Value),
    /// JSON text as it is.
    Raw(&'static str),
}

impl Events {
    /// Writes one event: `{"type": kind, members..., "sequence_number": n}`.
    ///
    /// Written straight into its text with the crate's JSON writer: built as a map of
    /// values and serialized, each delta event cost some 16,000 instructions, about half
    /// of what a streamed chunk cost the Responses API (see `docs/performance.md`).
    fn push<'a>(&mut self, kind: &str, members: impl IntoIterator<Item = (&'a str, Member<'a>)>) {
        let mut text = String::with_capacity(160);
        text.push_str("event: ");
        text.push_str(kind);
        text.push_str("\ndata: {\"type\":");
        write_string(kind, &mut text);
        for (key, member) in members {
            text.push(',');
            write_string(key, &mut text);
            text.push(':');
            match member {
                Member::Text(value) => write_string(value, &mut text),
                Member::Number(value) => {
                    let _ = write!(text, "{value}");
                }
                Member::Json(value) => write_value(value, &mut text),
                Member::Raw(value) => text.push_str(value),
            }
        }
        let _ = write!(text, ",\"sequence_number\":{}}}\n\n", self.next);
        self.next += 1;
        self.out.push(Bytes::from(text));
    }
}

impl EventTranslator {
    pub(crate) fn new(sequence: i64) -> Self {
        Self {
            sequence,
            items_opened: 0,
            calls_opened: 0,
            open: None,
            events: Events::default(),
        }
    }

    /// Queues one event: `type` and `sequence_number` are added to `fields`, an object.
    pub(crate) fn event(&mut self, kind: &str, fields: Value) {
        let members = fields.as_object().into_iter().flatten();
        let members = members.map(|(key, value)| (key.as_str(), Member::Json(value)));
        self.events.push(kind, members);
    }

    /// The events queued since the last call.
    pub(crate) fn take(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.events.out)
    }

    /// Reads one chunk's data (not `[DONE]`).
    pub(crate) fn on_chunk(&mut self, data: &str) {
        let Some(delta) = Delta::read(data) else {
            return;
        };
        if let Some(text) = &delta.reasoning {
            self.reasoning(text);
        }
        if let Some(text) = &delta.content {
            self.text(text, false);
        }
        if let Some(text) = &delta.refusal {
            self.text(text, true);
        }
        for call in &delta.tool_calls {
            self.call(call);
        }
    }

    /// Opens an item of `kind` unless it is the one open; closes the one open first.
    fn open(&mut self, kind: ItemKind, id: String, item: Value) -> bool {
        if self.open.as_ref().is_some_and(|open| open.kind == kind) {
            return false;
        }
        self.close("completed");
        let output_index = self.items_opened;
        self.items_opened += 1;
        self.event(
            "response.output_item.added",
            json!({"output_index": output_index, "item": item}),
        );
        self.open = Some(OpenItem {
            kind,
            id,
            output_index,
            text: String::new(),
            refusal: String::new(),
            text_part: None,
            refusal_part: None,
            call_id: String::new(),
            name: String::new(),
        });
        true
    }

    fn reasoning(&mut self, text: &str) {
        // Reasoning is streamed as an item only before anything else: after text or
        // calls it is kept for the response object alone.
        let open_kind = self.open.as_ref().map(|open| open.kind);
        if open_kind != Some(ItemKind::Reasoning) && self.items_opened > 0 {
            return;
        }
        if open_kind != Some(ItemKind::Reasoning) {
            let id = format!("rs_{}", self.sequence);
            let item = json!({"type": "reasoning", "id": id, "summary": [], "content": []});
            self.open(ItemKind::Reasoning, id, item);
        }
        let Some(open) = &mut self.open else { return };
        open.text.push_str(text);
        let fields = [
            ("item_id", Member::Text(&open.id)),
            ("output_index", Member::Number(open.output_index)),
            ("content_index", Member::Number(0)),
            ("delta", Member::Text(text)),
        ];
        self.events.push("response.reasoning_text.delta", fields);
    }

    fn text(&mut self, text: &str, refusal: bool) {
        // Nearly every chunk adds to the message already open: nothing to build for it.
        if self.open.as_ref().map(|open| open.kind) != Some(ItemKind::Message) {
            let id = format!("msg_{}", self.sequence);
            let item = json!({
                "type": "message", "id": id, "status": "in_progress", "role": "assistant",
                "content": [],
            });
            self.open(ItemKind::Message, id, item);
        }
        let Some(open) = &mut self.open else { return };
        let parts =
            usize::from(open.text_part.is_some()) + usize::from(open.refusal_part.is_some());
        let slot = if refusal {
            &mut open.refusal_part
        } else {
            &mut open.text_part
        };
        let content_index = *slot.get_or_insert(parts);
        if content_index == parts {
            let part = if refusal {
                json!({"type": "refusal", "refusal": ""})
            } else {
                json!({"type": "output_text", "text": "", "annotations": []})
            };
            let fields = [
                ("item_id", Member::Text(&open.id)),
                ("output_index", Member::Number(open.output_index)),
                ("content_index", Member::Number(content_index)),
                ("part", Member::Json(&part)),
            ];
            self.events.push("response.content_part.added", fields);
        }
        if refusal {
            open.refusal.push_str(text);
        } else {
            open.text.push_str(text);
        }
        let (kind, logprobs) = if refusal {
            ("response.refusal.delta", None)
        } else {
            (
                "response.output_text.delta",
                Some(("logprobs", Member::Raw("[]"))),
            )
        };
        let fields = [
            ("item_id", Member::Text(&open.id)),
            ("output_index", Member::Number(open.output_index)),
            ("content_index", Member::Number(content_index)),
            ("delta", Member::Text(text)),
        ];
        self.events.push(kind, fields.into_iter().chain(logprobs));
    }

    fn call(&mut self, call: &Value) {
        let index = call["index"].as_u64().unwrap_or(0);
        let function = &call["function"];
        if self.open.as_ref().map(|open| open.kind) != Some(ItemKind::Call(index)) {
            let id = format!("fc_{}_{}", self.sequence, self.calls_opened);
            self.calls_opened += 1;
            let call_id = call["id"].as_str().unwrap_or_default();
            let name = function["name"].as_str().unwrap_or_default();
            let item = json!({
                "type": "function_call", "id": id, "status": "in_progress",
                "call_id": call_id, "name": name, "arguments": "",
            });
            self.open(ItemKind::Call(index), id, item);
            if let Some(open) = &mut self.open {
                open.call_id = call_id.to_owned();
                open.name = name.to_owned();
            }
        }
        let Some(open) = &mut self.open else { return };
        if open.call_id.is_empty() {
            open.call_id = call["id"].as_str().unwrap_or_default().to_owned();
        }
        if open.name.is_empty() {
            open.name = function["name"].as_str().unwrap_or_default().to_owned();
        }
        let Some(arguments) = function["arguments"].as_str().filter(|a| !a.is_empty()) else {
            return;
        };
        open.text.push_str(arguments);
        let fields = [
            ("item_id", Member::Text(&open.id)),
            ("output_index", Member::Number(open.output_index)),
            ("delta", Member::Text(arguments)),
        ];
        self.events
            .push("response.function_call_arguments.delta", fields);
    }

    /// Ends the open item, if any, with its `.done` events.
    pub(crate) fn close(&mut self, status: &str) {
        let Some(open) = self.open.take() else {
            return;
        };
        let at = json!({"item_id": open.id, "output_index": open.output_index});
        let with = |extra: Value| {
            let mut fields = at.clone();
            if let (Value::Object(fields), Value::Object(extra)) = (&mut fields, extra) {
                fields.extend(extra);
            }
            fields
        };
        let item = match open.kind {
            ItemKind::Reasoning => {
                self.event(
                    "response.reasoning_text.done",
                    with(json!({"content_index": 0, "text": open.text})),
                );
                json!({"type": "reasoning", "id": open.id, "summary": [],
                       "content": [{"type": "reasoning_text", "text": open.text}]})
            }
            ItemKind::Message => {
                let mut parts = vec![Value::Null; 2];
                if let Some(index) = open.text_part {
                    let part = json!({"type": "output_text", "text": open.text, "annotations": []});
                    self.event(
                        "response.output_text.done",
                        with(json!({"content_index": index, "text": open.text, "logprobs": []})),
                    );
                    self.event(
                        "response.content_part.done",
                        with(json!({"content_index": index, "part": part})),
                    );
                    parts[index] = part;
                }
                if let Some(index) = open.refusal_part {
                    let part = json!({"type": "refusal", "refusal": open.refusal});
                    self.event(
                        "response.refusal.done",
                        with(json!({"content_index": index, "refusal": open.refusal})),
                    );
                    self.event(
                        "response.content_part.done",
                        with(json!({"content_index": index, "part": part})),
                    );
                    parts[index] = part;
                }
                parts.retain(|part| !part.is_null());
                json!({"type": "message", "id": open.id, "status": status, "role": "assistant",
                       "content": parts})
            }
            ItemKind::Call(_) => {
                self.event(
                    "response.function_call_arguments.done",
                    with(json!({"name": open.name, "arguments": open.text})),
                );
                json!({"type": "function_call", "id": open.id, "status": status,
                       "call_id": open.call_id, "name": open.name, "arguments": open.text})
            }
        };
        self.event(
            "response.output_item.done",
            json!({"output_index": open.output_index, "item": item}),
        );
    }
}

/// Reads the upstream's SSE `body` in a task of its own and answers the channel the
/// client's body reads its events from.
pub(crate) fn translate<B>(body: B, finisher: Finisher) -> mpsc::Receiver<Bytes>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Send,
{
    let (sender, receiver) = mpsc::channel(CHANNEL_EVENTS);
    tokio::spawn(run(body, finisher, sender));
    receiver
}

/// Reads one event's data into the reply and its Responses events, where it stands in
/// the frame; data that is not UTF-8 cannot be a JSON chunk and is skipped.
fn read_event(assembler: &mut ReplyAssembler, events: &mut EventTranslator, event: &[u8]) {
    if let Ok(event) = std::str::from_utf8(event) {
        assembler.on_event(event);
        events.on_chunk(event);
    }
}

/// Sends every event; false once the client is gone.
async fn send_all(sender: &mpsc::Sender<Bytes>, events: Vec<Bytes>) -> bool {
    for event in events {
        if sender.send(event).await.is_err() {
            return false;
        }
    }
    true
}

async fn run<B>(body: B, finisher: Finisher, sender: mpsc::Sender<Bytes>)
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Send,
{
    let mut events = EventTranslator::new(finisher.sequence());
    let created = finisher.in_progress();
    events.event("response.created", json!({"response": created}));
    events.event("response.in_progress", json!({"response": created}));
    let mut connected = send_all(&sender, events.take()).await;

    let mut parser = SseParser::default();
    let mut assembler = ReplyAssembler::new();
    let mut captured = 0usize;
    let mut complete = false;
    {
        let mut body = pin!(body);
        let mut gone = pin!(sender.closed());
        while connected {
            // The next frame, unless the client goes away first.
            let next = poll_fn(|cx| {
                if gone.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                body.as_mut().poll_frame(cx).map(Some)
            })
            .await;
            let Some(frame) = next else {
                connected = false;
                break;
            };
            let data = match frame {
                None => {
                    // An event the body ended without a blank line after is read first:
                    // it may be the one that says the reply finished.
                    parser.finish(|event| read_event(&mut assembler, &mut events, event));
                    complete = assembler.finished();
                    None
                }
                Some(Err(_)) => None,
                Some(Ok(frame)) => frame.into_data().ok(),
            };
            let Some(data) = data else {
                break;
            };
            captured = captured.saturating_add(data.len());
            if captured > finisher.capture_limit() {
                tracing::warn!("the streamed reply exceeds the capture limit; it is cut there");
                break;
            }
            let fed = parser.feed(&data, |event| {
                read_event(&mut assembler, &mut events, event)
            });
            connected = send_all(&sender, events.take()).await;
            if fed.done {
                complete = true;
                break;
            }
        }
        // The upstream body is dropped here, before storing: that ends the upstream call.
    }
    let reply = assembler.take_message(complete);
    conclude(events, reply, finisher, &sender, connected).await;
}

/// Closes the open item, stores the response, and sends its last event (`error` first
/// when the upstream failed).
async fn conclude(
    mut events: EventTranslator,
    reply: NewMessage,
    finisher: Finisher,
    sender: &mpsc::Sender<Bytes>,
    connected: bool,
) {
    let status = Status::of(&reply.metadata());
    events.close(if status == Status::Completed {
        "completed"
    } else {
        "incomplete"
    });
    if let Status::Failed(error) = &status {
        events.event(
            "error",
            json!({"code": error["code"], "message": error["message"], "param": null}),
        );
    }
    let object = finisher.finish(reply).await;
    let kind = match object["status"].as_str() {
        Some("completed") => "response.completed",
        Some("failed") => "response.failed",
        _ => "response.incomplete",
    };
    events.event(kind, json!({"response": object}));
    if connected {
        send_all(sender, events.take()).await;
    }
}

/// The events of a reply that came whole (an upstream that answered a streamed request
/// with one JSON completion): the same sequence, its text as one delta.
pub(crate) fn replay(reply: NewMessage, finisher: Finisher) -> mpsc::Receiver<Bytes> {
    let (sender, receiver) = mpsc::channel(CHANNEL_EVENTS);
    tokio::spawn(async move {
        let mut events = EventTranslator::new(finisher.sequence());
        let created = finisher.in_progress();
        events.event("response.created", json!({"response": created}));
        events.event("response.in_progress", json!({"response": created}));
        let message = &reply.to_value();
        let calls: Vec<Value> = message["tool_calls"]
            .as_array()
            .map(|calls| {
                let indexed = calls.iter().enumerate();
                indexed.map(|(index, call)| json!({"index": index, "id": call["id"], "function": call["function"]})).collect()
            })
            .unwrap_or_default();
        let delta = json!({
            "reasoning_content": reply.reasoning,
            "content": message["content"],
            "refusal": message["refusal"],
            "tool_calls": calls,
        });
        events.on_chunk(&json!({"choices": [{"delta": delta}]}).to_string());
        conclude(events, reply, finisher, &sender, true).await;
    });
    receiver
}
