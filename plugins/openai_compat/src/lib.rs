//! chatd adapter for OpenAI Chat Completions servers (OpenRouter, OpenCode, Kimi, ...).
//!
//! The contract already speaks Chat Completions for tool calls, so those pass through as they
//! are; the adapter's work is mostly in tolerating the servers' differences (reasoning fields,
//! error objects sent with a 200, usage arriving in its own stream chunk).

// No `world:`: the package has exactly one world, so the bindings need not depend on its name.
wit_bindgen::generate!({ path: "../../wit/0.2.0" });

use exports::lakehouse::provider::adapter::Guest as AdapterGuest;
use exports::lakehouse::provider::models::{Guest as ModelsGuest, ModelInfo};
use lakehouse::provider::types::{
    AdapterError, AdapterInfo, AuthScheme, ChatRequest, ChatResponse, FinishReason, HttpRequest,
    HttpResponse, Message, RateLimit, StreamChunk, StreamEvent, StreamFraming, UpstreamFailure,
};
use serde_json::{Map, Value, json};

/// Upstream text copied into an error message is cut to this many characters.
const MAX_ERROR_CHARS: usize = 500;

/// The exported component; every call delegates to a plain function of this crate.
struct Component;

impl AdapterGuest for Component {
    fn describe() -> AdapterInfo {
        crate::describe()
    }

    fn build_request(request: ChatRequest) -> Result<HttpRequest, AdapterError> {
        crate::build_request(&request)
    }

    fn parse_response(response: HttpResponse) -> Result<ChatResponse, AdapterError> {
        crate::parse_response(&response)
    }

    fn parse_stream_event(event: StreamEvent) -> Result<Option<StreamChunk>, AdapterError> {
        crate::parse_stream_event(&event)
    }
}

impl ModelsGuest for Component {
    fn build_models_request() -> Option<HttpRequest> {
        Some(crate::build_models_request())
    }

    fn parse_models_response(response: HttpResponse) -> Result<Vec<ModelInfo>, AdapterError> {
        crate::parse_models_response(&response)
    }
}

// Export symbols are named after WIT paths ("lakehouse:provider/adapter@0.2.0#..."), which only
// a wasm linker accepts; native builds exist for the unit tests.
#[cfg(target_arch = "wasm32")]
export!(Component);

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
        let tools = parse_json("tools", tools)?;
        if !tools.is_array() {
            return Err(invalid("tools must be a JSON array"));
        }
        body.insert("tools".into(), tools);
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

    let accept = if request.stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    Ok(HttpRequest {
        method: "POST".into(),
        path: "/chat/completions".into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("accept".into(), accept.into()),
        ],
        body: Value::Object(body).to_string().into_bytes(),
    })
}

