//! Counting the response bodies a server has dropped, to know when every stream a
//! client abandoned has been let go of by the server too.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// How many [`CountedBody`]s have been dropped.
#[derive(Clone, Default)]
pub struct DropCount(Arc<AtomicUsize>);

impl DropCount {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// Wraps a response's body so that dropping it is counted.
    pub fn count<B>(&self, response: Response<B>) -> Response<CountedBody<B>> {
        let count = self.clone();
        response.map(|body| CountedBody {
            body,
            _dropped: Counted(count),
        })
    }
}

/// Counts one drop when it goes.
struct Counted(DropCount);

impl Drop for Counted {
    fn drop(&mut self) {
        (self.0).0.fetch_add(1, Ordering::SeqCst);
    }
}

pin_project! {
    /// A body that adds to its [`DropCount`] once it and everything in it is gone:
    /// fields drop in order, so the wrapped body is dropped before the count moves.
    pub struct CountedBody<B> {
        #[pin]
        body: B,
        _dropped: Counted,
    }
}

impl<B: Body<Data = Bytes>> Body for CountedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
