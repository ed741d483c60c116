//! Streamed exchanges: opening the upstream stream and turning its events into chunks.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tracing::Instrument;
use tracing::field::Empty;

use super::Gateway;
use super::admission::Slot;
use super::endpoints::Picked;
use super::failover::Answer;
use super::in_flight::{InFlight, Kind, elapsed_ms};
use super::provider::{Provider, retry_after};
use crate::contract::{ChatRequest, ChatResponse, StreamChunk, Usage};
use crate::error::GatewayError;
use crate::routing::Route;
use crate::runtime::AdapterInstance;
use crate::scrub::Scrubbed;
use crate::upstream::{Framer, Opened, Target};
impl Gateway {
    /// Starts a streamed chat exchange. Errors before the upstream starts streaming are
    /// returned here (and become normal HTTP errors); later ones come from the stream.
    ///
    /// The first chunk is awaited before this returns: the client then gets the response
    /// head and the first token in one write (one wake-up less on its side), a failure before
    /// any content (an error event first thing) is a normal HTTP error, and until then the
    /// failover loop may still retry or fall back — never after.
    pub async fn chat_stream(&self, mut request: ChatRequest) -> Result<ChatStream, GatewayError> {
        let served = self.failover(&mut request, Kind::Stream).await?;
        let super::failover::Served {
            route,
            mut exchange,
            answer,
            endpoint,
            slot,
        } = served;
        let Answer::Stream(events) = answer else {
            exchange.finish(false);
            return Err(GatewayError::Internal(
                "a whole answer opened a stream".into(),
            ));
        };
        let span = tracing::debug_span!("stream", chatd.chunks = Empty);
        Ok(ChatStream {
            route,
            exchange,
            events,
            endpoint: Some(endpoint),
            _slot: slot,
            request_span: crate::otel::current_span(),
            span,
            tokens: (None, None),
            chunks: 0,
            tool_calls_seen: Vec::new(),
        })
    }

    /// One attempt at a stream with one endpoint of `provider`: the request built and sent,
    /// and the first chunk parsed (unless the stream is empty).
    pub(super) async fn open_events(
        &self,
        provider: &Arc<Provider>,
        target: &Target,
        request: &ChatRequest,
    ) -> Result<Events, GatewayError> {
        let (body, pending, kept) = self.start_stream(provider, target, request).await?;
        let mut events = Events {
            provider: provider.clone(),
            framer: Framer::new(provider.adapter.info.stream_framing),
            body_ended: !pending.is_empty(),
            saw_end: !pending.is_empty(),
            pending,
            body,
            // The first events usually arrive with the response head.
            instance: kept,
            idle_since: Instant::now(),
            instance_events: 0,
        };
        if events.pending.is_empty() {
            match events.advance().await {
                Some(Ok(first)) => events.pending.push_back(first),
                Some(Err(e)) => {
                    events.release();
                    return Err(e);
                }
                None => {}
            }
        }
        Ok(events)
    }

