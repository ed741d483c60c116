//! chatd adapter for OpenAI Chat Completions servers (OpenRouter, OpenCode, Kimi, vLLM, ...).
//!
//! The contract already speaks Chat Completions for tool calls, so those pass through as they
//! are; the adapter's work is mostly in tolerating the servers' differences (reasoning fields,
//! error objects sent with a 200, usage arriving in its own stream chunk).
//!
//! What goes where: text-only content as one string (parts joined by "\n": not every
//! compatible server takes part arrays), anything else as OpenAI content parts, with images
//! as `image_url` parts (a `data:` URL for inline bytes) and `input_audio` / `file` parts
//! passed on as the client sent them; `seed`, `presence_penalty`, `frequency_penalty` and
//! `reasoning_effort` as OpenAI names them; `top_k` and `repetition_penalty` as OpenRouter and
//! vLLM name them (OpenAI itself refuses both: a client that sets them there gets OpenAI's
//! 400); passthrough fields top-level (OpenRouter's `provider`, `transforms`, `reasoning`,
//! ...). `think: false` sends nothing: servers disagree on how to turn reasoning off
//! (OpenRouter's `reasoning.enabled`, Kimi's `thinking`), which passthrough can say. The
//! reasoning a client sends back with an assistant turn is not forwarded: DeepSeek refuses a
//! request that carries it.

// No std in the component (see the kit's `guest` module for why).
#![no_std]

use chatd_adapter_kit::prelude::*;
use chatd_adapter_kit::types::{
    AdapterError, AdapterInfo, AuthScheme, ChatRequest, ChatResponse, ContentPart,
    EmbeddingsRequest, EmbeddingsResponse, HttpRequest, HttpResponse, ImageSource, Message,
    ModelInfo, ModelPage, ResponseFormat, StreamChunk, StreamEvent, StreamFraming, Usage,
};
use chatd_adapter_kit::{
    Adapter, ErrorShape, accept, answer_finish, carries_something, done_chunk, error_code,
    finish_reason, finite, get_json, invalid, joined_text, json_object, malformed, merge_extra,
    non_empty, ollama::vector_f32, openai, other_part, parse_json, parse_json_array,
    percent_encode, post_json, take_text, token_count, upstream_with_code,
};
use serde_json::{Map, Value, json};

/// The capabilities this adapter declares.
const CAPABILITIES: &[&str] = &[
    "tools",
    "images",
    "image-urls",
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

/// Body fields the adapter builds, which passthrough may not set: the answer's parsing
/// depends on them (`stream`, `stream_options`, `encoding_format`) or they are the request.
const OWNED_FIELDS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "input",
    "encoding_format",
];

/// Content part kinds passed on as the client sent them: OpenAI has them and the contract
/// does not.
const NATIVE_PART_KINDS: &[&str] = &["input_audio", "file"];

/// The adapter; it takes no settings.
#[derive(Default)]
pub struct OpenAiCompat;

impl Adapter for OpenAiCompat {
    fn describe() -> AdapterInfo {
        AdapterInfo {
            name: "openai_compat".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            auth: AuthScheme::Bearer,
            default_base_url: "https://openrouter.ai/api/v1".into(),
            supports_streaming: true,
            stream_framing: StreamFraming::Sse,
            capabilities: CAPABILITIES.iter().map(|name| (*name).into()).collect(),
        }
    }

