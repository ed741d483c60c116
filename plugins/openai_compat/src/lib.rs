//! chatd adapter for OpenAI Chat Completions servers (OpenRouter, OpenCode, Kimi, ...).
//!
//! The contract already speaks Chat Completions for tool calls, so those pass through as they
//! are; the adapter's work is mostly in tolerating the servers' differences (reasoning fields,
//! error objects sent with a 200, usage arriving in its own stream chunk).

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
    ErrorShape, accept, answer_finish, carries_something, empty_chunk, finish_reason, finite,
    get_json, json_object, malformed, non_empty, openai, parse_json, parse_json_array, post_json,
    take_text, token_count, upstream,
};
use exports::lakehouse::provider::models::ModelInfo;
use serde_json::{Map, Value, json};

/// The adapter's self-description.
pub fn describe() -> AdapterInfo {
    AdapterInfo {
        name: "openai_compat".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        auth: AuthScheme::Bearer,
        default_base_url: "https://openrouter.ai/api/v1".into(),
        supports_streaming: true,
        stream_framing: StreamFraming::Sse,
    }
}

/// Builds the `POST /chat/completions` request for a chat request.
pub fn build_request(request: &ChatRequest) -> Result<HttpRequest, AdapterError> {
    // `think` is ignored: servers disagree on how to ask for reasoning (OpenRouter's
    // `reasoning`, OpenAI's `reasoning_effort`, Kimi's `thinking`), and an unknown field can be
    // a 400.
    let messages = request
        .messages
        .iter()
        .enumerate()
        .map(|(index, message)| message_json(index, message))
        .collect::<Result<Vec<_>, _>>()?;

    let mut body = Map::new();
    body.insert("model".into(), request.model.clone().into());
    body.insert("messages".into(), Value::Array(messages));
    if let Some(max_tokens) = request.max_tokens {
        body.insert("max_tokens".into(), max_tokens.into());
    }
    if let Some(temperature) = request.temperature {
        body.insert("temperature".into(), finite("temperature", temperature)?);
    }
    if let Some(top_p) = request.top_p {
        body.insert("top_p".into(), finite("top_p", top_p)?);
    }
    if !request.stop.is_empty() {
        body.insert("stop".into(), request.stop.clone().into());
    }
    if request.json_mode {
        body.insert("response_format".into(), json!({ "type": "json_object" }));
    }
    if let Some(tools) = &request.tools {
        let tools = parse_json_array("tools", tools)?;
        body.insert("tools".into(), Value::Array(tools));
        // Sent only alongside tools: OpenAI rejects a tool_choice without tools.
        if let Some(choice) = &request.tool_choice {
            body.insert("tool_choice".into(), parse_json("tool_choice", choice)?);
        }
    }
    if request.stream {
        body.insert("stream".into(), true.into());
        // Without this, streamed answers carry no token counts.
        body.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    let accept = accept(request.stream, StreamFraming::Sse);
    Ok(post_json("/chat/completions", &[], accept, body))
}

/// Parses a complete `/chat/completions` response of any status.
pub fn parse_response(response: &HttpResponse) -> Result<ChatResponse, AdapterError> {
    let mut body = successful_json(response)?;
    let choice = body["choices"]
        .as_array_mut()
        .and_then(|choices| choices.first_mut())
        .ok_or_else(|| malformed("upstream returned zero choices"))?;
    let done_reason = choice["finish_reason"].as_str().map(str::to_owned);
    let message = choice
        .get_mut("message")
        .filter(|message| message.is_object())
        .ok_or_else(|| malformed("choices[0].message is missing"))?;
    let content = take_text(&mut message["content"], "choices[0].message.content")?;
    let tool_calls = non_empty_array(&message["tool_calls"]);
    let reasoning = reasoning(message);
    Ok(ChatResponse {
        content,
        reasoning,
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        input_tokens: token_count(&body["usage"]["prompt_tokens"]),
        output_tokens: token_count(&body["usage"]["completion_tokens"]),
        finish: answer_finish(done_reason.as_deref(), tool_calls.is_some()),
        done_reason,
        tool_calls,
    })
}

/// Parses one server-sent event of a streamed `/chat/completions` response.
pub fn parse_stream_event(event: &StreamEvent) -> Result<Option<StreamChunk>, AdapterError> {
    let data = event.data.trim();
    if data == "[DONE]" {
        return Ok(Some(StreamChunk {
            done: true,
            ..empty_chunk()
        }));
    }
    if data.is_empty() {
        return Ok(None);
    }
    let body = json_object(data.as_bytes(), "stream event")?;
    if let Some(message) = ErrorShape::OpenAi.message(&body) {
        return Err(upstream(error_code(&body).unwrap_or(0), message));
    }

    let choice = &body["choices"][0];
    let delta = &choice["delta"];
    // Usage normally comes top-level (in a final chunk with no choices); Kimi puts it in the
    // choice instead.
    let usage = if body["usage"].is_object() {
        &body["usage"]
    } else {
        &choice["usage"]
    };
    let done_reason = choice["finish_reason"].as_str().map(str::to_owned);
    let chunk = StreamChunk {
        content: non_empty(&delta["content"]),
        reasoning: reasoning(delta),
        tool_calls: non_empty_array(&delta["tool_calls"]),
        model: body["model"].as_str().map(str::to_owned),
        finish: done_reason.as_deref().map(finish_reason),
        done_reason,
        input_tokens: token_count(&usage["prompt_tokens"]),
        output_tokens: token_count(&usage["completion_tokens"]),
        done: false,
    };
    Ok(carries_something(&chunk).then_some(chunk))
}

/// Builds the `GET /models` request that lists the upstream's models.
pub fn build_models_request() -> HttpRequest {
    get_json("/models", &[])
}

/// Parses a `/models` response of any status.
pub fn parse_models_response(response: &HttpResponse) -> Result<Vec<ModelInfo>, AdapterError> {
    let body = successful_json(response)?;
    openai::model_list(&body, |id, model| ModelInfo {
        id,
        owned_by: model["owned_by"].as_str().map(str::to_owned),
        created: model["created"].as_u64(),
    })
}

/// Converts one chat turn to a Chat Completions message.
fn message_json(index: usize, message: &Message) -> Result<Value, AdapterError> {
    let tool_calls = match &message.tool_calls {
        Some(text) => {
            let calls = parse_json_array(&format!("messages[{index}].tool_calls"), text)?;
            // OpenAI rejects an empty tool_calls array.
            (!calls.is_empty()).then_some(Value::Array(calls))
        }
        None => None,
    };

    let mut out = Map::new();
    out.insert("role".into(), message.role.clone().into());
    // An assistant turn that only calls tools has null content, not "".
    let content = if message.content.is_empty() && tool_calls.is_some() {
        Value::Null
    } else {
        message.content.clone().into()
    };
    out.insert("content".into(), content);
    if let Some(calls) = tool_calls {
        out.insert("tool_calls".into(), calls);
    }
    if let Some(id) = &message.tool_call_id {
        out.insert("tool_call_id".into(), id.clone().into());
    }
    if let Some(name) = &message.name {
        out.insert("name".into(), name.clone().into());
    }
    Ok(Value::Object(out))
}

/// A message's or delta's reasoning text: OpenRouter calls it `reasoning`, Kimi and DeepSeek
/// `reasoning_content`.
fn reasoning(message: &Value) -> Option<String> {
    non_empty(&message["reasoning"]).or_else(|| non_empty(&message["reasoning_content"]))
}

/// The JSON text of an array value, unless it is absent or empty.
fn non_empty_array(value: &Value) -> Option<String> {
    match value {
        Value::Array(items) if !items.is_empty() => Some(value.to_string()),
        _ => None,
    }
}

/// The JSON body of a 2xx response, or the error the response stands for.
fn successful_json(response: &HttpResponse) -> Result<Value, AdapterError> {
    let body = chatd_adapter_kit::json_body(response, ErrorShape::OpenAi)?;
    // OpenRouter reports some upstream failures as an error object with a 200.
    if let Some(message) = ErrorShape::OpenAi.message(&body) {
        return Err(upstream(error_code(&body).unwrap_or(502), message));
    }
    Ok(body)
}

/// An error object's `code` when it is an HTTP error status (OpenAI's own codes are strings).
fn error_code(body: &Value) -> Option<u16> {
    body["error"]["code"]
        .as_u64()
        .filter(|code| (400..=599).contains(code))
        .and_then(|code| u16::try_from(code).ok())
}

#[cfg(test)]
mod tests;
