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

// No `world:`: the package has exactly one world, so the bindings need not depend on its name.
wit_bindgen::generate!({ path: "../../wit/0.2.0" });

use exports::lakehouse::provider::adapter::Guest as AdapterGuest;
use exports::lakehouse::provider::models::{Guest as ModelsGuest, ModelInfo};
use lakehouse::provider::types::{
    AdapterError, AdapterInfo, AuthScheme, ChatRequest, ChatResponse, FinishReason, HttpRequest,
    HttpResponse, Message, RateLimit, StreamChunk, StreamEvent, StreamFraming, UpstreamFailure,
};
use serde_json::{Map, Value};

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
        return Err(invalid(
            "ollama_cloud: tools are not supported by /api/generate",
        ));
    }

    let mut body = Map::new();
    body.insert("model".into(), request.model.clone().into());
    body.insert("prompt".into(), flatten(&request.messages).into());
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

    let accept = if request.stream {
        "application/x-ndjson"
    } else {
        "application/json"
    };
    Ok(HttpRequest {
        method: "POST".into(),
        path: "/api/generate".into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("accept".into(), accept.into()),
        ],
        body: Value::Object(body).to_string().into_bytes(),
    })
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
    let body = successful_json(response)?;
    let content = body["response"]
        .as_str()
        .ok_or_else(|| malformed("response has no \"response\" text"))?;
    let done_reason = body["done_reason"].as_str().map(str::to_owned);
    Ok(ChatResponse {
        content: content.to_owned(),
        reasoning: non_empty(&body["thinking"]),
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        input_tokens: token_count(&body["prompt_eval_count"]),
        output_tokens: token_count(&body["eval_count"]),
        finish: done_reason.as_deref().map(finish_reason),
        done_reason,
        tool_calls: None,
    })
}

/// Parses one NDJSON line of a streamed `/api/generate` response.
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

    let done_reason = body["done_reason"].as_str().map(str::to_owned);
    let chunk = StreamChunk {
        content: non_empty(&body["response"]),
        reasoning: non_empty(&body["thinking"]),
        tool_calls: None,
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
        || chunk.done_reason.is_some()
        || chunk.input_tokens.is_some()
        || chunk.output_tokens.is_some()
        || chunk.done;
    Ok(carries_something.then_some(chunk))
}

/// Builds the `GET /api/tags` request that lists the cloud models.
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

/// A role with its first letter upper-cased ("user" becomes "User").
fn capitalized(role: &str) -> String {
    let mut chars = role.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
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

fn invalid(message: impl Into<String>) -> AdapterError {
    AdapterError::InvalidRequest(message.into())
}

fn malformed(message: impl Into<String>) -> AdapterError {
    AdapterError::MalformedResponse(message.into())
}

#[cfg(test)]
mod tests;
