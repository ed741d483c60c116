//! Wire formats: one client API each. A format reads its request body into the contract's
//! request and renders answers, streams and errors in its own shape; the handler and the
//! stream loop that every format shares are in [`super::pipeline`].

pub mod native;
pub mod openai;

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

/// One client API for chat: how its request becomes the contract's request, and how the
/// gateway's answer, stream or failure is written back in its shape.
pub trait WireFormat: 'static {
    /// The endpoint, as log lines name it.
    const ENDPOINT: &'static str;
    /// How a stream's events are framed.
    const FRAMING: Framing;
    /// What a stream whose first token is slow sends, before and while it waits, so that the
    /// response head goes out and clients and proxies with read timeouts see the connection
    /// alive. `None`: the stream answers only once its first event is there (an NDJSON
    /// client would read anything sent earlier as a document).
    const KEEP_ALIVE: Option<&'static [u8]>;

    /// The request body as the client sends it.
    type Request: DeserializeOwned + Send + 'static;
    /// What rendering the answer needs to know of the request.
    type Shape: Send + 'static;
    /// The state of one streamed answer's rendering.
    type Stream: StreamRender;

    /// The model the request names, for the log line of a request that fails validation.
    fn model(request: &Self::Request) -> Option<&str>;

    /// Validates the request and converts it to the contract's request.
    fn parse(request: Self::Request) -> Result<(ChatRequest, Self::Shape), GatewayError>;

    /// A whole (non-streamed) answer.
    fn answer(shape: Self::Shape, outcome: ChatOutcome) -> Response;

    /// Starts rendering a streamed answer.
    fn stream(shape: Self::Shape) -> Self::Stream;

    /// Tells the shape which candidate serves the answer (a chain's fallback, say), before
    /// [`WireFormat::answer`] or [`WireFormat::stream`]; formats whose answer names the model
    /// say it.
    fn served(_shape: &mut Self::Shape, _route: &crate::routing::Route) {}

    /// A failure answered before any of the answer went out: status, headers and body.
    fn error(err: &GatewayError) -> Response;
}

/// Renders one streamed answer, event by event, into [`Events`].
pub trait StreamRender: Send + 'static {
    /// The upstream stream opened: what goes out ahead of the first chunk (in the same write).
    fn open(&mut self, _out: &mut Events) {}

    /// One chunk of the upstream's answer; may write nothing.
    fn chunk(&mut self, chunk: StreamChunk, out: &mut Events);

    /// The upstream's answer is complete.
    fn end(&mut self, stream: &ChatStream, out: &mut Events);

    /// The answer failed after its head went out (before [`StreamRender::open`], when the
    /// stream never opened): the stream's last event(s).
    fn error(&mut self, err: &GatewayError, out: &mut Events);
}

/// Parses OpenAI-shaped tool-call JSON text as the contract carries it.
pub(crate) fn parse_json(text: Option<&str>) -> Option<serde_json::Value> {
    text.and_then(|t| serde_json::from_str(t).ok())
}
