//! Incremental detection of content-token events in streamed LLM responses.
//!
//! A body is split into lines (`\n`, optional `\r`) regardless of how frames cut it. A line is
//! a *content event* when its JSON payload (after an optional SSE `data:` prefix) has a
//! non-empty string in any of: `choices[0].delta.content` (OpenAI SSE), `message.content`
//! (Ollama chat), `response` (Ollama generate), top-level `content` (chatd native),
//! `delta.text` (Anthropic) or `delta` of a `response.output_text.delta` (OpenAI Responses).
//! Other lines (`[DONE]`, `event:`/`id:` fields, comments, blank separators) are ignored.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Splits a body into lines across frames and counts content events per frame.
#[derive(Debug, Default)]
pub struct ContentScanner {
    /// Bytes of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// Lines that looked like JSON but did not parse as an event.
    pub parse_errors: u64,
}

impl ContentScanner {
    /// Consumes one body frame and returns how many content events it completed.
    pub fn feed(&mut self, mut data: &[u8]) -> usize {
        let mut events = 0;
        while let Some(end) = memchr::memchr(b'\n', data) {
            let (line, rest) = (&data[..end], &data[end + 1..]);
            events += if self.partial.is_empty() {
                self.classify(line)
            } else {
                self.partial.extend_from_slice(line);
                // Taken out and put back so the buffer's capacity is reused for the next line.
                let joined = std::mem::take(&mut self.partial);
                let found = self.classify(&joined);
                self.partial = joined;
                self.partial.clear();
                found
            };
            data = rest;
        }
        self.partial.extend_from_slice(data);
        events
    }

    /// Handles a final line that had no terminating newline; call once the body ended.
    pub fn finish(&mut self) -> usize {
        let line = std::mem::take(&mut self.partial);
        self.classify(&line)
    }