    /// Builds the upstream request and opens the stream: the body still to read, chunks
    /// already known (an answer that came whole), and the instance kept for parsing.
    async fn start_stream(
        &self,
        provider: &Arc<Provider>,
        target: &Target,
        request: &ChatRequest,
    ) -> Result<(ByteStream, VecDeque<StreamChunk>, Option<AdapterInstance>), GatewayError> {
        if !provider.adapter.info.supports_streaming {
            return Err(provider.unsupported(&format!(
                "adapter {} does not support streaming",
                provider.adapter.name
            )));
        }
        let stats = &provider.stats;
        let mut builder = provider.instance().await?;
        let began = Instant::now();
        let built = builder
            .build_request(request)
            .instrument(tracing::debug_span!("adapter.build"))
            .await;
        stats.adapter_time(began.elapsed());
        let built = built
            .map_err(|e| provider.call_failed(e))?
            .map_err(|e| provider.adapter_error(e, None))?;
        let framing = provider.adapter.info.stream_framing;
        let open = self
            .upstream
            .open_stream(target, provider.request_to(target, built)?, framing)
            .instrument(tracing::debug_span!("upstream", otel.kind = "client"));
        let began = Instant::now();
        let (opened, mut kept) =
            hold_while(builder, Instant::now() + KEEP_INSTANCE_IDLE, open).await;
        stats.upstream_time(began.elapsed());
        let mut parser = async || match kept.take() {
            Some(instance) => Ok(instance),
            None => provider.instance().await,
        };
        let opened = opened.map_err(|e| provider.upstream_failed(e))?;
        let (body, pending): (ByteStream, _) = match opened {
            Opened::Stream(open) => (Box::pin(open.into_body()), VecDeque::new()),
            Opened::Whole(response) => {
                let mut parser = parser().await?;
                let began = Instant::now();
                let whole = parser.parse_response(&response).await;
                stats.adapter_time(began.elapsed());
                let whole = whole
                    .map_err(|e| provider.call_failed(e))?
                    .map_err(|e| provider.adapter_error(e, retry_after(&response)))?;
                (Box::pin(futures_util::stream::empty()), chunks_of(whole))
            }
            Opened::Refused(error_response) => {
                let parsed = parser()
                    .await?
                    .parse_response(&error_response)
                    .await
                    .map_err(|e| provider.call_failed(e))?;
                return Err(match parsed {
                    Err(e) => provider.adapter_error(e, retry_after(&error_response)),
                    // The adapter accepted a non-2xx answer; it is still not a stream.
                    Ok(_) => GatewayError::UpstreamStatus {
                        provider: provider.name.clone(),
                        status: error_response.status,
                        message: Scrubbed::fixed("upstream refused the stream"),
                        code: None,
                        retry_after: None,
                    },
                });
            }
        };
        Ok((body, pending, kept))
    }
}

/// A whole answer replayed as a stream: its content (if any), then a terminal chunk with the
/// tool calls, finish reason and token counts.
fn chunks_of(response: ChatResponse) -> VecDeque<StreamChunk> {
    let empty = StreamChunk {
        content: None,
        reasoning: None,
        tool_calls: None,
        model: Some(response.model),
        done_reason: None,
        finish: None,
        usage: Usage::NONE,
        done: false,
    };
    let mut chunks = VecDeque::with_capacity(2);
    if !response.content.is_empty() || response.reasoning.is_some() {
        chunks.push_back(StreamChunk {
            content: Some(response.content).filter(|c| !c.is_empty()),
            reasoning: response.reasoning,
            ..empty.clone()
        });
    }
    chunks.push_back(StreamChunk {
        tool_calls: response.tool_calls,
        done_reason: response.done_reason,
        finish: response.finish,
        usage: response.usage,
        done: true,
        ..empty
    });
    chunks
}

type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = hyper::Result<bytes::Bytes>> + Send>>;

/// A streamed answer in progress. Dropping it (the client went away) drops the upstream
/// connection, which cancels the upstream request.
pub struct ChatStream {
    /// The candidate that answered: its provider and upstream model.
    pub route: Route,
    exchange: InFlight,
    events: Events,
    /// The endpoint serving it, told when the stream breaks.
    endpoint: Option<Picked>,
    /// The provider's concurrency slot, held until the stream ends.
    _slot: Slot,
    /// The request's span, for the answer's attributes.
    request_span: tracing::Span,
    /// Covers the stream from its first chunk to its end.
    span: tracing::Span,
    /// The token counts the upstream reported (in, out).
    tokens: (Option<u32>, Option<u32>),
    chunks: u64,
    /// The upstream's tool-call indices in order of first appearance (see
    /// [`renumber_tool_calls`]).
    tool_calls_seen: Vec<Option<u64>>,
}

