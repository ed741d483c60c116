//! chatd adapter for Ollama Cloud (ollama.com), through its `/api/generate` endpoint.
//!
//! `/api/generate` takes one prompt rather than a list of messages, so the chat is flattened:
//! the contents of all "system" messages come first, in order and unlabelled; then every other
//! message follows as `<Role>: <content>`, where `<Role>` is the role with its first letter
//! upper-cased ("User", "Assistant", "Tool"); all parts are joined by a blank line ("\n\n").
//! For example, [system "Be brief", user "hi", assistant "hello", user "bye"] becomes
//!
//! ```text
//! Be brief
//!
//! User: hi
//!
//! Assistant: hello
//!
//! User: bye
//! ```
//!
//! `/api/generate` has no tool calling, so requests with tools are refused.

// No std in the component (see the kit's `guest` module for why); native builds, which exist
// for the unit tests, link it.
#![no_std]
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

// No `world:`: the package has exactly one world, so the bindings need not depend on its name.
wit_bindgen::generate!({
    path: "../../wit/0.2.0",
    with: { "lakehouse:provider/types@0.2.0": chatd_adapter_kit::types },
});
chatd_adapter_kit::component!();

// Export symbols are named after WIT paths ("lakehouse:provider/adapter@0.2.0#..."), which only
// a wasm linker accepts; native builds exist for the unit tests.
#[cfg(target_arch = "wasm32")]
export!(Component);

use chatd_adapter_kit::prelude::*;
use chatd_adapter_kit::types::{
    AdapterError, AdapterInfo, AuthScheme, ChatRequest, ChatResponse, HttpRequest, HttpResponse,
    Message, StreamChunk, StreamEvent, StreamFraming,
};
use chatd_adapter_kit::{carries_something, invalid, malformed, ollama};
use exports::lakehouse::provider::models::ModelInfo;

/// The adapter's self-description.
pub fn describe() -> AdapterInfo {
    AdapterInfo {
        name: "ollama_cloud".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        auth: AuthScheme::Bearer,
        default_base_url: "https://ollama.com".into(),
        supports_streaming: true,
        stream_framing: StreamFraming::Ndjson,
    }
}

/// Builds the `POST /api/generate` request for a chat request.
pub fn build_request(request: &ChatRequest) -> Result<HttpRequest, AdapterError> {
    if request.tools.is_some() {
        return Err(invalid("tools are not supported by /api/generate"));
    }
    let body = ollama::request_body(request, "prompt", flatten(&request.messages).into())?;
    Ok(ollama::post("/api/generate", request.stream, body))
}

/// Flattens a chat into one prompt, in the format described in the crate documentation.
pub fn flatten(messages: &[Message]) -> String {
    let system = messages
        .iter()
        .filter(|message| message.role == "system")
        .map(|message| message.content.clone());
    let turns = messages
        .iter()
        .filter(|message| message.role != "system")
        .map(|message| format!("{}: {}", capitalized(&message.role), message.content));
    system.chain(turns).collect::<Vec<_>>().join("\n\n")
}

/// Parses a complete `/api/generate` response of any status.
pub fn parse_response(response: &HttpResponse) -> Result<ChatResponse, AdapterError> {
    let mut body = ollama::json_body(response)?;
    // Taken, not cloned: the answer text is most of the body.
    let content = match body["response"].take() {
        serde_json::Value::String(content) => content,
        _ => return Err(malformed("response has no \"response\" text")),
    };
    Ok(ollama::chat_response(
        &body,
        content,
        &body["thinking"],
        None,
    ))
}

/// Parses one NDJSON line of a streamed `/api/generate` response.
pub fn parse_stream_event(event: &StreamEvent) -> Result<Option<StreamChunk>, AdapterError> {
    let Some(line) = ollama::stream_line(event)? else {
        return Ok(None);
    };
    let chunk = ollama::stream_chunk(&line, &line["response"], &line["thinking"]);
    Ok(carries_something(&chunk).then_some(chunk))
}

/// Builds the `GET /api/tags` request that lists the cloud models.
pub fn build_models_request() -> HttpRequest {
    ollama::tags_request()
}

/// Parses a `/api/tags` response of any status.
pub fn parse_models_response(response: &HttpResponse) -> Result<Vec<ModelInfo>, AdapterError> {
    ollama::tags(response, |id| ModelInfo {
        id,
        owned_by: None,
        created: None,
    })
}

/// A role with its first letter upper-cased ("user" becomes "User").
fn capitalized(role: &str) -> String {
    let mut chars = role.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests;
