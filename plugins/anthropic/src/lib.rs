//! chatd adapter for Anthropic's Messages API (`POST /v1/messages`).
//!
//! The contract speaks OpenAI Chat Completions for tool calls, so this adapter translates in
//! both directions: assistant `tool_calls` become `tool_use` blocks, `tool` turns become
//! `tool_result` blocks, and the answer's `tool_use` blocks (or the stream's
//! `content_block_*` events) become OpenAI `tool_calls` again. System turns move to the
//! top-level `system` field, and consecutive turns of one role are merged because Anthropic
//! requires user and assistant turns to alternate. Images become image blocks (a `base64`
//! or a `url` source).
//!
//! A JSON schema is sent as structured outputs (`output_format` with the
//! `structured-outputs-2025-11-13` beta header), which constrain the answer's text: answers
//! and streams parse as usual. A JSON object without a schema has no upstream form and is
//! asked for in the system prompt. Reasoning efforts become thinking budgets; `top_k` is
//! Anthropic's own; it has no seed, penalties or passthrough.

// No std in the component (see the kit's `guest` module for why).
#![no_std]

use chatd_adapter_kit::prelude::*;
use chatd_adapter_kit::types::{
    AdapterError, AdapterInfo, AuthScheme, ChatRequest, ChatResponse, ContentPart, FinishReason,
    HttpRequest, HttpResponse, ImageSource, Message, ModelInfo, ModelPage, ResponseFormat,
    StreamChunk, StreamEvent, StreamFraming, Usage,
};
use chatd_adapter_kit::{
    Adapter, ErrorShape, accept, carries_something, done_chunk, empty_chunk, error_code, finite,
    get_json, invalid, joined_text, json_object, malformed, no_usage, non_empty, openai,
    other_part, parse_json, parse_json_array, percent_encode, post_json, token_count, truncate,
    upstream_with_code,
};
use serde_json::{Map, Value, json};

/// The Messages API version this adapter speaks.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The beta that adds `output_format` (structured outputs: the answer is constrained to a JSON
/// schema).
const STRUCTURED_OUTPUTS_BETA: &str = "structured-outputs-2025-11-13";

/// `max_tokens` is required by Anthropic; this is sent when the request sets none (on top of
/// the thinking budget when thinking is on).
const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Anthropic's smallest thinking budget; the budget must also stay below `max_tokens`.
const MIN_THINKING_BUDGET: u32 = 1024;

/// Anthropic has no JSON-object mode; `json-object` appends this to the system prompt instead.
const JSON_MODE_INSTRUCTION: &str = "Respond with a single JSON object and nothing else.";

/// The capabilities this adapter declares. "json-object" is a system instruction, the model
/// usually complies but nothing upstream enforces it; "json-schema" is enforced.
const CAPABILITIES: &[&str] = &[
    "tools",
    "images",
    "image-urls",
    "json-schema",
    "json-object",
    "reasoning",
    "top-k",
];

/// The adapter; it takes no settings.
#[derive(Default)]
pub struct Anthropic;

impl Adapter for Anthropic {
    fn describe() -> AdapterInfo {
        AdapterInfo {
            name: "anthropic".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // The host adds the key; this adapter never sees it.
            auth: AuthScheme::Header("x-api-key".into()),
            default_base_url: "https://api.anthropic.com".into(),
            supports_streaming: true,
            stream_framing: StreamFraming::Sse,
            capabilities: CAPABILITIES.iter().map(|name| (*name).into()).collect(),
        }
    }

