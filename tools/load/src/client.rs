//! The clients: K concurrent streaming requests over keep-alive connections, each timed
//! to its first byte and to `data: [DONE]`, each with the proxy's key.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::Barrier;

use crate::cpu::Sample;
use crate::proxy::Proxy;

/// The end of an OpenAI-compatible stream.
const DONE: &[u8] = b"data: [DONE]\n\n";
/// Continued conversations are cut back to their seeded length after this many turns,
/// so that they hold between S and S + 2 × this many messages during a run (at a
/// model's pace, only before the measured time: see [`Requests::Continue`]).
pub const TURNS_BEFORE_TRUNCATION: usize = 5;

/// Whether a client cuts its conversation back before its `turn`-th turn (from 0),
/// which begins in the measured time or not (see [`Requests::Continue`]).
fn cuts_before(turn: usize, measured: bool, cut_while_measured: bool) -> bool {
    turn.is_multiple_of(TURNS_BEFORE_TRUNCATION) && (cut_while_measured || !measured)
}

/// What each request of a run sends.
#[derive(Clone)]
pub enum Requests {
    /// The same body every time, no conversation header.
    Plain(Bytes),
    /// One seeded conversation per client task, with this many stored messages.
    Continue {
        ids: Arc<Vec<String>>,
        seeded: usize,
        body: Bytes,
        /// Whether conversations are cut back during the measured time too. A cut is a
        /// management call (`DELETE …/messages`), whose CPU the proxy's figure would
        /// count against the chat requests: on SQLite, deleting a cut's ten messages
        /// from the full-text index costs about what five turns' histories do. The
        /// fast mode needs the cuts (a client makes hundreds of turns); at a model's
        /// pace a client makes one turn every few seconds, so its conversation is cut
        /// back only while warming up and grows by two messages a turn after that.
        cut_while_measured: bool,
    },
}

/// The figures of one run.
pub struct RunFigures {
    /// Requests that ended within the measured time, whenever they began: those the CPU
    /// figures are divided by.
    pub completed: usize,
    pub requests_per_second: f64,
    /// Microseconds, sorted.
    pub first_byte: Vec<u32>,
    /// Microseconds, sorted.
    pub done: Vec<u32>,
    /// Microseconds between the frame before `data: [DONE]` and `[DONE]` itself (0 when
    /// both came in one frame), sorted: how long the end was held back.
    pub held: Vec<u32>,
    /// CPU microseconds per request during the measured time: proxy, database server,
    /// load generator.
    pub cpu: [f64; 3],
    /// The proxy's user µs, system µs, context switches and µs on SQLite's worker
    /// threads per request.
    pub proxy_split: [f64; 4],
    pub failures: usize,
}

/// What one streamed request measured, in microseconds from its start.
pub struct Timings {
    pub first_byte: u32,
    pub done: u32,
    pub held: u32,
}

/// A keep-alive HTTP/1.1 client to the proxy, sending its key.
#[derive(Clone)]
pub struct Clients {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    /// `Bearer <key>`.
    authorization: String,
    metrics: String,
}

/// A stateless chat request with a system prompt of about 4 KiB, as applications send
/// them: forty lines of instructions, each ending in a newline that JSON escapes.
pub fn long_prompt_body() -> Bytes {
    let line =
        "You are the assistant of a weather service: answer briefly, name the forecast you used.\n";
    let messages = [
        json!({"role": "system", "content": line.repeat(40)}),
        json!({"role": "user", "content": "Tell me something."}),
    ];
    Bytes::from(json!({"model": "m", "stream": true, "messages": messages}).to_string())
}

/// The messages a continued conversation is seeded with: questions and answers in turn.
fn seeded_messages(count: usize) -> Vec<Value> {
    (0..count)
        .map(|n| {
            if n % 2 == 0 {
                json!({"role": "user", "content": format!("Question {n}: how does the history reach the model?")})
            } else {
                json!({"role": "assistant", "content": format!("Answer {n}: the layer splices the stored messages in front of the new ones. ").repeat(3)})
            }
        })
        .collect()
}