/// The upstream's events of one stream, parsed into chunks.
pub(super) struct Events {
    provider: Arc<Provider>,
    /// Parses the stream's events (at first the request's builder). Kept between events only
    /// while they come quickly: once it has been idle for [`KEEP_INSTANCE_IDLE`] it is
    /// dropped, so a stream holds no sandbox slot while the model thinks.
    instance: Option<AdapterInstance>,
    /// When `instance` last finished a call.
    idle_since: Instant,
    /// Events `instance` has parsed.
    instance_events: u32,
    framer: Framer,
    body: ByteStream,
    body_ended: bool,
    /// Chunks ready before any body is read (a whole answer replayed as a stream, or the
    /// first chunk, parsed before the answer began).
    pending: VecDeque<StreamChunk>,
    /// Whether the upstream signalled the end (a `done` event or a finish reason).
    saw_end: bool,
}

impl ChatStream {
    /// The provider serving this stream.
    pub fn provider(&self) -> &str {
        &self.exchange.provider.name
    }

    /// Time since the request arrived.
    pub fn elapsed(&self) -> Duration {
        self.exchange.started.elapsed()
    }

    /// The next chunk; `None` once the stream is complete. After an error, the stream ends.
    pub async fn next(&mut self) -> Option<Result<StreamChunk, GatewayError>> {
        if self.exchange.is_finished() {
            return None;
        }
        let span = self.span.clone();
        let mut item = self.advance_unless_cut().instrument(span).await;
        if let Some(Ok(chunk)) = &mut item
            && let Some(calls) = &chunk.tool_calls
            && let Some(renumbered) = renumber_tool_calls(calls, &mut self.tool_calls_seen)
        {
            chunk.tool_calls = Some(renumbered);
        }
        match &item {
            Some(Ok(chunk)) => {
                self.chunks += 1;
                self.exchange
                    .tokens(chunk.usage.input_tokens, chunk.usage.output_tokens);
                self.tokens.0 = chunk.usage.input_tokens.or(self.tokens.0);
                self.tokens.1 = chunk.usage.output_tokens.or(self.tokens.1);
                if chunk.done {
                    self.end(None);
                }
            }
            Some(Err(e)) => self.end(Some(e)),
            None => self.end(None),
        }
        item
    }

    /// Ends a stream that was answered: the handler logged its start, so its end gets a line
    /// of its own (how long it ran, and why it failed if it did).
    fn end(&mut self, error: Option<&GatewayError>) {
        self.close(error.is_none());
        let provider = self.exchange.provider.clone();
        if let Some(e) = error
            && let Some(mut endpoint) = self.endpoint.take()
        {
            // Answered at first, it broke off: the endpoint failed all the same.
            let url = provider.endpoints[endpoint.index].target.base_url();
            endpoint.report(
                super::failover::health_of(e),
                &provider.health,
                &provider.name,
                url,
            );
        }
        let (input, output) = self.tokens;
        provider.stats.tokens(&self.route.model, input, output);
        if !self.span.is_disabled() {
            self.span.record("chatd.chunks", self.chunks);
        }
        crate::otel::answered(
            &self.request_span,
            &provider.name,
            &self.route.model,
            input,
            output,
        );
        let duration_ms = format_args!("{:.3}", elapsed_ms(self.exchange.started));
        match error {
            None => tracing::info!(
                provider = %provider.name,
                model = %self.route.model,
                client = self.exchange.client(),
                duration_ms,
                "stream finished"
            ),
            Some(e) => tracing::warn!(
                provider = %provider.name,
                model = %self.route.model,
                client = self.exchange.client(),
                duration_ms,
                code = e.code(),
                error = %e,
                "stream failed"
            ),
        }
    }

    fn close(&mut self, ok: bool) {
        self.events.release();
        self.exchange.finish(ok);
    }

    /// The next chunk, or a `shutting_down` error once the shutdown grace period is over.
    async fn advance_unless_cut(&mut self) -> Option<Result<StreamChunk, GatewayError>> {
        let cut = self.exchange.cut();
        tokio::select! {
            biased;
            item = self.events.advance() => item,
            () = cut => Some(Err(self.exchange.cut_error())),
        }
    }
}

impl Events {
    /// Drops the parser kept for the next event.
    fn release(&mut self) {
        if let Some(instance) = self.instance.take() {
            instance.release();
        }
    }

