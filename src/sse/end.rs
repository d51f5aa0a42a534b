//! [`StreamEnd`]: the one place that decides what a client receives of a streamed reply
//! and how that stream closes.
//!
//! The layer holds `data: [DONE]` back until the turn is stored (contract section 5), so
//! that a client who sees `[DONE]` without `storage_failed` knows the next request sees
//! the turn. This unit owns that rule whole: it forwards every byte before `[DONE]` as
//! slices of the inner body's own frames (never copies), holds the bytes that are, or
//! may yet become, the `[DONE]` line, releases them when they turn out to be something
//! else, and frames the closing events. The capturing body, the property tests and the
//! fuzz target all drive this type, so they check the code that runs.

use std::collections::VecDeque;

use bytes::Bytes;

use super::SseParser;

/// The event that ends an OpenAI-compatible stream.
const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

/// What [`StreamEnd::feed`] made of a frame.
#[must_use]
pub(crate) struct Fed {
    /// Whether `[DONE]` has come.
    pub(crate) done: bool,
    /// The frame itself when it goes on whole and nothing waits in the queue before it,
    /// as nearly every frame does: the caller hands it on at once. At a model's pace
    /// each frame finds its stream's state out of the cache, and the queue's buffer is
    /// one more line to fetch (see `docs/performance.md`).
    pub(crate) whole: Option<Bytes>,
}

impl Fed {
    /// Everything for the client, if anything, is in the queue.
    fn queued(done: bool) -> Self {
        Self { done, whole: None }
    }
}

/// Splits a streamed reply into what goes to the client now and what waits for the
/// turn to be stored, and parses a copy of it into events on the way.
#[derive(Debug, Default)]
pub(crate) struct StreamEnd {
    parser: SseParser,
    /// Bytes that may still turn out to be the `[DONE]` line, oldest first.
    held: Vec<Bytes>,
}

impl StreamEnd {
    /// Reads the fields the next frame reads first, so that they are on their way
    /// before it arrives, and returns them combined (the caller keeps the loads with
    /// `black_box`); changes nothing.
    #[inline]
    pub(crate) fn warm(&self) -> usize {
        self.parser.warm() ^ self.held.len()
    }

    /// Stops collecting event data (the capture limit was reached); `[DONE]` is still
    /// recognised, so it is still held back.
    pub(crate) fn stop_capturing(&mut self) {
        self.parser.stop_capturing();
    }

    /// Takes one data frame of the inner body: calls `on_event` with the data of each
    /// event it completes (as bytes, UTF-8 or not), and says what the client gets now:
    /// the frame itself, handed back (see [`Fed::whole`]), or what it queues in `out`
    /// (slices of the frame, bytes held before it).
    pub(crate) fn feed(
        &mut self,
        chunk: Bytes,
        on_event: impl FnMut(&[u8]),
        out: &mut VecDeque<Bytes>,
    ) -> Fed {
        let fed = self.parser.feed(&chunk, on_event);
        if fed.done && fed.forward == 0 {
            // The `[DONE]` line began in the held bytes: they go nowhere.
            self.held.clear();
            return Fed::queued(true);
        }
        // Nearly every frame ends on an event's blank line, so nothing is held and the
        // frame goes on as it came.
        if fed.forward > 0 && !self.held.is_empty() {
            out.extend(self.held.drain(..));
        }
        if fed.forward == chunk.len() {
            if fed.done || !out.is_empty() {
                out.push_back(chunk);
                return Fed::queued(fed.done);
            }
            return Fed {
                done: false,
                whole: Some(chunk),
            };
        }
        if fed.forward > 0 {
            out.push_back(chunk.slice(..fed.forward));
        }
        if fed.done {
            self.held.clear();
        } else {
            self.held.push(chunk.slice(fed.forward..));
        }
        Fed::queued(fed.done)
    }

    /// The inner body ended. Without `[DONE]`, the bytes held for a `[DONE]` that never
    /// came go to the client, and a last event that lacked its blank line is completed.
    pub(crate) fn finish(&mut self, on_event: impl FnMut(&[u8]), out: &mut VecDeque<Bytes>) {
        if self.parser.is_done() {
            return;
        }
        out.extend(self.held.drain(..));
        self.parser.finish(on_event);
    }

    /// Whether the stream's `[DONE]` line has come (and is being held back).
    pub(crate) fn is_done(&self) -> bool {
        self.parser.is_done()
    }

    /// Queues what closes the stream once storing is over: when the turn is not
    /// durable, one event carrying `failed_chunk` (the chunk that says
    /// `storage_failed`), then `[DONE]` if the stream had one.
    pub(crate) fn close(
        &self,
        durable: bool,
        failed_chunk: impl FnOnce() -> String,
        out: &mut VecDeque<Bytes>,
    ) {
        if !durable {
            out.push_back(Bytes::from(format!("data: {}\n\n", failed_chunk())));
        }
        if self.is_done() {
            out.push_back(Bytes::from_static(DONE_EVENT));
        }
    }
}