/// Parses a complete `/chat/completions` response of any status.
pub fn parse_response(response: &HttpResponse) -> Result<ChatResponse, AdapterError> {
    let body = successful_json(response)?;
    let choice = body["choices"]
        .as_array()
        .and_then(|choices| choices.first())
        .ok_or_else(|| malformed("upstream returned zero choices"))?;
    let message = &choice["message"];
    if !message.is_object() {
        return Err(malformed("choices[0].message is missing"));
    }
    let content = match &message["content"] {
        Value::String(content) => content.clone(),
        Value::Null => String::new(),
        _ => return Err(malformed("choices[0].message.content is not a string")),
    };
    let tool_calls = non_empty_array(&message["tool_calls"]);
    let done_reason = choice["finish_reason"].as_str().map(str::to_owned);
    Ok(ChatResponse {
        content,
        reasoning: reasoning(message),
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
    let body: Value = serde_json::from_str(data)
        .map_err(|error| malformed(format!("stream event is not JSON: {error}")))?;
    if !body.is_object() {
        return Err(malformed("stream event is not a JSON object"));
    }
    if let Some(message) = error_text(&body) {
        return Err(AdapterError::Upstream(UpstreamFailure {
            status: error_code(&body).unwrap_or(0),
            message: truncate(&message),
        }));
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
    // Every chunk names the model, so the model alone does not make an event worth passing on.
    let carries_something = chunk.content.is_some()
        || chunk.reasoning.is_some()
        || chunk.tool_calls.is_some()
        || chunk.done_reason.is_some()
        || chunk.input_tokens.is_some()
        || chunk.output_tokens.is_some();
    Ok(carries_something.then_some(chunk))
}

/// Builds the `GET /models` request that lists the upstream's models.
pub fn build_models_request() -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        path: "/models".into(),
        headers: vec![("accept".into(), "application/json".into())],
        body: Vec::new(),
    }
}

/// Parses a `/models` response of any status.
pub fn parse_models_response(response: &HttpResponse) -> Result<Vec<ModelInfo>, AdapterError> {
    let body = successful_json(response)?;
    let models = body["data"]
        .as_array()
        .ok_or_else(|| malformed("response has no \"data\" array"))?;
    models
        .iter()
        .enumerate()
        .map(|(index, model)| {
            let id = model["id"]
                .as_str()
                .ok_or_else(|| malformed(format!("data[{index}] has no id")))?;
            Ok(ModelInfo {
                id: id.to_owned(),
                owned_by: model["owned_by"].as_str().map(str::to_owned),
                created: model["created"].as_u64(),
            })
        })
        .collect()
}

/// Converts one chat turn to a Chat Completions message.
fn message_json(index: usize, message: &Message) -> Result<Value, AdapterError> {
    let tool_calls = match &message.tool_calls {
        Some(text) => {
            let field = format!("messages[{index}].tool_calls");
            match parse_json(&field, text)? {
                // OpenAI rejects an empty tool_calls array.
                Value::Array(calls) if calls.is_empty() => None,
                calls @ Value::Array(_) => Some(calls),
                _ => return Err(invalid(format!("{field} must be a JSON array"))),
            }
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
    if !(200..300).contains(&response.status) {
        return Err(status_error(response));
    }
    let body: Value = serde_json::from_slice(&response.body)
        .map_err(|error| malformed(format!("response body is not JSON: {error}")))?;
    if !body.is_object() {
        return Err(malformed("response body is not a JSON object"));
    }
    // OpenRouter reports some upstream failures as an error object with a 200.
    if let Some(message) = error_text(&body) {
        return Err(AdapterError::Upstream(UpstreamFailure {
            status: error_code(&body).unwrap_or(502),
            message: truncate(&message),
        }));
    }
    Ok(body)
}

/// The error a non-2xx response stands for.
fn status_error(response: &HttpResponse) -> AdapterError {
    let message = error_message(response.status, &response.body);
    if response.status == 429 {
        AdapterError::RateLimited(RateLimit {
            message,
            retry_after_secs: retry_after(&response.headers),
        })
    } else {
        AdapterError::Upstream(UpstreamFailure {
            status: response.status,
            message,
        })
    }
}

/// The most useful error text in an error body, truncated.
fn error_message(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|body| error_text(&body))
        .unwrap_or_else(|| text.trim().to_owned());
    if message.is_empty() {
        format!("HTTP {status}")
    } else {
        truncate(&message)
    }
}

/// The message of an OpenAI (`{"error": {"message": "..."}}`) or Ollama (`{"error": "..."}`)
/// error body.
fn error_text(body: &Value) -> Option<String> {
    match &body["error"] {
        Value::String(message) => Some(message.clone()),
        Value::Object(error) => Some(match error.get("message").and_then(Value::as_str) {
            Some(message) => message.to_owned(),
            None => Value::Object(error.clone()).to_string(),
        }),
        _ => None,
    }
}

/// An error object's `code` when it is an HTTP error status (OpenAI's own codes are strings).
fn error_code(body: &Value) -> Option<u16> {
    body["error"]["code"]
        .as_u64()
        .filter(|code| (400..=599).contains(code))
        .and_then(|code| u16::try_from(code).ok())
}

/// The `retry-after` header, when it is a whole number of seconds.
fn retry_after(headers: &[(String, String)]) -> Option<u32> {
    headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, value)| value.trim().parse().ok())
}

/// Maps an upstream stop reason onto the contract's enum.
fn finish_reason(raw: &str) -> FinishReason {
    match raw {
        "stop" | "end_turn" | "stop_sequence" => FinishReason::Stop,
        "length" | "max_tokens" => FinishReason::Length,
        "tool_calls" | "tool_use" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

/// The finish reason of a complete answer.
fn answer_finish(done_reason: Option<&str>, has_tool_calls: bool) -> Option<FinishReason> {
    let finish = done_reason.map(finish_reason);
    match finish {
        // Some servers say "stop" when a turn ends in tool calls.
        None | Some(FinishReason::Stop | FinishReason::Other) if has_tool_calls => {
            Some(FinishReason::ToolCalls)
        }
        _ => finish,
    }
}

/// A stream chunk that carries nothing.
fn empty_chunk() -> StreamChunk {
    StreamChunk {
        content: None,
        reasoning: None,
        tool_calls: None,
        model: None,
        done_reason: None,
        finish: None,
        input_tokens: None,
        output_tokens: None,
        done: false,
    }
}

/// Cuts upstream text to `MAX_ERROR_CHARS` characters.
fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

/// A string value, unless it is absent or empty.
fn non_empty(value: &Value) -> Option<String> {
    value
        .as_str()
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

/// A token count, unless it is absent or does not fit.
fn token_count(value: &Value) -> Option<u32> {
    value.as_u64().and_then(|count| u32::try_from(count).ok())
}

/// A JSON number for a float parameter; JSON has no NaN or infinity.
fn finite(field: &str, value: f64) -> Result<Value, AdapterError> {
    serde_json::Number::from_f64(value)
        .map(Value::Number)
        .ok_or_else(|| invalid(format!("{field} must be a finite number")))
}

/// Parses the JSON text of request field `field`.
fn parse_json(field: &str, text: &str) -> Result<Value, AdapterError> {
    serde_json::from_str(text)
        .map_err(|error| invalid(format!("{field} is not valid JSON: {error}")))
}

fn invalid(message: impl Into<String>) -> AdapterError {
    AdapterError::InvalidRequest(message.into())
}

fn malformed(message: impl Into<String>) -> AdapterError {
    AdapterError::MalformedResponse(message.into())
}

#[cfg(test)]
mod tests;