    async fn advance(&mut self) -> Option<Result<StreamChunk, GatewayError>> {
        if let Some(chunk) = self.pending.pop_front() {
            return Some(Ok(chunk));
        }
        let provider = self.provider.clone();
        let stats = &provider.stats;
        loop {
            if let Some(event) = self.framer.next_event() {
                let mut parser = match self.take_instance() {
                    Some(instance) => instance,
                    None => match provider.instance().await {
                        Ok(instance) => {
                            self.instance_events = 0;
                            instance
                        }
                        Err(e) => return Some(Err(e)),
                    },
                };
                // A failed call drops the instance: a trapped instance is not used again.
                let began = Instant::now();
                let parsed = parser.parse_stream_event(&event).await;
                stats.adapter_time(began.elapsed());
                let parsed = match parsed {
                    Ok(parsed) => parsed,
                    Err(e) => return Some(Err(provider.call_failed(e))),
                };
                self.instance_events += 1;
                if parser.may_idle() {
                    self.instance = Some(parser);
                    self.idle_since = Instant::now();
                }
                match parsed {
                    Ok(Some(chunk)) => {
                        self.saw_end |= chunk.done || chunk.finish.is_some();
                        return Some(Ok(chunk));
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        return Some(Err(provider.adapter_error(e, None)));
                    }
                }
            }
            if self.body_ended {
                return if self.saw_end {
                    None
                } else {
                    Some(Err(provider.stream_failed(
                        "upstream closed the stream before it finished",
                    )))
                };
            }
            let timeout = provider.target.timeout;
            let read = tokio::time::timeout(timeout, self.body.next());
            let began = Instant::now();
            // An instance still held here is kept only while the next bytes come quickly.
            let read = match self.instance.take() {
                Some(held) => {
                    let (read, kept) =
                        hold_while(held, self.idle_since + KEEP_INSTANCE_IDLE, read).await;
                    self.instance = kept;
                    read
                }
                None => read.await,
            };
            stats.upstream_time(began.elapsed());
            match read {
                Err(_) => {
                    return Some(Err(GatewayError::UpstreamTimeout {
                        provider: provider.name.clone(),
                        timeout,
                    }));
                }
                Ok(None) => {
                    self.framer.finish();
                    self.body_ended = true;
                }
                Ok(Some(Err(e))) => {
                    return Some(Err(provider.stream_failed(&crate::upstream::describe(&e))));
                }
                Ok(Some(Ok(bytes))) => {
                    if self.framer.feed(&bytes).is_err() {
                        return Some(Err(
                            provider.malformed("a stream event exceeds the size limit")
                        ));
                    }
                }
            }
        }
    }
}

/// Renumbers the `index` of each entry of a streamed `tool_calls` array (OpenAI's
/// `delta.tool_calls`, as JSON text) from 0, in order of first appearance: upstreams count
/// from 1, or count other content blocks too (Anthropic's block index), and clients
/// (the OpenAI SDK's stream accumulator) expect 0, 1, ... An entry without an index is a call
/// of its own. `seen` carries the upstream's indices from chunk to chunk. `None` when the text
/// needs no change (or is not a JSON array, which is passed on as it is).
fn renumber_tool_calls(text: &str, seen: &mut Vec<Option<u64>>) -> Option<String> {
    let Ok(serde_json::Value::Array(mut calls)) = serde_json::from_str(text) else {
        return None;
    };
    let mut changed = false;
    for call in &mut calls {
        let Some(call) = call.as_object_mut() else {
            continue;
        };
        let theirs = call.get("index").and_then(serde_json::Value::as_u64);
        let ours = match theirs.and_then(|t| seen.iter().position(|s| *s == Some(t))) {
            Some(known) => known,
            None => {
                seen.push(theirs);
                seen.len() - 1
            }
        };
        if theirs != Some(ours as u64) {
            call.insert("index".into(), ours.into());
            changed = true;
        }
    }
    changed.then(|| serde_json::Value::Array(calls).to_string())
}