/// What a client without the layer sends for a continued conversation: the `seeded`
/// messages, `turns` turns of the bench's own (its question and the model's reply of
/// `reply_deltas` deltas, as the layer stores them), and the new question: the messages
/// the layer sends upstream for such a conversation after `turns` turns, so that a
/// passthrough proxy fed them costs what the proxy costs without the layer.
pub fn sent_whole_body(seeded: usize, turns: usize, reply_deltas: usize) -> Bytes {
    let question = json!({"role": "user", "content": "Tell me something."});
    let reply = json!({"role": "assistant", "content": "word ".repeat(reply_deltas)});
    let mut messages = seeded_messages(seeded);
    for _ in 0..turns {
        messages.push(question.clone());
        messages.push(reply.clone());
    }
    messages.push(question);
    Bytes::from(json!({"model": "m", "stream": true, "messages": messages}).to_string())
}

/// The chat request body: one user message, after a system message when `system`.
pub fn chat_body(system: bool) -> Bytes {
    let mut messages = vec![json!({"role": "user", "content": "Tell me something."})];
    if system {
        messages.insert(0, json!({"role": "system", "content": "Be brief."}));
    }
    Bytes::from(json!({"model": "m", "stream": true, "messages": messages}).to_string())
}

/// A streaming Responses API request of the same question as [`chat_body`]'s, continuing
/// `conversation` when given.
pub fn responses_body(conversation: Option<&str>) -> Bytes {
    let mut body = json!({"model": "m", "stream": true, "input": "Tell me something."});
    if let Some(conversation) = conversation {
        body["conversation"] = json!(conversation);
    }
    Bytes::from(body.to_string())
}

