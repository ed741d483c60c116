//! chatd adapter for Anthropic's Messages API (`POST /v1/messages`).
//!
//! The contract speaks OpenAI Chat Completions for tool calls, so this adapter translates in
//! both directions: assistant `tool_calls` become `tool_use` blocks, `tool` turns become
//! `tool_result` blocks, and the answer's `tool_use` blocks (or the stream's
//! `content_block_*` events) become OpenAI `tool_calls` again. System turns move to the
//! top-level `system` field, and consecutive turns of one role are merged because Anthropic
//! requires user and assistant turns to alternate.

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
    AdapterError, AdapterInfo, AuthScheme, ChatRequest, ChatResponse, FinishReason, HttpRequest,
    HttpResponse, Message, StreamChunk, StreamEvent, StreamFraming,
};
use chatd_adapter_kit::{
    ErrorShape, accept, carries_something, empty_chunk, finite, get_json, invalid, json_object,
    malformed, non_empty, openai, parse_json, parse_json_array, post_json, token_count, truncate,
    upstream,
};
use exports::lakehouse::provider::models::ModelInfo;
use serde_json::{Map, Value, json};

/// The Messages API version this adapter speaks.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// `max_tokens` is required by Anthropic; this is sent when the request sets none.
const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Thinking budget sent when the request asks for reasoning (Anthropic's minimum is 1024, and
/// it must be below `max_tokens`).
const THINKING_BUDGET_TOKENS: u32 = 1024;

/// Anthropic has no JSON mode; `json-mode` appends this to the system prompt instead.
const JSON_MODE_INSTRUCTION: &str = "Respond with a single JSON object and nothing else.";

/// The adapter's self-description.
pub fn describe() -> AdapterInfo {
    AdapterInfo {
        name: "anthropic".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        // The host adds the key; this adapter never sees it.
        auth: AuthScheme::Header("x-api-key".into()),
        default_base_url: "https://api.anthropic.com".into(),
        supports_streaming: true,
        stream_framing: StreamFraming::Sse,
    }
}

/// Builds the `POST /v1/messages` request for a chat request.
pub fn build_request(request: &ChatRequest) -> Result<HttpRequest, AdapterError> {
    let mut system_parts: Vec<&str> = request
        .messages
        .iter()
        .filter(|message| message.role == "system")
        .map(|message| message.content.as_str())
        .filter(|text| !text.is_empty())
        .collect();
    // Anthropic has no JSON mode (no `response_format`), so json-mode is expressed as a system
    // instruction; the model usually complies, but nothing upstream enforces it.
    if request.json_mode {
        system_parts.push(JSON_MODE_INSTRUCTION);
    }
    let messages = turns(&request.messages)?;
    if messages.is_empty() {
        return Err(invalid(
            "the request has no user, assistant or tool messages",
        ));
    }

    let max_tokens = request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let mut body = Map::new();
    body.insert("model".into(), request.model.clone().into());
    body.insert("max_tokens".into(), max_tokens.into());
    if !system_parts.is_empty() {
        body.insert("system".into(), system_parts.join("\n\n").into());
    }
    body.insert("messages".into(), Value::Array(messages));
    if let Some(temperature) = request.temperature {
        body.insert("temperature".into(), finite("temperature", temperature)?);
    }
    if let Some(top_p) = request.top_p {
        body.insert("top_p".into(), finite("top_p", top_p)?);
    }
    if !request.stop.is_empty() {
        body.insert("stop_sequences".into(), request.stop.clone().into());
    }
    if request.stream {
        body.insert("stream".into(), true.into());
    }
    if let Some((tools, choice)) = tools(request)? {
        body.insert("tools".into(), tools);
        if let Some(choice) = choice {
            body.insert("tool_choice".into(), choice);
        }
    }
    if request.think == Some(true) {
        if max_tokens <= THINKING_BUDGET_TOKENS {
            return Err(invalid(format!(
                "thinking needs max_tokens above {THINKING_BUDGET_TOKENS} (got {max_tokens})"
            )));
        }
        body.insert(
            "thinking".into(),
            json!({ "type": "enabled", "budget_tokens": THINKING_BUDGET_TOKENS }),
        );
    }

    let accept = accept(request.stream, StreamFraming::Sse);
    let version = [("anthropic-version", ANTHROPIC_VERSION)];
    Ok(post_json("/v1/messages", &version, accept, body))
}

/// Parses a complete `/v1/messages` response of any status.
pub fn parse_response(response: &HttpResponse) -> Result<ChatResponse, AdapterError> {
    let body = successful_json(response)?;
    let blocks = body["content"]
        .as_array()
        .ok_or_else(|| malformed("response has no \"content\" array"))?;

    let mut content = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for (index, block) in blocks.iter().enumerate() {
        match block["type"].as_str() {
            Some("text") => content.push_str(block["text"].as_str().unwrap_or_default()),
            Some("thinking") => reasoning.push_str(block["thinking"].as_str().unwrap_or_default()),
            Some("tool_use") => {
                let id = block["id"]
                    .as_str()
                    .ok_or_else(|| malformed(format!("content[{index}] tool_use has no id")))?;
                let name = block["name"]
                    .as_str()
                    .ok_or_else(|| malformed(format!("content[{index}] tool_use has no name")))?;
                let arguments = match &block["input"] {
                    Value::Null => "{}".to_owned(),
                    input => input.to_string(),
                };
                tool_calls.push(openai::tool_call(id, name, arguments));
            }
            // redacted_thinking, server tool blocks and future block types carry nothing the
            // contract can hold.
            _ => {}
        }
    }

    let done_reason = body["stop_reason"].as_str().map(str::to_owned);
    Ok(ChatResponse {
        content,
        reasoning: (!reasoning.is_empty()).then_some(reasoning),
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        input_tokens: token_count(&body["usage"]["input_tokens"]),
        output_tokens: token_count(&body["usage"]["output_tokens"]),
        finish: done_reason.as_deref().map(finish_reason),
        done_reason,
        tool_calls: (!tool_calls.is_empty()).then(|| Value::Array(tool_calls).to_string()),
    })
}

/// Parses one server-sent event of a streamed `/v1/messages` response.
pub fn parse_stream_event(event: &StreamEvent) -> Result<Option<StreamChunk>, AdapterError> {
    let data = event.data.trim();
    if data.is_empty() {
        return Ok(None);
    }
    let body = json_object(data.as_bytes(), "stream event")?;
    // The `event:` name and the data's `type` agree; the name wins when both are present.
    let kind = event
        .event
        .as_deref()
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .or_else(|| body["type"].as_str())
        .unwrap_or_default();

    let chunk = match kind {
        "message_start" => {
            let message = &body["message"];
            StreamChunk {
                model: non_empty(&message["model"]),
                input_tokens: token_count(&message["usage"]["input_tokens"]),
                ..empty_chunk()
            }
        }
        "content_block_start" => {
            let block = &body["content_block"];
            match block["type"].as_str() {
                Some("tool_use") => StreamChunk {
                    tool_calls: Some(
                        json!([openai::tool_call_delta(
                            body["index"].clone(),
                            block["id"].clone(),
                            block["name"].clone(),
                            "",
                        )])
                        .to_string(),
                    ),
                    ..empty_chunk()
                },
                // Text and thinking blocks normally start empty; pass on any text they carry.
                Some("text") => StreamChunk {
                    content: non_empty(&block["text"]),
                    ..empty_chunk()
                },
                Some("thinking") => StreamChunk {
                    reasoning: non_empty(&block["thinking"]),
                    ..empty_chunk()
                },
                _ => empty_chunk(),
            }
        }
        "content_block_delta" => {
            let delta = &body["delta"];
            match delta["type"].as_str() {
                Some("text_delta") => StreamChunk {
                    content: non_empty(&delta["text"]),
                    ..empty_chunk()
                },
                Some("thinking_delta") => StreamChunk {
                    reasoning: non_empty(&delta["thinking"]),
                    ..empty_chunk()
                },
                Some("input_json_delta") => match delta["partial_json"].as_str() {
                    Some(partial) if !partial.is_empty() => StreamChunk {
                        tool_calls: Some(
                            json!([{
                                "index": body["index"],
                                "function": { "arguments": partial },
                            }])
                            .to_string(),
                        ),
                        ..empty_chunk()
                    },
                    _ => empty_chunk(),
                },
                // signature_delta, citations_delta and future delta types.
                _ => empty_chunk(),
            }
        }
        "message_delta" => {
            let done_reason = body["delta"]["stop_reason"].as_str().map(str::to_owned);
            StreamChunk {
                finish: done_reason.as_deref().map(finish_reason),
                done_reason,
                input_tokens: token_count(&body["usage"]["input_tokens"]),
                output_tokens: token_count(&body["usage"]["output_tokens"]),
                ..empty_chunk()
            }
        }
        "message_stop" => StreamChunk {
            done: true,
            ..empty_chunk()
        },
        "error" => {
            let message = ErrorShape::Anthropic.message(&body);
            return Err(upstream(0, message.unwrap_or_else(|| truncate(data))));
        }
        // ping, content_block_stop and event types Anthropic may add later.
        _ => empty_chunk(),
    };
    // Only `message_start` names the model, so here the model alone is worth passing on.
    Ok((chunk.model.is_some() || carries_something(&chunk)).then_some(chunk))
}

/// Builds the `GET /v1/models` request that lists the upstream's models.
pub fn build_models_request() -> HttpRequest {
    get_json("/v1/models", &[("anthropic-version", ANTHROPIC_VERSION)])
}

/// Parses a `/v1/models` response of any status.
pub fn parse_models_response(response: &HttpResponse) -> Result<Vec<ModelInfo>, AdapterError> {
    let body = successful_json(response)?;
    openai::model_list(&body, |id, _| ModelInfo {
        id,
        owned_by: Some("anthropic".into()),
        // `created_at` is an RFC 3339 string; the contract wants Unix seconds and the adapter
        // has no date library, so it is left out.
        created: None,
    })
}

/// Converts the non-system turns to Anthropic messages: content as blocks, tool turns as
/// `tool_result` blocks in a user turn, consecutive same-role turns merged.
fn turns(messages: &[Message]) -> Result<Vec<Value>, AdapterError> {
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        let (role, blocks) = match message.role.as_str() {
            "system" => continue,
            "user" => ("user", text_block(&message.content).into_iter().collect()),
            "assistant" => ("assistant", assistant_blocks(index, message)?),
            "tool" => ("user", vec![tool_result_block(index, message)?]),
            other => {
                return Err(invalid(format!(
                    "messages[{index}] has unsupported role {other:?}"
                )));
            }
        };
        // Anthropic rejects empty content; a turn with nothing to say is left out.
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last_role, last_blocks)) if *last_role == role => last_blocks.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    Ok(turns
        .into_iter()
        .map(|(role, mut blocks)| {
            // In a user turn, Anthropic wants tool results before any text; a stable sort keeps
            // each group in its original order.
            if role == "user" {
                blocks.sort_by_key(|block| block["type"] != "tool_result");
            }
            json!({ "role": role, "content": blocks })
        })
        .collect())
}