    /// Builds the `POST /chat/completions` request for a chat request.
    fn build_request(&self, request: &ChatRequest) -> Result<HttpRequest, AdapterError> {
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
        for (name, value) in [
            ("temperature", request.temperature),
            ("top_p", request.top_p),
            ("presence_penalty", request.presence_penalty),
            ("frequency_penalty", request.frequency_penalty),
            ("repetition_penalty", request.repeat_penalty),
        ] {
            if let Some(value) = value {
                body.insert(name.into(), finite(name, value)?);
            }
        }
        if let Some(top_k) = request.top_k {
            body.insert("top_k".into(), top_k.into());
        }
        if let Some(seed) = request.seed {
            body.insert("seed".into(), seed.into());
        }
        if !request.stop.is_empty() {
            body.insert("stop".into(), request.stop.clone().into());
        }
        match &request.response_format {
            ResponseFormat::Text => {}
            ResponseFormat::JsonObject => {
                body.insert("response_format".into(), json!({ "type": "json_object" }));
            }
            ResponseFormat::JsonSchema(schema) => {
                let field = "response_format.json_schema.schema";
                let parsed = parse_json(field, &schema.schema)?;
                if !parsed.is_object() {
                    return Err(invalid(format!("{field} must be a JSON object")));
                }
                body.insert(
                    "response_format".into(),
                    json!({ "type": "json_schema", "json_schema": {
                        "name": schema.name, "schema": parsed, "strict": schema.strict,
                    }}),
                );
            }
        }
        if let Some(effort) = reasoning_effort(request) {
            body.insert("reasoning_effort".into(), effort.into());
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
        merge_extra(&mut body, request.extra.as_deref(), OWNED_FIELDS, &[])?;
        let accept = accept(request.stream, StreamFraming::Sse);
        Ok(post_json("/chat/completions", &[], accept, body))
    }

    /// Parses a complete `/chat/completions` response of any status.
    fn parse_response(&self, response: &HttpResponse) -> Result<ChatResponse, AdapterError> {
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
            usage: usage(&body["usage"]),
            finish: answer_finish(done_reason.as_deref(), tool_calls.is_some()),
            done_reason,
            tool_calls,
        })
    }

    /// Parses one server-sent event of a streamed `/chat/completions` response. `[DONE]` is
    /// the end: with `include_usage` the usage comes after the finish reason, in a chunk of
    /// its own.
    fn parse_stream_event(&self, event: &StreamEvent) -> Result<Option<StreamChunk>, AdapterError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(Some(done_chunk()));
        }
        if data.is_empty() {
            return Ok(None);
        }
        let body = json_object(data.as_bytes(), "stream event")?;
        if let Some(message) = ErrorShape::OpenAi.message(&body) {
            let code = error_code(0, &body, &message);
            return Err(upstream_with_code(
                error_status(&body).unwrap_or(0),
                message,
                code,
            ));
        }

        let choice = &body["choices"][0];
        let delta = &choice["delta"];
        // Usage normally comes top-level (in a final chunk with no choices); Kimi puts it in
        // the choice instead.
        let usage_object = if body["usage"].is_object() {
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
            usage: usage(usage_object),
            done: false,
        };
        Ok(carries_something(&chunk).then_some(chunk))
    }

    /// `GET /models`, with `after=<cursor>` for the pages after the first.
    fn build_models_request(&self, cursor: Option<&str>) -> Option<HttpRequest> {
        Some(match cursor {
            None => get_json("/models", &[]),
            Some(cursor) => get_json(&format!("/models?after={}", percent_encode(cursor)), &[]),
        })
    }

    /// Parses a `/models` page of any status: OpenAI-style pagination (`has_more`, `last_id`)
    /// when the server pages, OpenRouter's `context_length` (vLLM's `max_model_len`).
    fn parse_models_response(&self, response: &HttpResponse) -> Result<ModelPage, AdapterError> {
        let body = successful_json(response)?;
        let models = openai::model_list(&body, |id, model| ModelInfo {
            id,
            owned_by: model["owned_by"].as_str().map(str::to_owned),
            created: model["created"].as_u64(),
            context_length: token_count(&model["context_length"])
                .or_else(|| token_count(&model["max_model_len"])),
        })?;
        let next_cursor = if body["has_more"] == true {
            let last = non_empty(&body["last_id"]).or_else(|| models.last().map(|m| m.id.clone()));
            Some(last.ok_or_else(|| malformed("has_more is set on an empty page"))?)
        } else {
            None
        };
        Ok(ModelPage {
            models,
            next_cursor,
        })
    }

    /// `POST /embeddings`, always asking for floats (the host encodes base64 for clients that
    /// want it).
    fn build_embeddings_request(
        &self,
        request: &EmbeddingsRequest,
    ) -> Result<HttpRequest, AdapterError> {
        let mut body = Map::new();
        body.insert("model".into(), request.model.clone().into());
        body.insert("input".into(), request.inputs.clone().into());
        body.insert("encoding_format".into(), "float".into());
        if let Some(dimensions) = request.dimensions {
            body.insert("dimensions".into(), dimensions.into());
        }
        merge_extra(&mut body, request.extra.as_deref(), OWNED_FIELDS, &[])?;
        Ok(post_json("/embeddings", &[], "application/json", body))
    }

    /// Parses an `/embeddings` response of any status; vectors are put in `index` order.
    fn parse_embeddings_response(
        &self,
        response: &HttpResponse,
    ) -> Result<EmbeddingsResponse, AdapterError> {
        let body = successful_json(response)?;
        let data = body["data"]
            .as_array()
            .ok_or_else(|| malformed("response has no \"data\" array"))?;
        let mut indexed = data
            .iter()
            .enumerate()
            .map(|(position, entry)| {
                let field = format!("data[{position}].embedding");
                let index = entry["index"].as_u64().unwrap_or(position as u64);
                Ok((index, vector_f32(&field, &entry["embedding"])?))
            })
            .collect::<Result<Vec<_>, AdapterError>>()?;
        indexed.sort_by_key(|(index, _)| *index);
        Ok(EmbeddingsResponse {
            model: body["model"].as_str().unwrap_or_default().to_owned(),
            embeddings: indexed.into_iter().map(|(_, vector)| vector).collect(),
            input_tokens: token_count(&body["usage"]["prompt_tokens"]),
        })
    }
}