impl Clients {
    pub fn new(proxy: &Proxy) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(usize::MAX)
            .build(connector);
        Self {
            client,
            base: format!("http://{}", proxy.addr),
            authorization: format!("Bearer {}", proxy.key),
            metrics: format!("http://{}/metrics", proxy.metrics),
        }
    }

    /// Reads `/metrics` once, to know they are on: `Err` unless it answers 200 with the
    /// Prometheus text format.
    pub async fn metrics(&self) -> Result<(), String> {
        let request = Request::get(&self.metrics)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|error| format!("{} failed: {error}", self.metrics))?;
        let status = response.status();
        let text_format = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"text/plain"));
        let _ = response.into_body().collect().await;
        if status == StatusCode::OK && text_format {
            Ok(())
        } else {
            Err(format!("{} answered {status}", self.metrics))
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        header: Option<&str>,
        body: Bytes,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", &self.authorization)
            .header("content-type", "application/json");
        if let Some(id) = header {
            request = request.header("x-conversation-id", id);
        }
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
        self.client
            .request(request)
            .await
            .map_err(|error| format!("request failed: {error}"))
    }

    /// Creates `count` conversations of `messages` stored messages through the
    /// management API, and returns their ids.
    pub async fn seed(&self, count: usize, messages: usize) -> Result<Vec<String>, String> {
        let body = Bytes::from(json!({"messages": seeded_messages(messages)}).to_string());
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            let response = self
                .send(Method::POST, "/v1/conversations", None, body.clone())
                .await?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if status != StatusCode::CREATED {
                return Err(format!(
                    "seeding answered {status}: {}",
                    String::from_utf8_lossy(&bytes)
                ));
            }
            let created: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            let id = created["id"]
                .as_str()
                .ok_or("no id in the created conversation")?;
            ids.push(id.to_owned());
        }
        Ok(ids)
    }

    /// Drops the messages a conversation gained beyond its seeded `length`.
    async fn truncate(&self, id: &str, length: usize) -> Result<(), String> {
        let path = format!("/v1/conversations/{id}/messages?from_sequence={length}");
        let response = self.send(Method::DELETE, &path, None, Bytes::new()).await?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        if status == StatusCode::OK {
            Ok(())
        } else {
            Err(format!("truncation answered {status}"))
        }
    }

    /// One streamed chat request: its [`Timings`], or why it failed (a non-200, no
    /// `[DONE]`, `storage_failed`).
    pub async fn chat(&self, header: Option<&str>, body: Bytes) -> Result<Timings, String> {
        let start = Instant::now();
        let response = self
            .send(Method::POST, "/v1/chat/completions", header, body)
            .await?;
        if response.status() != StatusCode::OK {
            return Err(format!("chat answered {}", response.status()));
        }
        let mut body = response.into_body();
        let mut first_byte = None;
        let mut done = None;
        let mut held = Duration::ZERO;
        let mut previous_frame = start;
        // The last bytes seen, enough to find `[DONE]` or `storage_failed` across frames.
        let mut tail: Vec<u8> = Vec::with_capacity(256);
        let mut storage_failed = false;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| format!("stream broke: {error}"))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            first_byte.get_or_insert_with(|| start.elapsed());
            if done.is_some() {
                continue;
            }
            let arrived = Instant::now();
            tail.extend_from_slice(&data[data.len().saturating_sub(192)..]);
            if tail.len() > 192 {
                tail.drain(..tail.len() - 192);
            }
            if tail.ends_with(DONE) {
                done = Some(start.elapsed());
                // `[DONE]` in a frame of its own was held back while the turn was stored.
                if data.starts_with(DONE) {
                    held = previous_frame.elapsed();
                }
                // The layer's failure chunk comes right before its `[DONE]`.
                storage_failed = contains(&tail, b"storage_failed");
            }
            previous_frame = arrived;
        }
        if storage_failed {
            return Err("the turn was not stored (storage_failed)".to_owned());
        }
        match (first_byte, done) {
            (Some(first), Some(done)) => Ok(Timings {
                first_byte: micros(first),
                done: micros(done),
                held: micros(held),
            }),
            _ => Err("the stream ended without [DONE]".to_owned()),
        }
    }

    /// Runs `k` clients for `warmup` and then `measure`: each sends one request after
    /// another; requests that start after the warm-up and end before the deadline count.
    /// `cpu` is sampled when the measured time begins and ends. The clients start
    /// `stagger / k` apart: with replies that take seconds, clients started at once
    /// would end their requests in waves, and how many waves fall in the measured time
    /// would decide the count.
    pub async fn run(
        &self,
        k: usize,
        requests: &Requests,
        warmup: Duration,
        measure: Duration,
        stagger: Duration,
        cpu: impl Fn() -> Sample,
    ) -> RunFigures {
        let start = Instant::now();
        let counted_from = start + warmup;
        let deadline = counted_from + measure;
        let failures = Arc::new(AtomicUsize::new(0));
        // Requests that ended within the measured time, whenever they began: what the
        // CPU sampled over that time was spent on.
        let ended_in_window = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::with_capacity(k);
        for task in 0..k {
            let clients = self.clone();
            let requests = requests.clone();
            let failures = failures.clone();
            let ended_in_window = ended_in_window.clone();
            let offset = stagger.mul_f64(task as f64 / k as f64);
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until((start + offset).into()).await;
                let mut samples = Vec::new();
                let mut turns = 0;
                while Instant::now() < deadline {
                    let began = Instant::now();
                    let outcome = match &requests {
                        Requests::Plain(body) => clients.chat(None, body.clone()).await,
                        Requests::Continue {
                            ids,
                            seeded,
                            body,
                            cut_while_measured,
                        } => {
                            let id = &ids[task];
                            let measured = began >= counted_from;
                            if cuts_before(turns, measured, *cut_while_measured)
                                && let Err(error) = clients.truncate(id, *seeded).await
                            {
                                report_failure(&failures, &error);
                            }
                            turns += 1;
                            clients.chat(Some(id), body.clone()).await
                        }
                    };
                    let ended = Instant::now();
                    if ended >= counted_from && ended <= deadline {
                        ended_in_window.fetch_add(1, Ordering::Relaxed);
                    }
                    match outcome {
                        Ok(figures) if began >= counted_from && ended <= deadline => {
                            samples.push(figures)
                        }
                        Ok(_) => {}
                        Err(error) => {
                            report_failure(&failures, &error);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                samples
            }));
        }
        tokio::time::sleep_until(counted_from.into()).await;
        let before = cpu();
        tokio::time::sleep_until(deadline.into()).await;
        let after = cpu();
        let mut first_byte = Vec::new();
        let mut done = Vec::new();
        let mut held = Vec::new();
        for task in tasks {
            for timings in task.await.unwrap_or_default() {
                first_byte.push(timings.first_byte);
                done.push(timings.done);
                held.push(timings.held);
            }
        }
        first_byte.sort_unstable();
        done.sort_unstable();
        held.sort_unstable();
        let ended = ended_in_window.load(Ordering::Relaxed);
        RunFigures {
            completed: ended,
            requests_per_second: done.len() as f64 / measure.as_secs_f64(),
            first_byte,
            done,
            held,
            cpu: before.per_request(&after, ended as f64),
            proxy_split: before.proxy_split(&after, ended as f64),
            failures: failures.load(Ordering::Relaxed),
        }
    }

    /// Opens `k` streams at once with the upstream holding every reply after its
    /// deltas, and calls `during` once all of them received those deltas (`reply_bytes`
    /// each). Returns the value `during` gave.
    pub async fn hold_streams<T>(
        &self,
        k: usize,
        reply_bytes: usize,
        during: impl FnOnce() -> T,
        release: impl FnOnce(),
    ) -> Result<T, String> {
        let arrived = Arc::new(Barrier::new(k + 1));
        let mut tasks = Vec::with_capacity(k);
        for _ in 0..k {
            let clients = self.clone();
            let arrived = arrived.clone();
            tasks.push(tokio::spawn(async move {
                let response = clients
                    .send(Method::POST, "/v1/chat/completions", None, chat_body(false))
                    .await?;
                let mut body = response.into_body();
                let mut received = 0;
                let mut signalled = false;
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|error| format!("stream broke: {error}"))?;
                    received += frame.data_ref().map_or(0, Bytes::len);
                    if !signalled && received >= reply_bytes {
                        signalled = true;
                        arrived.wait().await;
                    }
                }
                if !signalled {
                    arrived.wait().await;
                    return Err::<(), String>("a held stream ended early".to_owned());
                }
                Ok(())
            }));
        }
        let all = tokio::time::timeout(Duration::from_secs(60), arrived.wait()).await;
        // Let the proxy settle: every held frame delivered, every buffer in place.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let value = during();
        release();
        for task in tasks {
            task.await.map_err(|e| e.to_string())??;
        }
        all.map_err(|_| "held streams did not all arrive".to_owned())?;
        Ok(value)
    }
}

