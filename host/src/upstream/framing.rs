//! Framing of streamed upstream bodies (NDJSON lines, SSE events) into the events the
//! adapter parses one at a time.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::contract::{StreamEvent, StreamFraming};

/// Longest single NDJSON line or SSE event accepted from an upstream stream.
const MAX_EVENT_BYTES: usize = 8 << 20;

/// Splits a streamed body into events. Input may be cut anywhere, including inside a UTF-8
/// character: lines are split on the `\n` byte (which never occurs inside a multi-byte
/// character) and decoded only once complete.
#[derive(Debug)]
pub struct Framer {
    framing: StreamFraming,
    buf: BytesMut,
    /// How much of `buf` is known to hold no newline.
    scanned: usize,
    /// SSE only: the event being assembled.
    event: Option<String>,
    data: Option<String>,
    ready: VecDeque<StreamEvent>,
}

/// A framing failure (an event longer than the limit).
#[derive(Debug, thiserror::Error)]
#[error("stream event longer than {MAX_EVENT_BYTES} bytes")]
pub struct FrameTooLong;

impl Framer {
    /// A framer for the given format.
    pub fn new(framing: StreamFraming) -> Framer {
        Framer {
            framing,
            buf: BytesMut::new(),
            scanned: 0,
            event: None,
            data: None,
            ready: VecDeque::new(),
        }
    }

    /// Feeds bytes; complete events become available from [`Framer::next_event`].
    pub fn feed(&mut self, bytes: &Bytes) -> Result<(), FrameTooLong> {
        self.buf.extend_from_slice(bytes);
        while let Some((end, next)) = self.line_end() {
            self.scanned = 0;
            let line = self.buf.split_to(next);
            let line = String::from_utf8_lossy(&line[..end]);
            let line = line.strip_suffix('\r').unwrap_or(&line).to_owned();
            self.line(line);
        }
        let pending = self.buf.len() + self.data.as_ref().map_or(0, String::len);
        if pending > MAX_EVENT_BYTES {
            return Err(FrameTooLong);
        }
        Ok(())
    }

    /// Where the first complete line in `buf` ends, and where the next one starts. NDJSON
    /// lines end at `\n` (a `\r` before it is dropped); SSE lines may also end at a lone
    /// `\r`, as its rules allow. A `\r` that ends the buffer waits for the next byte (it may
    /// be half of `\r\n`). Sets `scanned` past what holds no line end.
    fn line_end(&mut self) -> Option<(usize, usize)> {
        let sse = self.framing == StreamFraming::Sse;
        let from = self.scanned;
        let offset = self.buf[from..]
            .iter()
            .position(|&b| b == b'\n' || (sse && b == b'\r'));
        let Some(offset) = offset else {
            self.scanned = self.buf.len();
            return None;
        };
        let pos = from + offset;
        if self.buf[pos] == b'\n' {
            return Some((pos, pos + 1));
        }
        match self.buf.get(pos + 1) {
            Some(b'\n') => Some((pos, pos + 2)),
            Some(_) => Some((pos, pos + 1)),
            None => {
                self.scanned = pos;
                None
            }
        }
    }

    /// Flushes what is left at the end of the body (a last line without a newline, or an
    /// SSE event without its blank line).
    pub fn finish(&mut self) {
        if !self.buf.is_empty() {
            self.scanned = 0;
            let rest = self.buf.split();
            let line = String::from_utf8_lossy(&rest);
            let line = line.strip_suffix('\r').unwrap_or(&line).to_owned();
            self.line(line);
        }
        self.dispatch();
    }

    /// Whether a complete event is waiting.
    pub fn has_event(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The next complete event, if any.
    pub fn next_event(&mut self) -> Option<StreamEvent> {
        self.ready.pop_front()
    }

    fn line(&mut self, line: String) {
        match self.framing {
            StreamFraming::Ndjson => {
                if !line.trim().is_empty() {
                    self.ready.push_back(StreamEvent {
                        event: None,
                        data: line,
                    });
                }
            }
            StreamFraming::Sse => self.sse_line(line),
        }
    }

    /// One SSE line, per the WHATWG event-stream rules chatd needs: `data`, `event`, blank
    /// line dispatch, `:` comments (e.g. OpenRouter's keep-alives) ignored.
    fn sse_line(&mut self, line: String) {
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_str(), ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "event" => self.event = Some(value.to_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        let event = self.event.take();
        if let Some(data) = self.data.take() {
            self.ready.push_back(StreamEvent { event, data });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(framing: StreamFraming, pieces: &[&[u8]]) -> Vec<(Option<String>, String)> {
        let mut f = Framer::new(framing);
        let mut out = Vec::new();
        for p in pieces {
            f.feed(&Bytes::copy_from_slice(p)).unwrap();
            while let Some(e) = f.next_event() {
                out.push((e.event, e.data));
            }
        }
        f.finish();
        while let Some(e) = f.next_event() {
            out.push((e.event, e.data));
        }
        out
    }

    fn data(items: &[&str]) -> Vec<(Option<String>, String)> {
        items.iter().map(|d| (None, d.to_string())).collect()
    }

    #[test]
    fn ndjson_lines_split_anywhere_even_inside_utf8() {
        let text = "{\"a\":\"é\"}\n\n{\"b\":\"日本\"}\r\n{\"c\":1}";
        let bytes = text.as_bytes();
        for cut in 1..bytes.len() {
            let got = frame(StreamFraming::Ndjson, &[&bytes[..cut], &bytes[cut..]]);
            assert_eq!(
                got,
                data(&["{\"a\":\"é\"}", "{\"b\":\"日本\"}", "{\"c\":1}"]),
                "cut at {cut}"
            );
        }
        let one_byte_at_a_time: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(frame(StreamFraming::Ndjson, &one_byte_at_a_time).len(), 3);
    }

    #[test]
    fn sse_events_comments_names_and_multiline_data() {
        let text = ": OPENROUTER PROCESSING\n\ndata: {\"x\":1}\n\nevent: error\ndata: {\"e\":\"boom\"}\n\ndata: a\ndata: b\n\ndata:[DONE]\n\n";
        let bytes = text.as_bytes();
        let expected = vec![
            (None, "{\"x\":1}".to_string()),
            (Some("error".to_string()), "{\"e\":\"boom\"}".to_string()),
            (None, "a\nb".to_string()),
            (None, "[DONE]".to_string()),
        ];
        for cut in 1..bytes.len() {
            assert_eq!(
                frame(StreamFraming::Sse, &[&bytes[..cut], &bytes[cut..]]),
                expected,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn sse_tolerates_crlf_and_a_missing_final_blank_line() {
        let got = frame(StreamFraming::Sse, &[b"data: one\r\n\r\ndata: two"]);
        assert_eq!(got, data(&["one", "two"]));
    }

    #[test]
    fn sse_lines_may_end_in_a_lone_cr_even_split_from_its_lf() {
        let text = b"data: one\r\rdata: two\r\n\r\ndata: three\n\n";
        for cut in 1..text.len() {
            assert_eq!(
                frame(StreamFraming::Sse, &[&text[..cut], &text[cut..]]),
                data(&["one", "two", "three"]),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn oversized_events_are_rejected() {
        let mut f = Framer::new(StreamFraming::Ndjson);
        let big = Bytes::from(vec![b'x'; MAX_EVENT_BYTES + 1]);
        assert!(f.feed(&big).is_err());
    }
}
