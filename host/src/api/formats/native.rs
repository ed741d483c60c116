//! chatd's native API: `POST /v1/chat`, answered with JSON or an NDJSON stream.

use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Events, Framing, StreamRender, WireFormat, parse_json};
use crate::api::native_error;
use crate::api::pipeline::ms;
use crate::api::types::{self, ApiMessage, Stop, check_sampling, convert_messages, convert_tools};
use crate::contract::{ChatRequest, ResponseFormat, StreamChunk};
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
    /// `"json"` asks for a single JSON object.
    #[serde(default)]
    pub format: Option<String>,
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

impl NativeChatRequest {
    /// Validates the request and converts it to the contract's request.
    pub fn into_contract(self) -> Result<ChatRequest, GatewayError> {
        if let Some(field) = self.extra.keys().next() {
            return Err(GatewayError::bad_param(
                field,
                format!("unrecognized request field {field:?}"),
            ));
        }
        let model = self.model.unwrap_or_default();
        if model.trim().is_empty() {
            return Err(GatewayError::bad_param("model", "model is required"));
        }
        let response_format = match self.format.as_deref() {
            None | Some("") => ResponseFormat::Text,
            Some("json") => ResponseFormat::JsonObject,
            Some(other) => {
                return Err(GatewayError::bad_param(
                    "format",
                    format!("format must be \"json\", got {other:?}"),
                ));
            }
        };
        let max_tokens =
            check_sampling(self.temperature, self.top_p, self.max_tokens, "max_tokens")?;
        let (tools, tool_choice) = convert_tools(self.tools, self.tool_choice)?;
        Ok(ChatRequest {
            model,
            messages: convert_messages(self.messages)?,
            max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: None,
            seed: None,
            presence_penalty: None,
            frequency_penalty: None,
            repeat_penalty: None,
            stop: self.stop.map(Stop::into_list).unwrap_or_default(),
            response_format,
            think: self.think,
            reasoning_effort: None,
            stream: self.stream.unwrap_or(false),
            tools,
            tool_choice,
            extra: None,
        })
    }
}

/// `POST /v1/chat`.
pub struct Native;

impl WireFormat for Native {
    const ENDPOINT: &'static str = "/v1/chat";
    const FRAMING: Framing = Framing::Ndjson;
    const KEEP_ALIVE: Option<&'static [u8]> = None;
    type Request = NativeChatRequest;
    type Shape = ();
    type Stream = NativeStream;

    fn model(request: &NativeChatRequest) -> Option<&str> {
        request.model.as_deref()
    }

    fn parse(request: NativeChatRequest) -> Result<(ChatRequest, ()), GatewayError> {
        request.into_contract().map(|r| (r, ()))
    }

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