chatd_adapter_kit::export_adapter!(OpenAiCompat);

/// `reasoning_effort`: the client's level, or OpenAI's default level when the client only
/// turned reasoning on.
fn reasoning_effort(request: &ChatRequest) -> Option<String> {
    if request.think == Some(false) {
        return None;
    }
    match (&request.reasoning_effort, request.think) {
        (Some(effort), _) => Some(effort.clone()),
        (None, Some(true)) => Some("medium".into()),
        (None, _) => None,
    }
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
    let content = content_json(index, &message.content)?;
    // An assistant turn that only calls tools has null content, not "".
    let content = if content == "" && tool_calls.is_some() {
        Value::Null
    } else {
        content
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

/// A message's content: one string when it is text only, else OpenAI content parts.
fn content_json(index: usize, content: &[ContentPart]) -> Result<Value, AdapterError> {
    if content
        .iter()
        .all(|part| matches!(part, ContentPart::Text(_)))
    {
        return Ok(joined_text(content).into());
    }
    let field = format!("messages[{index}].content");
    content
        .iter()
        .enumerate()
        .map(|(position, part)| match part {
            ContentPart::Text(text) => Ok(json!({ "type": "text", "text": text })),
            ContentPart::Image(image) => {
                let url = match &image.source {
                    ImageSource::Inline(inline) => {
                        format!("data:{};base64,{}", inline.media_type, inline.base64)
                    }
                    ImageSource::Url(url) => url.clone(),
                };
                let mut image_url = Map::new();
                image_url.insert("url".into(), url.into());
                if let Some(detail) = &image.detail {
                    image_url.insert("detail".into(), detail.clone().into());
                }
                Ok(json!({ "type": "image_url", "image_url": image_url }))
            }
            ContentPart::Other((kind, part)) if NATIVE_PART_KINDS.contains(&kind.as_str()) => {
                let part = parse_json(&format!("{field}[{position}]"), part)?;
                if !part.is_object() {
                    return Err(invalid(format!(
                        "{field}[{position}] must be a JSON object"
                    )));
                }
                Ok(part)
            }
            ContentPart::Other((kind, _)) => Err(other_part(&field, position, kind)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// The usage record of an answer or a stream chunk: reasoning tokens are counted within the
/// completion tokens, as the contract wants them.
fn usage(usage: &Value) -> Usage {
    Usage {
        input_tokens: token_count(&usage["prompt_tokens"]),
        output_tokens: token_count(&usage["completion_tokens"]),
        reasoning_tokens: token_count(&usage["completion_tokens_details"]["reasoning_tokens"]),
        cached_input_tokens: token_count(&usage["prompt_tokens_details"]["cached_tokens"]),
    }
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
        let status = error_status(&body).unwrap_or(502);
        let code = error_code(status, &body, &message);
        return Err(upstream_with_code(status, message, code));
    }
    Ok(body)
}

/// An error object's `code` when it is an HTTP error status (OpenRouter's; OpenAI's own codes
/// are strings).
fn error_status(body: &Value) -> Option<u16> {
    body["error"]["code"]
        .as_u64()
        .filter(|code| (400..=599).contains(code))
        .and_then(|code| u16::try_from(code).ok())
}

#[cfg(test)]
mod tests;