/// Runs a whole stream, cut into `pieces`, through a [`StreamEnd`]: the events' data, the bytes
/// a client receives before the stream closes, and whether `[DONE]` came. With
/// `stop_capturing_at`, the capture limit is reached before that piece.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn run(
    pieces: &[&[u8]],
    stop_capturing_at: Option<usize>,
) -> (Vec<Vec<u8>>, Vec<u8>, bool) {
    let mut end = StreamEnd::default();
    let mut events = Vec::new();
    let mut out = VecDeque::new();
    for (at, piece) in pieces.iter().enumerate() {
        if stop_capturing_at == Some(at) {
            end.stop_capturing();
        }
        let fed = end.feed(
            Bytes::copy_from_slice(piece),
            |data| events.push(data.to_owned()),
            &mut out,
        );
        out.extend(fed.whole);
    }
    end.finish(|data| events.push(data.to_owned()), &mut out);
    let sent = out.iter().flat_map(|bytes| bytes.iter().copied()).collect();
    (events, sent, end.is_done())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b": keep-alive\r\n\r\ndata: {\"a\":1}\n\ndata: one\ndata: two\r\nid: 7\r\n\r\nevent: x\rdata:tight\r\rdata: [DONE]\n\n";

    #[test]
    fn events_are_the_same_however_the_stream_is_cut() {
        let expected: [&[u8]; 3] = [b"{\"a\":1}", b"one\ntwo", b"tight"];
        let done_at = STREAM.len() - b"data: [DONE]\n\n".len();
        for cut in 0..=STREAM.len() {
            let (events, sent, done) = run(&[&STREAM[..cut], &STREAM[cut..]], None);
            assert_eq!(events, expected, "cut at {cut}");
            assert!(done, "cut at {cut}");
            assert_eq!(sent, &STREAM[..done_at], "cut at {cut}");
        }
    }

    #[test]
    fn events_are_the_same_fed_one_byte_at_a_time() {
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        let (events, _, done) = run(&bytes, None);
        assert_eq!(events, [b"{\"a\":1}".as_slice(), b"one\ntwo", b"tight"]);
        assert!(done);
    }

    #[test]
    fn a_stream_without_done_still_yields_its_last_event() {
        let (events, sent, done) = run(&[b"data: a\n\ndata: b"], None);
        assert_eq!(events, [b"a", b"b"]);
        assert_eq!(sent, b"data: a\n\ndata: b");
        assert!(!done);
    }

    #[test]
    fn input_after_done_is_dropped() {
        let (events, sent, _) = run(
            &[b"data: a\n\ndata: [DONE]\n\ndata: b\n\n", b"data: c\n\n"],
            None,
        );
        assert_eq!(events, [b"a"]);
        assert_eq!(sent, b"data: a\n\n");
    }

    #[test]
    fn an_empty_chunk_between_cr_and_lf_leaves_one_line_end() {
        let (events, sent, _) = run(&[b"data: a\r", b"", b"\ndata: b\n\n"], None);
        assert_eq!(events, [b"a\nb"]);
        assert_eq!(sent, b"data: a\r\ndata: b\n\n");
    }

    #[test]
    fn events_are_handed_on_as_bytes_utf8_or_not() {
        // The reply assembler skips the first (`events_that_are_not_utf8_are_skipped`).
        let (events, _, _) = run(&[b"data: \xff\xfe\n\ndata: ok\n\n"], None);
        assert_eq!(events, [b"\xff\xfe".as_slice(), b"ok"]);
    }

    #[test]
    fn a_whole_frame_goes_on_as_the_same_allocation() {
        let mut end = StreamEnd::default();
        let mut out = VecDeque::new();
        let frame = Bytes::from_static(b"data: {\"x\":1}\n\n");
        let fed = end.feed(frame.clone(), |_| {}, &mut out);
        // Handed back, not queued.
        assert!(out.is_empty() && !fed.done);
        let whole = fed.whole.expect("the frame goes on whole");
        assert_eq!(whole.as_ptr(), frame.as_ptr());
        assert_eq!(whole.len(), frame.len());
    }

    #[test]
    fn a_durable_turn_closes_with_done_alone() {
        let mut end = StreamEnd::default();
        let mut out = VecDeque::new();
        let fed = end.feed(
            Bytes::from_static(b"data: a\n\ndata: [DONE]\n\n"),
            |_| {},
            &mut out,
        );
        assert!(fed.done && fed.whole.is_none());
        out.clear();
        end.close(true, || unreachable!("no storage_failed chunk"), &mut out);
        assert_eq!(out, [Bytes::from_static(DONE_EVENT)]);
    }

    #[test]
    fn a_failed_turn_closes_with_storage_failed_then_done() {
        let mut end = StreamEnd::default();
        let mut out = VecDeque::new();
        let fed = end.feed(Bytes::from_static(b"data: [DONE]\n\n"), |_| {}, &mut out);
        assert!(fed.done && fed.whole.is_none());
        end.close(false, || "{\"x\":1}".to_owned(), &mut out);
        assert_eq!(
            out,
            [
                Bytes::from_static(b"data: {\"x\":1}\n\n"),
                Bytes::from_static(DONE_EVENT)
            ]
        );
    }

    #[test]
    fn a_stream_that_had_no_done_gets_none_at_its_close() {
        let mut end = StreamEnd::default();
        let mut out = VecDeque::new();
        let fed = end.feed(Bytes::from_static(b"data: a\n\n"), |_| {}, &mut out);
        assert!(!fed.done && fed.whole.is_some());
        end.finish(|_| {}, &mut out);
        out.clear();
        end.close(false, || "{}".to_owned(), &mut out);
        assert_eq!(out, [Bytes::from_static(b"data: {}\n\n")]);
    }

    mod properties {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::run;

        /// One line of a stream: data (possibly empty, `[DONE]`, or not UTF-8), a
        /// comment, another field, or the blank line that ends an event.
        fn line() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                4 => "[ -~é世🌍]{0,12}".prop_map(|text| format!("data: {text}").into_bytes()),
                1 => "[ -~]{0,6}".prop_map(|text| format!("data:{text}").into_bytes()),
                1 => Just(b"data: [DONE]".to_vec()),
                1 => Just(b"data".to_vec()),
                1 => vec(any::<u8>(), 0..6).prop_map(|bytes| [b"data: ".to_vec(), bytes].concat()),
                1 => "[ -~]{0,8}".prop_map(|text| format!(":{text}").into_bytes()),
                1 => Just(b"event: x".to_vec()),
                1 => Just(b"id: 7".to_vec()),
                3 => Just(Vec::new()),
            ]
        }

        fn line_end() -> impl Strategy<Value = &'static [u8]> {
            prop_oneof![Just(&b"\n"[..]), Just(&b"\r\n"[..]), Just(&b"\r"[..])]
        }

        /// A stream of such lines, each with any of the three line ends, the last
        /// possibly without one.
        fn stream() -> impl Strategy<Value = Vec<u8>> {
            (vec((line(), line_end()), 0..24), any::<bool>()).prop_map(|(lines, cut_end)| {
                let mut bytes = Vec::new();
                for (line, end) in &lines {
                    bytes.extend_from_slice(line);
                    bytes.extend_from_slice(end);
                }
                if cut_end && let Some((_, end)) = lines.last() {
                    bytes.truncate(bytes.len() - end.len());
                }
                bytes
            })
        }

        /// `bytes` cut at these points (taken modulo its length, in order).
        fn cut(bytes: &[u8], points: &[usize]) -> Vec<Vec<u8>> {
            let mut points: Vec<usize> = points.iter().map(|p| p % (bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for point in points.into_iter().chain([bytes.len()]) {
                pieces.push(bytes[start..point].to_vec());
                start = point;
            }
            pieces
        }

        fn run_cut(pieces: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<u8>, bool) {
            let pieces: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
            run(&pieces, None)
        }

        proptest! {
            #[test]
            fn every_way_of_cutting_a_stream_gives_the_same_events_and_bytes(
                stream in stream(),
                points in vec(any::<usize>(), 0..12),
            ) {
                let whole = run(&[&stream], None);
                prop_assert_eq!(run_cut(&cut(&stream, &points)), whole);
            }

            #[test]
            fn a_stream_fed_byte_by_byte_gives_the_same_events_and_bytes(stream in stream()) {
                let whole = run(&[&stream], None);
                let bytes: Vec<Vec<u8>> = stream.iter().map(|b| vec![*b]).collect();
                prop_assert_eq!(run_cut(&bytes), whole);
            }

            #[test]
            fn any_bytes_cut_anywhere_give_the_same_events_and_bytes(
                stream in vec(any::<u8>(), 0..256),
                points in vec(any::<usize>(), 0..12),
            ) {
                let whole = run(&[&stream], None);
                prop_assert_eq!(run_cut(&cut(&stream, &points)), whole);
            }

            #[test]
            fn the_client_gets_every_byte_before_done_and_nothing_after(stream in stream()) {
                let (_, sent, done) = run(&[&stream], None);
                match (0..stream.len()).find(|&at| {
                    let rest = &stream[at..];
                    let line_start = at == 0 || matches!(stream[at - 1], b'\n' | b'\r');
                    line_start
                        && (rest.starts_with(b"data: [DONE]") || rest.starts_with(b"data:[DONE]"))
                }) {
                    Some(_) if done => prop_assert!(stream.starts_with(&sent)),
                    _ => prop_assert_eq!(sent, stream),
                }
            }
        }
    }
}