    /// Builds the `POST /v1/messages` request for a chat request.
    fn build_request(&self, request: &ChatRequest) -> Result<HttpRequest, AdapterError> {
        let mut system_parts = Vec::new();
        for (index, message) in request.messages.iter().enumerate() {
            if message.role == "system" {
                let text = chatd_adapter_kit::text_only(
                    &format!("messages[{index}].content"),
                    &message.content,
                )?;
                if !text.is_empty() {
                    system_parts.push(text);
                }
            }
        }
        let mut headers = vec![("anthropic-version", ANTHROPIC_VERSION)];
        let mut output_format = None;
        match &request.response_format {
            ResponseFormat::Text => {}
            // No JSON-object mode upstream: an instruction, which the model usually follows.
            ResponseFormat::JsonObject => system_parts.push(JSON_MODE_INSTRUCTION.into()),
            // Structured outputs constrain the answer text itself, so answers and streams parse
            // as usual. (A forced tool would need to know, when parsing, that the tool call is
            // the answer, and adapters are stateless.)
            ResponseFormat::JsonSchema(schema) => {
                let field = "response_format.json_schema.schema";
                let schema = parse_json(field, &schema.schema)?;
                if !schema.is_object() {
                    return Err(invalid(format!("{field} must be a JSON object")));
                }
                output_format = Some(json!({ "type": "json_schema", "schema": schema }));
                headers.push(("anthropic-beta", STRUCTURED_OUTPUTS_BETA));
            }
        }
        let messages = turns(&request.messages)?;
        if messages.is_empty() {
            return Err(invalid(
                "the request has no user, assistant or tool messages",
            ));
        }

        let budget = thinking_budget(request)?;
        let max_tokens = match (request.max_tokens, budget) {
            (Some(max_tokens), _) => max_tokens,
            (None, Some(budget)) => budget.saturating_add(DEFAULT_MAX_TOKENS),
            (None, None) => DEFAULT_MAX_TOKENS,
        };
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
        if let Some(top_k) = request.top_k {
            body.insert("top_k".into(), top_k.into());
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
        if let Some(budget) = budget {
            // The budget must stay below max_tokens; a client's small max_tokens shrinks it,
            // down to Anthropic's minimum.
            let budget = budget.min(max_tokens.saturating_sub(1));
            if budget < MIN_THINKING_BUDGET {
                return Err(invalid(format!(
                    "thinking needs max_tokens above {MIN_THINKING_BUDGET} (got {max_tokens})"
                )));
            }
            body.insert(
                "thinking".into(),
                json!({ "type": "enabled", "budget_tokens": budget }),
            );
        }
        if let Some(output_format) = output_format {
            body.insert("output_format".into(), output_format);
        }

        let accept = accept(request.stream, StreamFraming::Sse);
        Ok(post_json("/v1/messages", &headers, accept, body))
    }

    /// Parses a complete `/v1/messages` response of any status.
    fn parse_response(&self, response: &HttpResponse) -> Result<ChatResponse, AdapterError> {
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
                Some("thinking") => {
                    reasoning.push_str(block["thinking"].as_str().unwrap_or_default())
                }
                Some("tool_use") => {
                    let id = block["id"]
                        .as_str()
                        .ok_or_else(|| malformed(format!("content[{index}] tool_use has no id")))?;
                    let name = block["name"].as_str().ok_or_else(|| {
                        malformed(format!("content[{index}] tool_use has no name"))
                    })?;
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
            usage: usage(&body["usage"]),
            finish: done_reason.as_deref().map(finish_reason),
            done_reason,
            tool_calls: (!tool_calls.is_empty()).then(|| Value::Array(tool_calls).to_string()),
        })
    }

    /// Parses one server-sent event of a streamed `/v1/messages` response.
    fn parse_stream_event(&self, event: &StreamEvent) -> Result<Option<StreamChunk>, AdapterError> {
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
                    // Output tokens come, cumulative, with message_delta.
                    usage: Usage {
                        output_tokens: None,
                        ..usage(&message["usage"])
                    },
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
                let usage = &body["usage"];
                StreamChunk {
                    finish: done_reason.as_deref().map(finish_reason),
                    done_reason,
                    // Input counts here are only present when they changed (server tools).
                    usage: if usage["input_tokens"].is_null() {
                        Usage {
                            output_tokens: token_count(&usage["output_tokens"]),
                            ..no_usage()
                        }
                    } else {
                        self::usage(usage)
                    },
                    ..empty_chunk()
                }
            }
            "message_stop" => done_chunk(),
            "error" => {
                let message = ErrorShape::Anthropic
                    .message(&body)
                    .unwrap_or_else(|| truncate(data));
                let code = error_code(0, &body, &message);
                return Err(upstream_with_code(0, message, code));
            }
            // ping, content_block_stop and event types Anthropic may add later.
            _ => empty_chunk(),
        };
        // Only `message_start` names the model, so here the model alone is worth passing on.
        Ok((chunk.model.is_some() || carries_something(&chunk)).then_some(chunk))
    }

    /// `GET /v1/models`, 1000 models a page (Anthropic's most), after `after_id` for the pages
    /// after the first.
    fn build_models_request(&self, cursor: Option<&str>) -> Option<HttpRequest> {
        let path = match cursor {
            None => "/v1/models?limit=1000".to_owned(),
            Some(cursor) => format!("/v1/models?limit=1000&after_id={}", percent_encode(cursor)),
        };
        Some(get_json(&path, &[("anthropic-version", ANTHROPIC_VERSION)]))
    }

    /// Parses a `/v1/models` page of any status.
    fn parse_models_response(&self, response: &HttpResponse) -> Result<ModelPage, AdapterError> {
        let body = successful_json(response)?;
        let models = openai::model_list(&body, |id, model| ModelInfo {
            id,
            owned_by: Some("anthropic".into()),
            created: model["created_at"].as_str().and_then(unix_seconds),
            context_length: None,
        })?;
        let next_cursor = match (&body["has_more"], non_empty(&body["last_id"])) {
            (Value::Bool(true), Some(last)) => Some(last),
            (Value::Bool(true), None) => {
                return Err(malformed("has_more is set without a last_id"));
            }
            _ => None,
        };
        Ok(ModelPage {
            models,
            next_cursor,
        })
    }
}

