//! [`ChannelBody`]: a body the layer writes as it goes, from a task that sends its
//! frames on a channel (the Responses events translated from a chat stream). Dropping
//! the body closes the channel, which tells the task the client is gone.

use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;

pub(crate) struct ChannelBody {
    receiver: mpsc::Receiver<Bytes>,
    ended: bool,
}

impl ChannelBody {
    pub(crate) fn new(receiver: mpsc::Receiver<Bytes>) -> Self {
        Self {
            receiver,
            ended: false,
        }
    }

    /// The next frame; the body ends when the sender is dropped. It never fails: what
    /// goes wrong upstream is told inside the stream.
    pub(crate) fn poll_frame<E>(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, E>>> {
        match self.receiver.poll_recv(cx) {
            Poll::Ready(Some(bytes)) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.ended
    }
}
