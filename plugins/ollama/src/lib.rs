//! chatd adapter for a local Ollama server, through its native `/api/chat` and `/api/embed`
//! endpoints.
//!
//! The translation lives in the kit's `ollama` module, shared with `ollama_cloud`'s chat
//! endpoint: tool calls are converted between OpenAI's shape and Ollama's (arguments as JSON
//! objects rather than JSON-encoded strings), images travel as base64 in a message's
//! `images`, a JSON schema is the `format`, sampling options go into `options`, and
//! passthrough fields (`keep_alive`, an `options` object merged into the adapter's) join the
//! body top-level.

// No std in the component (see the kit's `guest` module for why).
#![no_std]

use chatd_adapter_kit::types::{
    AdapterError, AdapterInfo, AuthScheme, ChatRequest, ChatResponse, EmbeddingsRequest,
    EmbeddingsResponse, HttpRequest, HttpResponse, ModelPage, StreamChunk, StreamEvent,
    StreamFraming,
};
use chatd_adapter_kit::{Adapter, ollama};

/// The capabilities this adapter declares. No "image-urls": Ollama takes images inline only.
const CAPABILITIES: &[&str] = &[
    "tools",
    "images",
    "json-schema",
    "json-object",
    "reasoning",
    "seed",
    "top-k",
    "presence-penalty",
    "frequency-penalty",
    "repeat-penalty",
    "passthrough",
    "embeddings",
];

/// The adapter; it takes no settings.
#[derive(Default)]
pub struct Ollama;

impl Adapter for Ollama {
    fn describe() -> AdapterInfo {
        AdapterInfo {
            name: "ollama".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            auth: AuthScheme::None,
            default_base_url: "http://127.0.0.1:11434".into(),
            supports_streaming: true,
            stream_framing: StreamFraming::Ndjson,
            capabilities: CAPABILITIES.iter().map(|name| (*name).into()).collect(),
        }
    }

    fn build_request(&self, request: &ChatRequest) -> Result<HttpRequest, AdapterError> {
        ollama::chat_request(request)
    }

    fn parse_response(&self, response: &HttpResponse) -> Result<ChatResponse, AdapterError> {
        ollama::chat_answer(response)
    }

    fn parse_stream_event(&self, event: &StreamEvent) -> Result<Option<StreamChunk>, AdapterError> {
        ollama::chat_stream_event(event)
    }

    fn build_models_request(&self, _cursor: Option<&str>) -> Option<HttpRequest> {
        Some(ollama::tags_request())
    }

    fn parse_models_response(&self, response: &HttpResponse) -> Result<ModelPage, AdapterError> {
        ollama::tags(response)
    }

    fn build_embeddings_request(
        &self,
        request: &EmbeddingsRequest,
    ) -> Result<HttpRequest, AdapterError> {
        ollama::embed_request(request)
    }

    fn parse_embeddings_response(
        &self,
        response: &HttpResponse,
    ) -> Result<EmbeddingsResponse, AdapterError> {
        ollama::embed_response(response)
    }
}

chatd_adapter_kit::export_adapter!(Ollama);

#[cfg(test)]
mod tests;
