//! chatd adapter for Ollama Cloud (ollama.com), through `/api/generate` (the default) or
//! `/api/chat` (the setting `endpoint = "chat"`).
//!
//! `/api/generate` takes one prompt rather than a list of messages, so the chat is flattened:
//! the text of all "system" messages comes first, in order and unlabelled; then every other
//! message follows as `<Role>: <text>`, where `<Role>` is the role with its first letter
//! upper-cased ("User", "Assistant"); all parts are joined by a blank line ("\n\n"). For
//! example, [system "Be brief", user "hi", assistant "hello", user "bye"] becomes
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
//! A flat prompt has no place for tool calls, tool results or images, so with
//! `/api/generate` those are refused, naming the feature and the setting that carries them.
//! JSON schemas, sampling options, reasoning and passthrough fields work on both endpoints.
//!
//! Capabilities are declared per adapter, and the host reads them once, before any provider
//! is configured, so they are the union of both endpoints'; the generate endpoint's refusals
//! come from `build-request` instead (an `invalid-request`, like the host's own refusal).
//! With `endpoint = "chat"` the adapter is the `ollama` adapter's `/api/chat` translation,
//! with bearer auth and without embeddings (Ollama Cloud serves none).

// No std in the component (see the kit's `guest` module for why).
#![no_std]

use chatd_adapter_kit::prelude::*;
use chatd_adapter_kit::types::{
    AdapterError, AdapterInfo, AuthScheme, ChatRequest, ChatResponse, ContentPart, HttpRequest,
    HttpResponse, Message, ModelPage, StreamChunk, StreamEvent, StreamFraming,
};
use chatd_adapter_kit::{
    Adapter, Settings, carries_something, invalid, joined_text, malformed, ollama, other_part,
};

/// The capabilities of both endpoints (see the crate documentation).
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
    "settings",
];

/// The adapter, configured with the endpoint it speaks.
#[derive(Default)]
pub struct OllamaCloud {
    /// `/api/chat` rather than `/api/generate`.
    chat: bool,
}

impl Adapter for OllamaCloud {
    fn describe() -> AdapterInfo {
        AdapterInfo {
            name: "ollama_cloud".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            auth: AuthScheme::Bearer,
            default_base_url: "https://ollama.com".into(),
            supports_streaming: true,
            stream_framing: StreamFraming::Ndjson,
            capabilities: CAPABILITIES.iter().map(|name| (*name).into()).collect(),
        }
    }

    /// Settings: `endpoint`, "generate" (the default) or "chat".
    fn configure(settings: &str) -> Result<Self, String> {
        let mut settings = Settings::parse(settings)?;
        let endpoint = settings.one_of("endpoint", &["generate", "chat"])?;
        settings.finish()?;
        Ok(OllamaCloud {
            chat: endpoint == Some("chat"),
        })
    }

    fn build_request(&self, request: &ChatRequest) -> Result<HttpRequest, AdapterError> {
        if self.chat {
            return ollama::chat_request(request);
        }
        if request.tools.is_some() || request.tool_choice.is_some() {
            return Err(needs_chat("tools"));
        }
        let body = ollama::request_body(request, "prompt", flatten(&request.messages)?.into())?;
        Ok(ollama::post("/api/generate", request.stream, body))
    }

    fn parse_response(&self, response: &HttpResponse) -> Result<ChatResponse, AdapterError> {
        if self.chat {
            return ollama::chat_answer(response);
        }
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

    fn parse_stream_event(&self, event: &StreamEvent) -> Result<Option<StreamChunk>, AdapterError> {
        if self.chat {
            return ollama::chat_stream_event(event);
        }
        let Some(line) = ollama::stream_line(event)? else {
            return Ok(None);
        };
        let chunk = ollama::stream_chunk(&line, &line["response"], &line["thinking"]);
        Ok(carries_something(&chunk).then_some(chunk))
    }

    fn build_models_request(&self, _cursor: Option<&str>) -> Option<HttpRequest> {
        Some(ollama::tags_request())
    }

    fn parse_models_response(&self, response: &HttpResponse) -> Result<ModelPage, AdapterError> {
        ollama::tags(response)
    }
}

chatd_adapter_kit::export_adapter!(OllamaCloud);

/// The refusal of a feature `/api/generate` cannot carry.
fn needs_chat(feature: &str) -> AdapterError {
    invalid(format!(
        "{feature} need Ollama Cloud's /api/chat: set endpoint = \"chat\" in the provider's settings"
    ))
}

/// Flattens a chat into one prompt, in the format described in the crate documentation;
/// refuses what a flat prompt cannot carry.
pub fn flatten(messages: &[Message]) -> Result<String, AdapterError> {
    for (index, message) in messages.iter().enumerate() {
        if message.tool_calls.is_some() || message.role == "tool" {
            return Err(needs_chat("tool turns"));
        }
        for (position, part) in message.content.iter().enumerate() {
            match part {
                ContentPart::Text(_) => {}
                ContentPart::Image(_) => return Err(needs_chat("images")),
                ContentPart::Other((kind, _)) => {
                    return Err(other_part(
                        &format!("messages[{index}].content"),
                        position,
                        kind,
                    ));
                }
            }
        }
    }
    let system = messages
        .iter()
        .filter(|message| message.role == "system")
        .map(|message| joined_text(&message.content));
    let turns = messages
        .iter()
        .filter(|message| message.role != "system")
        .map(|message| {
            format!(
                "{}: {}",
                capitalized(&message.role),
                joined_text(&message.content)
            )
        });
    Ok(system.chain(turns).collect::<Vec<_>>().join("\n\n"))
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
