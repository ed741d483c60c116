//! chatd adapter for a local Ollama server, through its native `/api/chat` endpoint.
//!
//! Tool calls cross the contract in OpenAI Chat Completions shapes; Ollama's own shape differs
//! mainly in that function arguments are JSON objects rather than JSON-encoded strings, so the
//! adapter converts them in both directions.

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

    let mut body = Map::new();
    body.insert("model".into(), request.model.clone().into());
    body.insert("messages".into(), Value::Array(messages));
    // Both are always sent: Ollama streams when "stream" is absent, and thinking models think
    // when "think" is absent, while chatd's default is off.
    body.insert("stream".into(), request.stream.into());
    body.insert("think".into(), request.think.unwrap_or(false).into());
    if request.json_mode {
        body.insert("format".into(), "json".into());
    }
    let options = options(request)?;
    if !options.is_empty() {
        body.insert("options".into(), Value::Object(options));
    }
    if let Some(tools) = tools(request)? {
        body.insert("tools".into(), tools);
    }

    let accept = if request.stream {
        "application/x-ndjson"
    } else {
        "application/json"
    };
    Ok(HttpRequest {
        method: "POST".into(),
        path: "/api/chat".into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("accept".into(), accept.into()),
        ],
        body: Value::Object(body).to_string().into_bytes(),
    })
}

/// Parses a complete `/api/chat` response of any status.
pub fn parse_response(response: &HttpResponse) -> Result<ChatResponse, AdapterError> {
    let body = successful_json(response)?;
    let message = body
        .get("message")
        .filter(|message| message.is_object())
        .ok_or_else(|| malformed("response has no \"message\" object"))?;
    let content = match &message["content"] {
        Value::String(content) => content.clone(),
        Value::Null => String::new(),
        _ => return Err(malformed("message.content is not a string")),
    };
    let tool_calls = openai_tool_calls(&message["tool_calls"], false)?;
    let done_reason = body["done_reason"].as_str().map(str::to_owned);
    Ok(ChatResponse {
        content,
        reasoning: non_empty(&message["thinking"]),
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        input_tokens: token_count(&body["prompt_eval_count"]),
        output_tokens: token_count(&body["eval_count"]),
        finish: answer_finish(done_reason.as_deref(), tool_calls.is_some()),
        done_reason,
        tool_calls: tool_calls.map(|calls| calls.to_string()),
    })
}

/// Parses one NDJSON line of a streamed `/api/chat` response.
pub fn parse_stream_event(event: &StreamEvent) -> Result<Option<StreamChunk>, AdapterError> {
    let line = event.data.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let body: Value = serde_json::from_str(line)
        .map_err(|error| malformed(format!("stream line is not JSON: {error}")))?;
    if !body.is_object() {
        return Err(malformed("stream line is not a JSON object"));
    }
    if let Some(message) = error_text(&body) {
        return Err(AdapterError::Upstream(UpstreamFailure {
            status: 0,
            message: truncate(&message),
        }));
    }

    let message = &body["message"];
    let tool_calls = openai_tool_calls(&message["tool_calls"], true)?;
    let done_reason = body["done_reason"].as_str().map(str::to_owned);
    let chunk = StreamChunk {
        content: non_empty(&message["content"]),
        reasoning: non_empty(&message["thinking"]),
        tool_calls: tool_calls.map(|calls| calls.to_string()),
        model: body["model"].as_str().map(str::to_owned),
        finish: done_reason.as_deref().map(finish_reason),
        done_reason,
        input_tokens: token_count(&body["prompt_eval_count"]),
        output_tokens: token_count(&body["eval_count"]),
        done: body["done"].as_bool().unwrap_or(false),
    };
    // Every line names the model, so the model alone does not make a line worth passing on.
    let carries_something = chunk.content.is_some()
        || chunk.reasoning.is_some()
        || chunk.tool_calls.is_some()
        || chunk.done_reason.is_some()
        || chunk.input_tokens.is_some()
        || chunk.output_tokens.is_some()
        || chunk.done;
    Ok(carries_something.then_some(chunk))
}

/// Builds the `GET /api/tags` request that lists the local models.
pub fn build_models_request() -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        path: "/api/tags".into(),
        headers: vec![("accept".into(), "application/json".into())],
        body: Vec::new(),
    }
}

/// Parses a `/api/tags` response of any status.
pub fn parse_models_response(response: &HttpResponse) -> Result<Vec<ModelInfo>, AdapterError> {
    let body = successful_json(response)?;
    let models = body["models"]
        .as_array()
        .ok_or_else(|| malformed("response has no \"models\" array"))?;
    models
        .iter()
        .enumerate()
        .map(|(index, model)| {
            let id = model["name"]
                .as_str()
                .or_else(|| model["model"].as_str())
                .ok_or_else(|| malformed(format!("models[{index}] has no name")))?;
            Ok(ModelInfo {
                id: id.to_owned(),
                owned_by: None,
                created: None,
            })
        })
        .collect()
}

