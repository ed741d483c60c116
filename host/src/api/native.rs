//! chatd's native API: `POST /v1/chat` (JSON or NDJSON stream) and `GET /v1/chat/providers`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::types::{self, ApiMessage, Stop, check_sampling, convert_messages, convert_tools};
use super::{
    AppState, JsonBody, checked, log_failure, log_request, native_error, served_by,
    streaming_response,
};
use crate::contract::ChatRequest;
use crate::error::GatewayError;
use crate::gateway::ChatStream;
use crate::runtime::Adapter;

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
        let json_mode = match self.format.as_deref() {
            None | Some("") => false,
            Some("json") => true,
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
            stop: self.stop.map(Stop::into_list).unwrap_or_default(),
            json_mode,
            think: self.think,
            stream: self.stream.unwrap_or(false),
            tools,
            tool_choice,
        })
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        native_error(&self)
    }
}

/// `POST /v1/chat`.
pub async fn chat(
    State(state): State<AppState>,
    body: Result<JsonBody<NativeChatRequest>, GatewayError>,
) -> Response {
    let started = std::time::Instant::now();
    let request = match checked(
        body,
        |b| b.model.as_deref(),
        NativeChatRequest::into_contract,
    ) {
        Ok(r) => r,
        Err((e, named)) => {
            log_failure("/v1/chat", &named, &e, ms(started.elapsed()));
            return native_error(&e);
        }
    };
    let model = request.model.clone();
    if request.stream {
        return match state.gateway.chat_stream(request).await {
            Ok(stream) => {
                log_request("/v1/chat", stream.provider(), &model, ms(started.elapsed()));
                let (provider, served) = (stream.provider().to_owned(), stream.route.model.clone());
                let response =
                    streaming_response("application/x-ndjson", Body::from_stream(ndjson(stream)));
                served_by(response, &provider, &served)
            }
            Err(e) => {
                log_failure("/v1/chat", &model, &e, ms(started.elapsed()));
                native_error(&e)
            }
        };
    }
    match state.gateway.chat(request).await {
        Ok(out) => {
            log_request("/v1/chat", &out.route.provider, &model, ms(out.latency));
            let r = out.response;
            let mut body = json!({
                "model": if r.model.is_empty() { out.route.model.clone() } else { r.model },
                "provider": out.route.provider,
                "content": r.content,
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
                "latency_ms": ms(out.latency),
                "done_reason": r.done_reason,
            });
            if let Some(reasoning) = r.reasoning {
                body["reasoning"] = Value::String(reasoning);
            }
            if let Some(calls) = r
                .tool_calls
                .as_deref()
                .and_then(|c| serde_json::from_str::<Value>(c).ok())
            {
                body["tool_calls"] = calls;
            }
            served_by(
                axum::Json(body).into_response(),
                &out.route.provider,
                &out.route.model,
            )
        }
        Err(e) => {
            log_failure("/v1/chat", &model, &e, ms(started.elapsed()));
            native_error(&e)
        }
    }
}

/// The native stream: `{"type":"delta",...}` lines, then one `{"type":"done",...}` line, or
/// an `{"type":"error",...}` line if the upstream fails midway.
fn ndjson(
    stream: ChatStream,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    struct State {
        stream: ChatStream,
        input_tokens: Option<u32>,
        output_tokens: Option<u32>,
        done_reason: Option<String>,
        model: Option<String>,
        over: bool,
    }
    let state = State {
        stream,
        input_tokens: None,
        output_tokens: None,
        done_reason: None,
        model: None,
        over: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        if s.over {
            return None;
        }
        loop {
            let line = match s.stream.next().await {
                Some(Ok(chunk)) => {
                    s.input_tokens = chunk.input_tokens.or(s.input_tokens);
                    s.output_tokens = chunk.output_tokens.or(s.output_tokens);
                    s.done_reason = chunk.done_reason.clone().or(s.done_reason.take());
                    s.model = chunk.model.clone().or(s.model.take());
                    let mut delta = json!({"type": "delta"});
                    if let Some(c) = chunk.content.filter(|c| !c.is_empty()) {
                        delta["content"] = Value::String(c);
                    }
                    if let Some(r) = chunk.reasoning.filter(|r| !r.is_empty()) {
                        delta["reasoning"] = Value::String(r);
                    }
                    if let Some(calls) = chunk
                        .tool_calls
                        .as_deref()
                        .and_then(|c| serde_json::from_str::<Value>(c).ok())
                    {
                        delta["tool_calls"] = calls;
                    }
                    if delta.as_object().is_some_and(|o| o.len() == 1) {
                        continue;
                    }
                    delta
                }
                Some(Err(e)) => {
                    s.over = true;
                    json!({"type": "error", "error": {"code": e.code(), "message": e.to_string()}})
                }
                None => {
                    s.over = true;
                    json!({
                        "type": "done",
                        "model": s.model.clone().unwrap_or_else(|| s.stream.route.model.clone()),
                        "provider": s.stream.provider(),
                        "input_tokens": s.input_tokens,
                        "output_tokens": s.output_tokens,
                        "latency_ms": ms(s.stream.elapsed()),
                        "done_reason": s.done_reason,
                    })
                }
            };
            let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
            bytes.push(b'\n');
            return Some((Ok(Bytes::from(bytes)), s));
        }
    })
}

/// `GET /v1/chat/providers`: exactly the registered providers, plus why others are not.
pub async fn providers(State(state): State<AppState>) -> Response {
    let snap = state.gateway.snapshot();
    let default = &snap.config.chatd.default_provider;
    let providers: Vec<Value> = snap
        .providers
        .values()
        .map(|p| {
            let last_error = snap
                .adapters
                .entries
                .get(&p.adapter.name)
                .and_then(|e| e.last_error.as_ref());
            let endpoints: Vec<Value> = p
                .endpoints
                .iter()
                .map(|e| {
                    json!({
                        "url": e.target.base_url(),
                        "weight": e.weight,
                        "health": e.state.snapshot(),
                    })
                })
                .collect();
            let mut entry = json!({
                "name": p.name,
                "adapter": adapter_json(&p.adapter, last_error),
                "base_url": p.target.base_url(),
                "endpoints": endpoints,
                "default": &p.name == default,
                "key_source": p.key_source.as_ref().map(|s| s.to_string()),
                "retries": p.retry.retries,
                "telemetry": p.stats.snapshot(),
                "attempts": p.stats.attempts(),
            });
            if let Some((in_use, max)) = p.admission.usage() {
                entry["concurrency"] = json!({"in_use": in_use, "max": max});
            }
            entry
        })
        .collect();
    let unregistered: Vec<Value> = snap
        .unregistered
        .iter()
        .map(|(name, reason)| json!({"name": name, "reason": reason}))
        .collect();
    axum::Json(json!({"providers": providers, "unregistered": unregistered})).into_response()
}

/// An adapter as the API shows it.
pub fn adapter_json(
    a: &Adapter,
    last_error: Option<&crate::runtime::library::LoadFailure>,
) -> Value {
    json!({
        "name": a.name,
        "version": a.info.version,
        "contract": a.contract.as_str(),
        "source": a.source.to_string(),
        "sha256": a.sha256,
        "loaded_at": unix_secs(a.loaded_at),
        "streaming": a.info.supports_streaming,
        "last_error": last_error.map(|f| json!({
            "path": f.path.display().to_string(),
            "message": f.error.to_string(),
            "at": unix_secs(f.at),
        })),
    })
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds with microsecond precision.
pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}
