//! The model behind the proxy: an OpenAI-compatible chat-completions server in the bench
//! process that streams N typical chunks from memory, as fast as the connection takes
//! them (each chunk its own HTTP chunk as real providers send them, or the whole reply
//! at once as a static file server would), or spaced out over seconds, a chunk a frame,
//! at a model's pace.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

/// A typical content delta: one word, with the fields every chunk repeats.
pub const DELTA: &[u8] = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"}}]}\n\n";
/// The last chunk and the end of the stream.
const END: &[u8] = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";

/// The pause between deltas while replies are held: a slow stream, as a model emits
/// tokens, whose frames reach the proxy one by one.
const PACE: Duration = Duration::from_millis(1);

/// How a reply's chunks leave the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Framing {
    /// Each chunk is a frame (an HTTP chunk) of its own, as a model emits tokens.
    PerChunk,
    /// The whole reply is one buffer, as a file server sends a recorded reply: the proxy
    /// reads it in as few frames as its reads allow.
    Whole,
}

/// The running model; it stops with the runtime.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    held: watch::Sender<bool>,
    connections: Arc<AtomicUsize>,
}

impl Upstream {
    /// Serves replies of `chunks` deltas on a free loopback port, a frame each.
    pub async fn start(chunks: usize) -> std::io::Result<Self> {
        Self::serve(chunks, Framing::PerChunk, None).await
    }

    /// Serves replies of `chunks` deltas on a free loopback port, a frame each, spread
    /// evenly over `over`: the first delta after `over / chunks`, the end right after
    /// the last delta. Each reply keeps to its own schedule, so a late frame is followed
    /// by the next one sooner and the reply still takes `over`.
    pub async fn paced(chunks: usize, over: Duration) -> std::io::Result<Self> {
        let pace = over / u32::try_from(chunks.max(1)).unwrap_or(u32::MAX);
        Self::serve(chunks, Framing::PerChunk, Some(pace)).await
    }

    /// Serves replies of `chunks` deltas on a free loopback port, framed as `framing` says.
    pub async fn framed(chunks: usize, framing: Framing) -> std::io::Result<Self> {
        Self::serve(chunks, framing, None).await
    }

    /// `pace`: the time between deltas, when they are spaced out.
    async fn serve(
        chunks: usize,
        framing: Framing,
        pace: Option<Duration>,
    ) -> std::io::Result<Self> {
        let whole = (framing == Framing::Whole).then(|| {
            let mut reply = DELTA.repeat(chunks);
            reply.extend_from_slice(END);
            Bytes::from(reply)
        });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (held, gate) = watch::channel(false);
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::Relaxed);
                let _ = stream.set_nodelay(true);
                let gate = gate.clone();
                let whole = whole.clone();
                let service = service_fn(move |request| {
                    answer(request, chunks, whole.clone(), pace, gate.clone())
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        Ok(Self {
            addr,
            held,
            connections,
        })
    }

    /// How many connections it has accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// While held, every reply sends its deltas slowly ([`PACE`] apart) and stops before
    /// its end until released: streams of a known size stay open at once.
    pub fn hold(&self, held: bool) {
        self.held.send_replace(held);
    }
}

async fn answer(
    request: Request<Incoming>,
    chunks: usize,
    whole: Option<Bytes>,
    pace: Option<Duration>,
    gate: watch::Receiver<bool>,
) -> Result<Response<Reply>, Infallible> {
    // Read the (spliced) request whole, as a model does before it answers.
    let _ = request.into_body().collect().await;
    // Held replies are slow whatever the model's own pace: see `hold`.
    let pace = if *gate.borrow() { Some(PACE) } else { pace };
    let response = Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Reply {
            whole,
            remaining: chunks,
            pace,
            due: Instant::now(),
            pause: None,
            gate: Some(gate),
            waiting: None,
            ended: false,
        })
        .unwrap_or_else(|_| unreachable!("static response parts"));
    Ok(response)
}

type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The reply body: `remaining` deltas, then (once the gate is open) the end.
pub struct Reply {
    /// The whole reply in one frame, sent instead of the deltas one by one.
    whole: Option<Bytes>,
    remaining: usize,
    /// The time between deltas when they are spaced out: [`PACE`] when the reply began
    /// while held, the model's pace when it has one.
    pace: Option<Duration>,
    /// When the last delta was due (at first, when the reply began).
    due: Instant,
    pause: Option<Pin<Box<Sleep>>>,
    gate: Option<watch::Receiver<bool>>,
    waiting: Option<Wait>,
    ended: bool,
}

impl Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(whole) = self.whole.take() {
            self.ended = true;
            return Poll::Ready(Some(Ok(Frame::data(whole))));
        }
        if self.remaining > 0 {
            if let Some(pace) = self.pace {
                if self.pause.is_none() {
                    // From the schedule, not from now: the reply keeps its length
                    // however late the runtime polls it.
                    self.due += pace;
                    self.pause = Some(Box::pin(tokio::time::sleep_until(self.due)));
                }
                if let Some(pause) = self.pause.as_mut() {
                    ready!(pause.as_mut().poll(cx));
                }
                self.pause = None;
            }
            self.remaining -= 1;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(DELTA)))));
        }
        if let Some(mut gate) = self.gate.take()
            && *gate.borrow_and_update()
        {
            self.waiting = Some(Box::pin(async move {
                let _ = gate.wait_for(|held| !held).await;
            }));
        }
        if let Some(waiting) = self.waiting.as_mut() {
            ready!(waiting.as_mut().poll(cx));
            self.waiting = None;
        }
        self.ended = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(END)))))
    }
}
