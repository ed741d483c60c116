//! Wire formats: one client API each. A format reads its request body into the contract's
//! request and renders answers, streams and errors in its own shape; the handler and the
//! stream loop that every format shares are in [`super::pipeline`].

pub mod anthropic;
mod conversation;
pub mod native;
pub mod ollama;
pub mod openai;
pub mod responses;
pub mod tools;

use axum::response::Response;
use serde::de::DeserializeOwned;

use crate::contract::{ChatRequest, StreamChunk};
use crate::error::GatewayError;
use crate::gateway::{ChatOutcome, ChatStream};

pub use super::pipeline::Events;

/// How a format frames its stream's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Server-sent events: an optional `event: NAME` line, a `data: JSON` line, a blank line.
    Sse,
    /// One JSON document per line.
    Ndjson,
}

impl Framing {
    /// The stream's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Framing::Sse => "text/event-stream",
            Framing::Ndjson => "application/x-ndjson",
        }
    }
}

/// A format's request body: the model it names, and its conversion to the contract's request.
pub trait RequestBody: DeserializeOwned + Send + 'static {
    /// What rendering the answer needs to know of the request.
    type Shape: Send + 'static;

    /// The model the request names, for the log line of a request that fails validation.
    fn model(&self) -> Option<&str>;

    /// Validates the request and converts it to the contract's request.
    fn into_contract(self) -> Result<(ChatRequest, Self::Shape), GatewayError>;
}

/// What a format's answers need to know of its request.
pub type Shape<F> = <<F as WireFormat>::Request as RequestBody>::Shape;

/// One client API for chat: its request body, and how the gateway's answer, stream or
/// failure is written back in its shape.
pub trait WireFormat: 'static {
    /// The endpoint, as log lines name it.
    const ENDPOINT: &'static str;
    /// How a stream's events are framed.
    const FRAMING: Framing;
    /// Whether a stream whose first token is slow sends its head early and then
    /// [`StreamRender::keep_alive`] events while it waits, so that clients and proxies with
    /// read timeouts see the connection alive. If not, the stream answers only once its first
    /// event is there (an NDJSON client would read anything sent earlier as a document).
    const KEEPS_ALIVE: bool;
    /// The request body as the client sends it.
    type Request: RequestBody;
    /// The state of one streamed answer's rendering.
    type Stream: StreamRender;

    /// A whole (non-streamed) answer.
    fn answer(shape: Shape<Self>, outcome: ChatOutcome) -> Response;

    /// Starts rendering a streamed answer.
    fn stream(shape: Shape<Self>) -> Self::Stream;

    /// Tells the shape which candidate serves the answer (a chain's fallback, say), before
    /// [`WireFormat::answer`] or [`WireFormat::stream`]; formats whose answer names the model
    /// say it.
    fn served(_shape: &mut Shape<Self>, _route: &crate::routing::Route) {}

    /// A failure answered before any of the answer went out: status, headers and body.
    fn error(err: &GatewayError) -> Response;
}

/// Renders one streamed answer, event by event, into [`Events`].
pub trait StreamRender: Send + 'static {
    /// The upstream stream opened: what goes out ahead of the first chunk (in the same write).
    fn open(&mut self, _out: &mut Events) {}

    /// What a stream sends while its first token is awaited (its head went out early): an SSE
    /// comment unless the format has its own form.
    fn keep_alive(&mut self, out: &mut Events) {
        out.comment("keep-alive");
    }

    /// One chunk of the upstream's answer; may write nothing.
    fn chunk(&mut self, chunk: StreamChunk, out: &mut Events);

    /// The upstream's answer is complete.
    fn end(&mut self, stream: &ChatStream, out: &mut Events);

    /// The answer failed after its head went out (before [`StreamRender::open`], when the
    /// stream never opened): the stream's last event(s).
    fn error(&mut self, err: &GatewayError, out: &mut Events);
}

/// A request body read from JSON and converted, as the handler would (for tests).
#[cfg(test)]
pub(crate) fn parse<B: RequestBody>(
    body: serde_json::Value,
) -> Result<(ChatRequest, B::Shape), GatewayError> {
    serde_json::from_value::<B>(body)
        .map_err(|e| GatewayError::bad_request(e.to_string()))?
        .into_contract()
}

pub(crate) use crate::api::types::chat_request;

/// Parses OpenAI-shaped tool-call JSON text as the contract carries it.
pub(crate) fn parse_json(text: Option<&str>) -> Option<serde_json::Value> {
    text.and_then(|t| serde_json::from_str(t).ok())
}

/// Usage with nothing reported.
pub(crate) fn empty_usage() -> crate::contract::Usage {
    crate::contract::Usage {
        input_tokens: None,
        output_tokens: None,
        reasoning_tokens: None,
        cached_input_tokens: None,
    }
}

/// Keeps the latest value the upstream reported of each count (they may come in different
/// events).
pub(crate) fn keep_usage(kept: &mut crate::contract::Usage, new: crate::contract::Usage) {
    kept.input_tokens = new.input_tokens.or(kept.input_tokens);
    kept.output_tokens = new.output_tokens.or(kept.output_tokens);
    kept.reasoning_tokens = new.reasoning_tokens.or(kept.reasoning_tokens);
    kept.cached_input_tokens = new.cached_input_tokens.or(kept.cached_input_tokens);
}

/// A fresh id: `prefix` and 16 random hex digits.
pub(crate) fn random_id(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}

/// Unix time in seconds.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