fn report_failure(failures: &AtomicUsize, error: &str) {
    // The first few say what went wrong; the count says how often.
    if failures.fetch_add(1, Ordering::Relaxed) < 3 {
        eprintln!("request failed: {error}");
    }
}

fn micros(duration: Duration) -> u32 {
    u32::try_from(duration.as_micros()).unwrap_or(u32::MAX)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The `q`-quantile of sorted samples, in milliseconds.
pub fn quantile_ms(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)]) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_sent_whole_holds_the_seeded_messages_the_turns_and_the_question() {
        let body: Value = serde_json::from_slice(&sent_whole_body(20, 2, 66)).unwrap();
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 20 + 2 * 2 + 1);
        assert_eq!(&messages[..20], &seeded_messages(20)[..]);
        assert_eq!(messages[21]["content"], "word ".repeat(66));
        assert_eq!(
            messages[24],
            json!({"role": "user", "content": "Tell me something."})
        );
        assert_eq!(body["stream"], true);
    }

    #[test]
    fn at_a_models_pace_no_conversation_is_cut_in_the_measured_time() {
        let cut =
            |turn, measured, cut_while_measured| cuts_before(turn, measured, cut_while_measured);
        // The fast mode cuts every few turns, measured or not.
        assert!(cut(0, false, true) && cut(5, true, true) && cut(10, true, true));
        assert!(!cut(3, true, true));
        // At a model's pace, only while warming up.
        assert!(cut(0, false, false) && cut(5, false, false));
        assert!(!cut(5, true, false) && !cut(0, true, false));
    }
}