/// A text block, unless the text is empty (Anthropic rejects empty text blocks).
fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({ "type": "text", "text": text }))
}

/// An assistant turn's text block and `tool_use` blocks.
fn assistant_blocks(index: usize, message: &Message) -> Result<Vec<Value>, AdapterError> {
    let mut blocks: Vec<Value> = text_block(&message.content).into_iter().collect();
    let Some(text) = &message.tool_calls else {
        return Ok(blocks);
    };
    let field = format!("messages[{index}].tool_calls");
    let calls = parse_json_array(&field, text)?;
    for (position, call) in calls.iter().enumerate() {
        let field = format!("{field}[{position}]");
        let id = call["id"]
            .as_str()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| invalid(format!("{field} has no id")))?;
        let function = &call["function"];
        let name = function["name"]
            .as_str()
            .filter(|name| !name.is_empty())
            .ok_or_else(|| invalid(format!("{field} has no function.name")))?;
        let input = openai::arguments_object(
            &format!("{field}.function.arguments"),
            &function["arguments"],
        )?;
        blocks.push(json!({ "type": "tool_use", "id": id, "name": name, "input": input }));
    }
    Ok(blocks)
}

/// A tool turn as a `tool_result` block.
fn tool_result_block(index: usize, message: &Message) -> Result<Value, AdapterError> {
    let id = message
        .tool_call_id
        .as_deref()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| invalid(format!("messages[{index}] (role tool) has no tool_call_id")))?;
    Ok(json!({ "type": "tool_result", "tool_use_id": id, "content": message.content }))
}