/// How long a request keeps an idle adapter instance for its next call: the builder while the
/// upstream works (so a quick answer is parsed by the same instance), a stream's parser
/// between events.
///
/// Creating and dropping an instance (the memory reset included) is a good part of a
/// request's CPU; reusing it for the answer saves one of the two per request, and a fast stream (tokens a few ms apart) parses all its events in
/// one instance instead of one per upstream read. The bound keeps what the
/// one-instance-per-call design gave: a request that waits longer for its model (most LLM
/// calls, most gaps between tokens) holds no sandbox slot and no instance memory while it
/// waits, and gets a fresh instance when the answer comes. All calls on one instance serve
/// the same request, so nothing can leak between requests either way.
pub const KEEP_INSTANCE_IDLE: Duration = Duration::from_millis(10);

/// Events one instance parses before a stream takes a fresh one, so that a guest that leaks
/// a little memory per event cannot reach its memory limit on a long stream.
pub const EVENTS_PER_INSTANCE: u32 = 1000;

impl Events {
    /// The kept parser, unless it has been idle too long (the client was slow to take the
    /// last chunk) or has parsed [`EVENTS_PER_INSTANCE`] events.
    fn take_instance(&mut self) -> Option<AdapterInstance> {
        let instance = self.instance.take()?;
        (self.idle_since.elapsed() <= KEEP_INSTANCE_IDLE
            && self.instance_events < EVENTS_PER_INSTANCE)
            .then_some(instance)
    }
}

/// Awaits `work` while holding `instance` until `deadline` at most; the instance comes back
/// only if `work` finished by then. When slots are scarce (see
/// [`AdapterInstance::may_idle`]) it is dropped at once.
pub(super) async fn hold_while<T>(
    instance: AdapterInstance,
    deadline: Instant,
    work: impl std::future::Future<Output = T>,
) -> (T, Option<AdapterInstance>) {
    if !instance.may_idle() {
        drop(instance);
        return (work.await, None);
    }
    let mut held = Some(instance);
    let release = tokio::time::sleep_until(deadline.into());
    tokio::pin!(work, release);
    loop {
        tokio::select! {
            biased;
            out = &mut work => return (out, held),
            () = &mut release, if held.is_some() => held = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::renumber_tool_calls;
    use serde_json::{Value, json};

    #[test]
    fn tool_call_indices_count_from_zero_in_order_of_first_appearance() {
        let mut seen = Vec::new();
        let mut next = |v: Value| {
            renumber_tool_calls(&v.to_string(), &mut seen)
                .map(|t| serde_json::from_str::<Value>(&t).unwrap())
        };
        // Already 0: left as it is.
        assert_eq!(next(json!([{"index": 0, "id": "a"}])), None);
        assert_eq!(
            next(json!([{"index": 0, "function": {"arguments": "{"}}])),
            None
        );
        // A second call numbered 3 by the upstream becomes 1, its fragments too.
        assert_eq!(
            next(json!([{"index": 3, "id": "b"}])),
            Some(json!([{"index": 1, "id": "b"}]))
        );
        assert_eq!(
            next(json!([{"index": 3, "function": {"arguments": "}"}}])),
            Some(json!([{"index": 1, "function": {"arguments": "}"}}]))
        );
        // Entries without an index are calls of their own.
        assert_eq!(
            next(json!([{"id": "c"}, {"id": "d"}])),
            Some(json!([{"id": "c", "index": 2}, {"id": "d", "index": 3}]))
        );
        assert_eq!(next(json!("not an array")), None);

        // An upstream counting from 1.
        let mut seen = Vec::new();
        let one = renumber_tool_calls(r#"[{"index":1,"id":"x"},{"index":2,"id":"y"}]"#, &mut seen);
        assert_eq!(
            serde_json::from_str::<Value>(&one.unwrap()).unwrap(),
            json!([{"index": 0, "id": "x"}, {"index": 1, "id": "y"}])
        );
    }
}