/// Converts one chat turn to Ollama's message shape.
fn message_json(index: usize, message: &Message) -> Result<Value, AdapterError> {
    let mut out = Map::new();
    out.insert("role".into(), message.role.clone().into());
    out.insert("content".into(), message.content.clone().into());
    if let Some(calls) = &message.tool_calls {
        let field = format!("messages[{index}].tool_calls");
        out.insert("tool_calls".into(), ollama_tool_calls(&field, calls)?);
    }
    if let (Some(name), "tool") = (&message.name, message.role.as_str()) {
        out.insert("tool_name".into(), name.clone().into());
    }
    Ok(Value::Object(out))
}

/// Converts an OpenAI `tool_calls` array (JSON text in `field`) to Ollama's shape.
fn ollama_tool_calls(field: &str, text: &str) -> Result<Value, AdapterError> {
    let Value::Array(calls) = parse_json(field, text)? else {
        return Err(invalid(format!("{field} must be a JSON array")));
    };
    calls
        .iter()
        .enumerate()
        .map(|(index, call)| {
            let function = &call["function"];
            let name = function["name"]
                .as_str()
                .ok_or_else(|| invalid(format!("{field}[{index}].function.name is missing")))?;
            let arguments_field = format!("{field}[{index}].function.arguments");
            let arguments = match &function["arguments"] {
                // A call without parameters may come with no arguments at all.
                Value::Null => Value::Object(Map::new()),
                Value::String(text) if text.trim().is_empty() => Value::Object(Map::new()),
                Value::String(text) => parse_json(&arguments_field, text)?,
                other => other.clone(),
            };
            if !arguments.is_object() {
                return Err(invalid(format!("{arguments_field} must be a JSON object")));
            }
            Ok(json!({ "function": { "name": name, "arguments": arguments } }))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// Converts Ollama tool calls to OpenAI's shape (with `index` when streaming); `None` if there
/// are none.
fn openai_tool_calls(calls: &Value, streaming: bool) -> Result<Option<Value>, AdapterError> {
    let calls = match calls {
        Value::Null => return Ok(None),
        Value::Array(calls) if calls.is_empty() => return Ok(None),
        Value::Array(calls) => calls,
        _ => return Err(malformed("message.tool_calls is not an array")),
    };
    let mut converted = Vec::with_capacity(calls.len());
    for (position, call) in calls.iter().enumerate() {
        let function = &call["function"];
        let name = function["name"].as_str().ok_or_else(|| {
            malformed(format!(
                "message.tool_calls[{position}].function.name is missing"
            ))
        })?;
        let arguments = match &function["arguments"] {
            Value::Null => "{}".to_owned(),
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        // When streaming, Ollama may send each call on its own line, where positions restart at
        // zero; its own `index` keeps the calls apart.
        let index = function["index"].as_u64().unwrap_or(position as u64);
        let id = match call["id"].as_str() {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => format!("call_{index}"),
        };
        let function = json!({ "name": name, "arguments": arguments });
        converted.push(if streaming {
            json!({ "index": index, "id": id, "type": "function", "function": function })
        } else {
            json!({ "id": id, "type": "function", "function": function })
        });
    }
    Ok(Some(Value::Array(converted)))
}

/// Ollama's sampling `options`, holding only the fields the request sets.
fn options(request: &ChatRequest) -> Result<Map<String, Value>, AdapterError> {
    let mut options = Map::new();
    if let Some(temperature) = request.temperature {
        options.insert("temperature".into(), finite("temperature", temperature)?);
    }
    if let Some(top_p) = request.top_p {
        options.insert("top_p".into(), finite("top_p", top_p)?);
    }
    if let Some(max_tokens) = request.max_tokens {
        options.insert("num_predict".into(), max_tokens.into());
    }
    if !request.stop.is_empty() {
        options.insert("stop".into(), request.stop.clone().into());
    }
    Ok(options)
}

/// The OpenAI `tools` array to send, or `None` when there is none to send.
fn tools(request: &ChatRequest) -> Result<Option<Value>, AdapterError> {
    let Some(text) = &request.tools else {
        return Ok(None);
    };
    let tools = parse_json("tools", text)?;
    if !tools.is_array() {
        return Err(invalid("tools must be a JSON array"));
    }
    // Ollama has no tool_choice. "none" is honoured by sending no tools; "auto", "required" and
    // a named function are best effort: the model gets the tools and decides for itself.
    if let Some(choice) = &request.tool_choice
        && parse_json("tool_choice", choice)? == "none"
    {
        return Ok(None);
    }
    Ok(Some(tools))
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
    // Ollama reports some failures as an error object with a 2xx status.
    if let Some(message) = error_text(&body) {
        return Err(AdapterError::Upstream(UpstreamFailure {
            status: response.status,
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

/// The message of an Ollama (`{"error": "..."}`) or OpenAI (`{"error": {"message": "..."}}`)
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
        // Ollama says "stop" when a turn ends in tool calls.
        None | Some(FinishReason::Stop | FinishReason::Other) if has_tool_calls => {
            Some(FinishReason::ToolCalls)
        }
        _ => finish,
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
