//! chatd's native API: `POST /v1/chat`, answered with JSON or an NDJSON stream.

use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Events, Framing, RequestBody, StreamRender, WireFormat, parse_json};
use crate::api::native_error;
use crate::api::pipeline::ms;
use crate::api::types::{
    self, ApiMessage, NativeOptions, Sampling, Stop, check_sampling, convert_messages,
    convert_tools,
};
use crate::contract::{ChatRequest, StreamChunk};
use crate::error::GatewayError;
use crate::gateway::{ChatOutcome, ChatStream};

/// The body of `POST /v1/chat`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a JSON object")]
pub struct NativeChatRequest {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "types::messages")]
    pub messages: Option<Vec<ApiMessage>>,
    #[serde(default, deserialize_with = "types::token_count")]
    pub max_tokens: Option<u64>,
    #[serde(default, deserialize_with = "types::number")]
    pub temperature: Option<f64>,
    #[serde(default, deserialize_with = "types::number")]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    /// `"json"` asks for a single JSON object; a JSON schema object, for an answer that
    /// follows it (Ollama's `format`).
    #[serde(default)]
    pub format: Option<Value>,
    /// Ollama-style sampling options (see [`NativeOptions`]).
    #[serde(default)]
    pub options: Option<NativeOptions>,
    #[serde(default)]
    pub think: Option<bool>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub tools: Option<Value>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Every other field, refused by [`NativeChatRequest::into_contract`]: a misspelt
    /// `temprature` must not be dropped silently. (Flattening also makes serde read the body
    /// only from a JSON object, never from an array of field values.)
    #[serde(flatten)]
    extra: Map<String, Value>,
}

impl RequestBody for NativeChatRequest {
    type Shape = ();

    fn into_contract(self) -> Result<(ChatRequest, ()), GatewayError> {
        if let Some(field) = self.extra.keys().next() {
            return Err(GatewayError::bad_param(
                field,
                format!("unrecognized request field {field:?}"),
            ));
        }
        let model = types::required_model(self.model)?;
        let response_format = types::native_format(self.format)?;
        let mut options = self.options.unwrap_or_default();
        options.rest.retain(|_, value| !value.is_null());
        let temperature = one_of("temperature", self.temperature, options.temperature)?;
        let top_p = one_of("top_p", self.top_p, options.top_p)?;
        let max_tokens = one_of("max_tokens", self.max_tokens, options.num_predict)?;
        let max_tokens = check_sampling(temperature, top_p, max_tokens, "max_tokens")?;
        let stop = match (self.stop, options.stop) {
            (Some(_), Some(_)) => {
                return Err(GatewayError::bad_param(
                    "options.stop",
                    "stop and options.stop are both set; send one",
                ));
            }
            (stop, other) => stop.or(other).map(Stop::into_list).unwrap_or_default(),
        };
        let (tools, tool_choice) = convert_tools(self.tools, self.tool_choice)?;
        let mut request = types::chat_request(model, convert_messages(self.messages)?);
        request.max_tokens = max_tokens;
        request.temperature = temperature;
        request.top_p = top_p;
        Sampling {
            seed: options.seed,
            top_k: options.top_k,
            presence_penalty: options.presence_penalty,
            frequency_penalty: options.frequency_penalty,
            repeat_penalty: options.repeat_penalty,
        }
        .apply(&mut request, "options.top_k")?;
        request.stop = stop;
        request.response_format = response_format;
        request.think = self.think;
        request.stream = self.stream.unwrap_or(false);
        request.tools = tools;
        request.tool_choice = tool_choice;
        // Options chatd has no field for (Ollama's num_ctx, mirostat, ...) go to adapters that
        // forward extra fields, as an `options` object they merge into theirs.
        request.extra = (!options.rest.is_empty()).then(|| {
            let mut extra = Map::new();
            extra.insert("options".into(), Value::Object(options.rest));
            Value::Object(extra).to_string()
        });
        Ok((request, ()))
    }

    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
}

/// A setting given top-level and in `options`: one of them, or both if they agree.
fn one_of<T: PartialEq>(
    name: &str,
    top: Option<T>,
    in_options: Option<T>,
) -> Result<Option<T>, GatewayError> {
    match (top, in_options) {
        (Some(a), Some(b)) if a != b => Err(GatewayError::bad_param(
            &format!(
                "options.{}",
                if name == "max_tokens" {
                    "num_predict"
                } else {
                    name
                }
            ),
            format!("{name} is set top-level and in options with different values; send one"),
        )),
        (a, b) => Ok(a.or(b)),
    }
}

/// `POST /v1/chat`.
pub struct Native;

impl WireFormat for Native {
    const ENDPOINT: &'static str = "/v1/chat";
    const FRAMING: Framing = Framing::Ndjson;
    const KEEPS_ALIVE: bool = false;
    type Request = NativeChatRequest;
    type Stream = NativeStream;

    fn answer((): (), out: ChatOutcome) -> Response {
        let r = out.response;
        let mut body = json!({
            "model": if r.model.is_empty() { out.route.model } else { r.model },
            "provider": out.route.provider,
            "content": r.content,
            "input_tokens": r.usage.input_tokens,
            "output_tokens": r.usage.output_tokens,
            "latency_ms": ms(out.latency),
            "done_reason": r.done_reason,
        });
        if let Some(reasoning) = r.reasoning {
            body["reasoning"] = Value::String(reasoning);
        }
        if let Some(calls) = parse_json(r.tool_calls.as_deref()) {
            body["tool_calls"] = calls;
        }
        axum::Json(body).into_response()
    }

    fn stream((): ()) -> NativeStream {
        NativeStream::default()
    }

    fn error(err: &GatewayError) -> Response {
        native_error(err)
    }
}

/// The native stream: `{"type":"delta",...}` lines, then one `{"type":"done",...}` line, or
/// an `{"type":"error",...}` line if the upstream fails midway.
#[derive(Default)]
pub struct NativeStream {
    input_tokens: Option<u32>,
    output_tokens: Option<u32>,
    done_reason: Option<String>,
    model: Option<String>,
}

impl StreamRender for NativeStream {
    fn chunk(&mut self, chunk: StreamChunk, out: &mut Events) {
        self.input_tokens = chunk.usage.input_tokens.or(self.input_tokens);
        self.output_tokens = chunk.usage.output_tokens.or(self.output_tokens);
        self.done_reason = chunk.done_reason.or(self.done_reason.take());
        self.model = chunk.model.or(self.model.take());
        let mut delta = json!({"type": "delta"});
        if let Some(c) = chunk.content.filter(|c| !c.is_empty()) {
            delta["content"] = Value::String(c);
        }
        if let Some(r) = chunk.reasoning.filter(|r| !r.is_empty()) {
            delta["reasoning"] = Value::String(r);
        }
        if let Some(calls) = parse_json(chunk.tool_calls.as_deref()) {
            delta["tool_calls"] = calls;
        }
        if delta.as_object().is_some_and(|o| o.len() > 1) {
            out.push(&delta);
        }
    }

    fn end(&mut self, stream: &ChatStream, out: &mut Events) {
        out.push(&json!({
            "type": "done",
            "model": self.model.take().unwrap_or_else(|| stream.route.model.clone()),
            "provider": stream.provider(),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "latency_ms": ms(stream.elapsed()),
            "done_reason": self.done_reason,
        }));
    }

    fn error(&mut self, e: &GatewayError, out: &mut Events) {
        out.push(&json!({"type": "error", "error": {"code": e.code(), "message": e.to_string()}}));
    }
}