/// The `tools` and `tool_choice` fields, or `None` when no tools are to be sent.
fn tools(request: &ChatRequest) -> Result<Option<(Value, Option<Value>)>, AdapterError> {
    let Some(text) = &request.tools else {
        return Ok(None);
    };
    let tools = parse_json_array("tools", text)?;
    if tools.is_empty() {
        return Ok(None);
    }
    let choice = match &request.tool_choice {
        None => None,
        Some(text) => match parse_json("tool_choice", text)? {
            Value::Null => None,
            // Anthropic has its own "none", but leaving the tools out is understood by every
            // API version.
            Value::String(choice) if choice == "none" => return Ok(None),
            Value::String(choice) if choice == "auto" => Some(json!({ "type": "auto" })),
            Value::String(choice) if choice == "required" => Some(json!({ "type": "any" })),
            object @ Value::Object(_) => {
                let name = object["function"]["name"]
                    .as_str()
                    .filter(|name| !name.is_empty())
                    .ok_or_else(|| invalid("tool_choice object has no function.name"))?;
                Some(json!({ "type": "tool", "name": name }))
            }
            other => return Err(invalid(format!("unsupported tool_choice {other}"))),
        },
    };
    let tools = tools
        .iter()
        .enumerate()
        .map(|(index, tool)| {
            let function = &tool["function"];
            let name = function["name"]
                .as_str()
                .filter(|name| !name.is_empty())
                .ok_or_else(|| invalid(format!("tools[{index}] has no function.name")))?;
            let mut out = Map::new();
            out.insert("name".into(), name.into());
            if let Some(description) = function["description"].as_str() {
                out.insert("description".into(), description.into());
            }
            let schema = match &function["parameters"] {
                Value::Null => json!({ "type": "object" }),
                parameters => parameters.clone(),
            };
            out.insert("input_schema".into(), schema);
            Ok(Value::Object(out))
        })
        .collect::<Result<Vec<_>, AdapterError>>()?;
    Ok(Some((Value::Array(tools), choice)))
}

/// The JSON body of a 2xx response, or the error the response stands for.
fn successful_json(response: &HttpResponse) -> Result<Value, AdapterError> {
    let body = chatd_adapter_kit::json_body(response, ErrorShape::Anthropic)?;
    // Not expected with a 2xx, but an error object is an error whatever the status.
    if body["type"] == "error" {
        let message = ErrorShape::Anthropic.message(&body);
        return Err(upstream(
            502,
            message.unwrap_or_else(|| truncate(&body.to_string())),
        ));
    }
    Ok(body)
}

/// Maps an Anthropic stop reason onto the contract's enum.
fn finish_reason(raw: &str) -> FinishReason {
    match raw {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

#[cfg(test)]
mod tests;
