//! chatd adapter for a local Ollama server, through its native `/api/chat` endpoint.
//!
//! Tool calls cross the contract in OpenAI Chat Completions shapes; Ollama's own shape differs
//! mainly in that function arguments are JSON objects rather than JSON-encoded strings, so the
//! adapter converts them in both directions.

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
use chatd_adapter_kit::{
    carries_something, malformed, ollama, parse_json, parse_json_array, take_text,
};
use exports::lakehouse::provider::models::ModelInfo;
use serde_json::{Map, Value};

/// The adapter's self-description.
pub fn describe() -> AdapterInfo {
    AdapterInfo {
        name: "ollama".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        auth: AuthScheme::None,
        default_base_url: "http://127.0.0.1:11434".into(),
        supports_streaming: true,
        stream_framing: StreamFraming::Ndjson,
    }
}

/// Builds the `POST /api/chat` request for a chat request.
pub fn build_request(request: &ChatRequest) -> Result<HttpRequest, AdapterError> {
    let messages = request
        .messages
        .iter()
        .enumerate()
        .map(|(index, message)| message_json(index, message))
        .collect::<Result<Vec<_>, _>>()?;
    let mut body = ollama::request_body(request, "messages", Value::Array(messages))?;
    if let Some(tools) = tools(request)? {
        body.insert("tools".into(), tools);
    }
    Ok(ollama::post("/api/chat", request.stream, body))
}

/// Parses a complete `/api/chat` response of any status.
pub fn parse_response(response: &HttpResponse) -> Result<ChatResponse, AdapterError> {
    let mut body = ollama::json_body(response)?;
    let message = body
        .get_mut("message")
        .filter(|message| message.is_object())
        .ok_or_else(|| malformed("response has no \"message\" object"))?;
    let content = take_text(&mut message["content"], "message.content")?;
    let message = &body["message"];
    let tool_calls = ollama::tool_calls_to_openai(&message["tool_calls"], false)?;
    Ok(ollama::chat_response(
        &body,
        content,
        &message["thinking"],
        tool_calls,
    ))
}

/// Parses one NDJSON line of a streamed `/api/chat` response.
pub fn parse_stream_event(event: &StreamEvent) -> Result<Option<StreamChunk>, AdapterError> {
    let Some(line) = ollama::stream_line(event)? else {
        return Ok(None);
    };
    let message = &line["message"];
    let tool_calls = ollama::tool_calls_to_openai(&message["tool_calls"], true)?;
    let chunk = StreamChunk {
        tool_calls: tool_calls.map(|calls| calls.to_string()),
        ..ollama::stream_chunk(&line, &message["content"], &message["thinking"])
    };
    Ok(carries_something(&chunk).then_some(chunk))
}

/// Builds the `GET /api/tags` request that lists the local models.
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

/// Converts one chat turn to Ollama's message shape.
fn message_json(index: usize, message: &Message) -> Result<Value, AdapterError> {
    let mut out = Map::new();
    out.insert("role".into(), message.role.clone().into());
    out.insert("content".into(), message.content.clone().into());
    if let Some(calls) = &message.tool_calls {
        let field = format!("messages[{index}].tool_calls");
        out.insert(
            "tool_calls".into(),
            ollama::tool_calls_from_openai(&field, calls)?,
        );
    }
    if let (Some(name), "tool") = (&message.name, message.role.as_str()) {
        out.insert("tool_name".into(), name.clone().into());
    }
    Ok(Value::Object(out))
}

/// The OpenAI `tools` array to send, or `None` when there is none to send.
fn tools(request: &ChatRequest) -> Result<Option<Value>, AdapterError> {
    let Some(text) = &request.tools else {
        return Ok(None);
    };
    let tools = parse_json_array("tools", text)?;
    // Ollama has no tool_choice. "none" is honoured by sending no tools; "auto", "required" and
    // a named function are best effort: the model gets the tools and decides for itself.
    if let Some(choice) = &request.tool_choice
        && parse_json("tool_choice", choice)? == "none"
    {
        return Ok(None);
    }
    Ok(Some(Value::Array(tools)))
}

#[cfg(test)]
mod tests;