chatd_adapter_kit::export_adapter!(Anthropic);

/// The thinking budget a request asks for, from its effort (`None`: no thinking). Anthropic
/// sets a budget of tokens rather than a level; these follow the spacing of OpenAI's levels.
fn thinking_budget(request: &ChatRequest) -> Result<Option<u32>, AdapterError> {
    if request.think == Some(false) {
        return Ok(None);
    }
    Ok(match request.reasoning_effort.as_deref() {
        Some("minimal") => Some(MIN_THINKING_BUDGET),
        Some("low") => Some(2048),
        Some("medium") => Some(8192),
        Some("high") => Some(16384),
        Some(other) => {
            return Err(invalid(format!(
                "reasoning_effort {other:?} is not one of \"minimal\", \"low\", \"medium\", \"high\""
            )));
        }
        None if request.think == Some(true) => Some(MIN_THINKING_BUDGET),
        None => None,
    })
}

/// Anthropic's usage: its `input_tokens` leaves out the tokens read from and written to the
/// prompt cache; the contract counts every input token, cached ones included, as OpenAI does.
fn usage(usage: &Value) -> Usage {
    let input = token_count(&usage["input_tokens"]);
    let cache_read = token_count(&usage["cache_read_input_tokens"]);
    let cache_write = token_count(&usage["cache_creation_input_tokens"]);
    Usage {
        input_tokens: input.map(|input| {
            input
                .saturating_add(cache_read.unwrap_or(0))
                .saturating_add(cache_write.unwrap_or(0))
        }),
        output_tokens: token_count(&usage["output_tokens"]),
        reasoning_tokens: None,
        cached_input_tokens: cache_read,
    }
}

/// Unix seconds of an RFC 3339 time in UTC or with an offset (`2025-02-19T00:00:00Z`).
fn unix_seconds(text: &str) -> Option<u64> {
    let number = |range: core::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // Skip fractional seconds, then read the zone.
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        rest = fraction.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let [h1, h2, m1, m2] = digits.map(|d| i64::from(d - b'0'));
            let minutes = (h1 * 10 + h2) * 60 + m1 * 10 + m2;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    u64::try_from(seconds).ok()
}

/// Converts the non-system turns to Anthropic messages: content as blocks, tool turns as
/// `tool_result` blocks in a user turn, consecutive same-role turns merged.
fn turns(messages: &[Message]) -> Result<Vec<Value>, AdapterError> {
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        let (role, blocks) = match message.role.as_str() {
            "system" => continue,
            "user" => ("user", content_blocks(index, &message.content)?),
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

/// A message's content as Anthropic blocks: a text block per non-empty text part (Anthropic
/// rejects empty ones), an image block per image (`base64` or `url` source).
fn content_blocks(index: usize, content: &[ContentPart]) -> Result<Vec<Value>, AdapterError> {
    let mut blocks = Vec::with_capacity(content.len());
    for (position, part) in content.iter().enumerate() {
        match part {
            ContentPart::Text(text) if text.is_empty() => {}
            ContentPart::Text(text) => blocks.push(json!({ "type": "text", "text": text })),
            ContentPart::Image(image) => {
                let source = match &image.source {
                    ImageSource::Inline(inline) => json!({
                        "type": "base64", "media_type": inline.media_type, "data": inline.base64,
                    }),
                    ImageSource::Url(url) => json!({ "type": "url", "url": url }),
                };
                blocks.push(json!({ "type": "image", "source": source }));
            }
            ContentPart::Other((kind, _)) => {
                return Err(other_part(
                    &format!("messages[{index}].content"),
                    position,
                    kind,
                ));
            }
        }
    }
    Ok(blocks)
}

/// An assistant turn's content blocks and `tool_use` blocks. The reasoning a client sends back
/// is left out: Anthropic takes earlier thinking only as the signed blocks it produced, and
/// the contract carries the text alone.
fn assistant_blocks(index: usize, message: &Message) -> Result<Vec<Value>, AdapterError> {
    let mut blocks = content_blocks(index, &message.content)?;
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

/// A tool turn as a `tool_result` block: its text, or its blocks when it holds images.
fn tool_result_block(index: usize, message: &Message) -> Result<Value, AdapterError> {
    let id = message
        .tool_call_id
        .as_deref()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| invalid(format!("messages[{index}] (role tool) has no tool_call_id")))?;
    let content = if message
        .content
        .iter()
        .all(|part| matches!(part, ContentPart::Text(_)))
    {
        joined_text(&message.content).into()
    } else {
        Value::Array(content_blocks(index, &message.content)?)
    };
    Ok(json!({ "type": "tool_result", "tool_use_id": id, "content": content }))
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
        let message = ErrorShape::Anthropic
            .message(&body)
            .unwrap_or_else(|| truncate(&body.to_string()));
        let code = error_code(502, &body, &message);
        return Err(upstream_with_code(502, message, code));
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