    fn classify(&mut self, line: &[u8]) -> usize {
        match classify_line(line) {
            Line::Content => 1,
            Line::Other => 0,
            Line::Invalid => {
                self.parse_errors += 1;
                0
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Line {
    Content,
    Other,
    Invalid,
}

fn classify_line(line: &[u8]) -> Line {
    let payload = match line.strip_prefix(b"data:") {
        Some(data) => data,
        None => line,
    }
    .trim_ascii();
    if payload.first() != Some(&b'{') {
        return Line::Other;
    }
    match serde_json::from_slice::<Event>(payload) {
        Ok(event) if event.has_content() => Line::Content,
        Ok(_) => Line::Other,
        Err(_) => Line::Invalid,
    }
}

/// Turns content events into time-to-first-token and inter-token gaps for one response.
#[derive(Debug, Default)]
pub struct ContentClock {
    last: Option<Duration>,
}

impl ContentClock {
    /// Records `events` content events that all arrived `at` (measured from the request send).
    ///
    /// The first event ever seen yields a TTFT sample; every later one yields a gap from the
    /// previous event, which is zero for events that arrived in the same frame.
    pub fn observe(
        &mut self,
        events: usize,
        at: Duration,
        ttft: &mut Vec<u64>,
        gaps: &mut Vec<u64>,
    ) {
        if events == 0 {
            return;
        }
        match self.last {
            None => ttft.push(nanos(at)),
            Some(previous) => gaps.push(nanos(at.saturating_sub(previous))),
        }
        gaps.extend(std::iter::repeat_n(0, events - 1));
        self.last = Some(at);
    }

    /// Whether any content event was observed.
    pub fn saw_content(&self) -> bool {
        self.last.is_some()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The fields that can carry a content token; everything else is skipped by serde.
#[derive(Deserialize)]
struct Event {
    #[serde(default)]
    choices: FirstChoice,
    #[serde(default)]
    message: Option<WithContent>,
    #[serde(default)]
    response: NonEmpty,
    #[serde(default)]
    content: NonEmpty,
    /// Anthropic's `content_block_delta` (`delta.text`) and the Responses API's
    /// `response.output_text.delta` (`delta`, a string).
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

impl Event {
    fn has_content(&self) -> bool {
        self.choices.0
            || self.message.as_ref().is_some_and(|m| m.content.0)
            || self.response.0
            || self.content.0
            || match &self.delta {
                Some(Delta::Block { text }) => text.0,
                // Reasoning summaries and call arguments come as string deltas too.
                Some(Delta::Text(text)) => {
                    !text.is_empty() && self.kind.as_deref() == Some("response.output_text.delta")
                }
                _ => false,
            }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Delta {
    Text(String),
    Block {
        #[serde(default)]
        text: NonEmpty,
    },
    Other(IgnoredAny),
}

#[derive(Deserialize)]
struct WithContent {
    #[serde(default)]
    content: NonEmpty,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<WithContent>,
}

/// True for a non-empty string; any other JSON value (null, arrays of parts, ...) is false
/// rather than an error, so an unexpected shape never hides the rest of the line.
#[derive(Default)]
struct NonEmpty(bool);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NonEmpty;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<NonEmpty, E> {
                Ok(NonEmpty(!v.is_empty()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<NonEmpty, E> {
                Ok(NonEmpty(false))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<NonEmpty, E> {
                Ok(NonEmpty(false))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<NonEmpty, E> {
                Ok(NonEmpty(false))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<NonEmpty, E> {
                Ok(NonEmpty(false))
            }
            fn visit_unit<E: de::Error>(self) -> Result<NonEmpty, E> {
                Ok(NonEmpty(false))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NonEmpty, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(NonEmpty(false))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NonEmpty, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(NonEmpty(false))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Whether `choices[0].delta.content` is a non-empty string; later choices are skipped.
#[derive(Default)]
struct FirstChoice(bool);

impl<'de> Deserialize<'de> for FirstChoice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FirstChoice;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of choices")
            }
            fn visit_unit<E: de::Error>(self) -> Result<FirstChoice, E> {
                Ok(FirstChoice(false))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FirstChoice, A::Error> {
                let first = seq
                    .next_element::<Choice>()?
                    .and_then(|choice| choice.delta)
                    .is_some_and(|delta| delta.content.0);
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(FirstChoice(first))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSE: &str = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        ": keep-alive comment\n\n",
        "event: message\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\r\n\r\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n",
        "data: [DONE]\n\n",
    );

    fn count_all(body: &str) -> (usize, u64) {
        let mut scanner = ContentScanner::default();
        let events = scanner.feed(body.as_bytes()) + scanner.finish();
        (events, scanner.parse_errors)
    }

    #[test]
    fn sse_counts_only_non_empty_deltas() {
        assert_eq!(count_all(SSE), (2, 0));
    }

    #[test]
    fn anthropic_and_responses_text_deltas_count() {
        let anthropic = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"content\":[]}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}\n\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}\n\n",
        );
        assert_eq!(count_all(anthropic), (1, 0));
        let responses = concat!(
            "data: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\",\"sequence_number\":4}\n\n",
            "data: {\"type\":\"response.function_call_arguments.delta\",\"delta\":\"{\",\"sequence_number\":5}\n\n",
            "data: {\"type\":\"response.completed\",\"response\":{\"output\":[]}}\n\n",
        );
        assert_eq!(count_all(responses), (1, 0));
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        // Frames may cut a line anywhere, including inside a UTF-8 sequence or a `\r\n`.
        let body = format!("{SSE}data: {{\"choices\":[{{\"delta\":{{\"content\":\"é\"}}}}]}}\n\n");
        let bytes = body.as_bytes();
        for cut in 0..=bytes.len() {
            let mut scanner = ContentScanner::default();
            let events = scanner.feed(&bytes[..cut]) + scanner.feed(&bytes[cut..]);
            assert_eq!(events + scanner.finish(), 3, "cut at {cut}");
            assert_eq!(scanner.parse_errors, 0, "cut at {cut}");
        }
    }

    #[test]
    fn byte_at_a_time_attributes_events_to_the_completing_frame() {
        let line = "{\"message\":{\"role\":\"assistant\",\"content\":\"x\"},\"done\":false}\n";
        let mut scanner = ContentScanner::default();
        let per_frame: Vec<usize> = line.bytes().map(|b| scanner.feed(&[b])).collect();
        // Nothing until the newline arrives, then exactly one event.
        assert_eq!(per_frame.iter().sum::<usize>(), 1);
        assert_eq!(per_frame.last(), Some(&1));
    }

    #[test]
    fn ndjson_ollama_and_native_shapes() {
        let body = concat!(
            "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"tok0 \"},\"done\":false}\n",
            "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true}\n",
            "{\"model\":\"m\",\"response\":\"tok0 \",\"done\":false}\n",
            "{\"model\":\"m\",\"response\":\"\",\"done\":true}\n",
            "{\"type\":\"delta\",\"content\":\"native\"}\n",
            "{\"type\":\"done\",\"content\":null}\n",
            "{\"content\":[{\"type\":\"text\"}]}\n",
            "\n",
            "{\"message\":{\"content\":\"no trailing newline\"}}",
        );
        assert_eq!(count_all(body), (4, 0));
    }

    #[test]
    fn broken_json_is_counted_not_hidden() {
        let body = "{\"message\":{\"content\":\"a\"}\n{\"choices\":\"oops\"}\nnot json\n";
        // The first line is truncated JSON, the second has a wrong type; plain text is ignored.
        assert_eq!(count_all(body), (0, 2));
    }

    #[test]
    fn clock_turns_events_into_ttft_and_gaps() {
        let ms = Duration::from_millis;
        let mut clock = ContentClock::default();
        let (mut ttft, mut gaps) = (Vec::new(), Vec::new());
        clock.observe(0, ms(1), &mut ttft, &mut gaps);
        assert!(!clock.saw_content());
        clock.observe(1, ms(5), &mut ttft, &mut gaps);
        clock.observe(0, ms(6), &mut ttft, &mut gaps);
        clock.observe(2, ms(9), &mut ttft, &mut gaps);
        clock.observe(1, ms(12), &mut ttft, &mut gaps);
        assert!(clock.saw_content());
        assert_eq!(ttft, vec![5_000_000]);
        assert_eq!(gaps, vec![4_000_000, 0, 3_000_000]);
    }

    #[test]
    fn split_stream_timing_end_to_end() {
        // Two Ollama lines; the second is split over frames arriving at 10 ms and 30 ms.
        let frames: [(&str, u64); 3] = [
            ("{\"message\":{\"content\":\"a\"}}\n{\"message\":{\"con", 10),
            ("tent\":\"b\"}}", 20),
            ("\n", 30),
        ];
        let mut scanner = ContentScanner::default();
        let mut clock = ContentClock::default();
        let (mut ttft, mut gaps) = (Vec::new(), Vec::new());
        for (data, at) in frames {
            let events = scanner.feed(data.as_bytes());
            clock.observe(events, Duration::from_millis(at), &mut ttft, &mut gaps);
        }
        assert_eq!(ttft, vec![10_000_000]);
        assert_eq!(gaps, vec![20_000_000]);
    }
}
