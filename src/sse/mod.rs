//! Server-Sent Events, as plain synchronous code fed byte slices: the incremental
//! [`SseParser`] and the [`StreamEnd`] that decides, from what the parser finds, which
//! bytes of a stream go to the client now and how the stream closes.

mod end;
mod parser;

#[cfg(feature = "fuzzing")]
pub(crate) use end::run as run_stream;
pub(crate) use end::{Fed, StreamEnd};
pub(crate) use parser::SseParser;
