//! The OpenAI-compatible API: `POST /v1/chat/completions` (JSON or SSE) and `GET /v1/models`.
//!
//! Requests are validated against what chatd can honour: a field that would change the answer
//! and cannot be passed on (e.g. `n` > 1, `logprobs`, a JSON schema) is a 400 naming it,
//! never silently dropped. Errors use OpenAI's shape so SDKs raise their typed exceptions.

use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::native::ms;
use super::types::{self, ApiMessage, Stop, check_sampling, convert_messages, convert_tools};
use super::{AppState, JsonBody, checked, log_failure, log_request, served_by, streaming_response};
use crate::contract::{ChatRequest, FinishReason};
use crate::error::GatewayError;
use crate::gateway::{ChatStream, ModelListing};

/// The body of `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a JSON object")]
pub struct CompletionsRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default, deserialize_with = "types::messages")]
    messages: Option<Vec<ApiMessage>>,
    #[serde(default, deserialize_with = "types::token_count")]
    max_tokens: Option<u64>,
    #[serde(default, deserialize_with = "types::token_count")]
    max_completion_tokens: Option<u64>,
    #[serde(default, deserialize_with = "types::number")]
    temperature: Option<f64>,
    #[serde(default, deserialize_with = "types::number")]
    top_p: Option<f64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    tools: Option<Value>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<Value>,
    #[serde(default)]
    reasoning_effort: Option<String>,
    /// Everything else, checked by [`check_extra_fields`].
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// What one validated request asks of the response.
#[derive(Debug)]
struct Shape {
    model: String,
    include_usage: bool,
}

impl CompletionsRequest {
    fn into_contract(self) -> Result<(ChatRequest, Shape), GatewayError> {
        check_extra_fields(&self.extra)?;
        let model = self.model.unwrap_or_default();
        if model.trim().is_empty() {
            return Err(GatewayError::bad_param("model", "model is required"));
        }
        let (max_tokens, name) = match (self.max_completion_tokens, self.max_tokens) {
            (Some(a), Some(b)) if a != b => {
                return Err(GatewayError::bad_param(
                    "max_tokens",
                    "max_tokens and max_completion_tokens disagree; send one",
                ));
            }
            (Some(a), _) => (Some(a), "max_completion_tokens"),
            (None, b) => (b, "max_tokens"),
        };
        let max_tokens = check_sampling(self.temperature, self.top_p, max_tokens, name)?;
        let json_mode = match &self.response_format {
            None | Some(Value::Null) => false,
            Some(rf) => match rf.get("type").and_then(Value::as_str) {
                Some("text") => false,
                Some("json_object") => true,
                Some(other) => {
                    return Err(GatewayError::bad_param(
                        "response_format",
                        format!(
                            "response_format type {other:?} is not supported (use \"json_object\" or \"text\")"
                        ),
                    ));
                }
                None => {
                    return Err(GatewayError::bad_param(
                        "response_format",
                        "response_format needs a type",
                    ));
                }
            },
        };
        let stream = self.stream.unwrap_or(false);
        let include_usage = match &self.stream_options {
            None | Some(Value::Null) => false,
            Some(_) if !stream => {
                return Err(GatewayError::bad_param(
                    "stream_options",
                    "stream_options is only allowed when stream is true",
                ));
            }
            Some(opts) => stream_options(opts)?,
        };
        let think = match self.reasoning_effort.as_deref() {
            None => None,
            Some("none") => Some(false),
            Some("minimal" | "low" | "medium" | "high") => Some(true),
            Some(other) => {
                return Err(GatewayError::bad_param(
                    "reasoning_effort",
                    format!(
                        "reasoning_effort {other:?} is not one of none, minimal, low, medium, high"
                    ),
                ));
            }
        };
        let (tools, tool_choice) = convert_tools(self.tools, self.tool_choice)?;
        let request = ChatRequest {
            model: model.clone(),
            messages: convert_messages(self.messages)?,
            max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            stop: self.stop.map(Stop::into_list).unwrap_or_default(),
            json_mode,
            think,
            stream,
            tools,
            tool_choice,
        };
        Ok((
            request,
            Shape {
                model,
                include_usage,
            },
        ))
    }
}

/// Fields chatd accepts but does not need: they do not change the answer.
const IGNORED: &[&str] = &[
    "user",
    "metadata",
    "store",
    "service_tier",
    "parallel_tool_calls",
    "prompt_cache_key",
    "safety_identifier",
];

/// Rejects fields that would change the answer but cannot be honoured; neutral values
/// (`n: 1`, `logprobs: false`, zero penalties) pass.
/// `stream_options`: whether to send a usage chunk. `include_obfuscation` (OpenAI pads its
/// chunks against length side channels) is accepted and has nothing to do here.
fn stream_options(opts: &Value) -> Result<bool, GatewayError> {
    let Value::Object(opts) = opts else {
        return Err(GatewayError::bad_param(
            "stream_options",
            "stream_options must be an object",
        ));
    };
    let mut include_usage = false;
    for (key, value) in opts {
        let flag = match value {
            Value::Null => None,
            Value::Bool(b) => Some(*b),
            _ => {
                return Err(GatewayError::bad_param(
                    &format!("stream_options.{key}"),
                    format!("stream_options.{key} must be a boolean"),
                ));
            }
        };
        match key.as_str() {
            "include_usage" => include_usage = flag.unwrap_or(false),
            "include_obfuscation" => {}
            _ => {
                return Err(GatewayError::bad_param(
                    &format!("stream_options.{key}"),
                    format!("stream_options.{key} is not supported"),
                ));
            }
        }
    }
    Ok(include_usage)
}

fn check_extra_fields(extra: &Map<String, Value>) -> Result<(), GatewayError> {
    for (field, value) in extra {
        if IGNORED.contains(&field.as_str()) || value.is_null() {
            continue;
        }
        let neutral = match field.as_str() {
            "n" => value.as_u64() == Some(1),
            "logprobs" => value == &Value::Bool(false),
            "frequency_penalty" | "presence_penalty" => value.as_f64() == Some(0.0),
            "logit_bias" => value.as_object().is_some_and(Map::is_empty),
            "modalities" => value == &json!(["text"]),
            _ => false,
        };
        if !neutral {
            let why = match field.as_str() {
                "n" => "only n = 1 is supported".to_owned(),
                "functions" | "function_call" => {
                    format!("{field} is deprecated; use tools and tool_choice")
                }
                "frequency_penalty" | "presence_penalty" | "logprobs" | "top_logprobs"
                | "logit_bias" | "seed" | "modalities" | "audio" | "prediction"
                | "web_search_options" => {
                    format!("{field} is not supported by chatd")
                }
                _ => format!("unrecognized request field {field:?}"),
            };
            return Err(GatewayError::bad_param(field, why));
        }
    }
    Ok(())
}

/// Renders an error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
pub fn openai_error(err: &GatewayError) -> Response {
    let body = json!({"error": {
        "message": err.to_string(),
        "type": err.openai_type(),
        "param": err.param(),
        "code": err.code(),
    }});
    super::with_retry_after(err, (err.status(), axum::Json(body)).into_response())
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<AppState>,
    body: Result<JsonBody<CompletionsRequest>, GatewayError>,
) -> Response {
    const ENDPOINT: &str = "/v1/chat/completions";
    let started = std::time::Instant::now();
    let (request, shape) = match checked(
        body,
        |b| b.model.as_deref(),
        CompletionsRequest::into_contract,
    ) {
        Ok(r) => r,
        Err((e, named)) => {
            log_failure(ENDPOINT, &named, &e, ms(started.elapsed()));
            return openai_error(&e);
        }
    };
    let model = shape.model.clone();
    let result = if request.stream {
        let gateway = state.gateway.clone();
        let mut opening: Opening = Box::pin(async move { gateway.chat_stream(request).await });
        match tokio::time::timeout(HEAD_PATIENCE, &mut opening).await {
            Ok(opened) => opened.map(|stream| {
                log_request(ENDPOINT, stream.provider(), &model, ms(started.elapsed()));
                let (provider, served) = (stream.provider().to_owned(), stream.route.model.clone());
                let response =
                    streaming_response("text/event-stream", Body::from_stream(sse(stream, shape)));
                served_by(response, &provider, &served)
            }),
            Err(_) => Ok(streaming_response(
                "text/event-stream",
                Body::from_stream(sse_once_open(opening, shape, started)),
            )),
        }
    } else {
        state.gateway.chat(request).await.map(|out| {
            log_request(ENDPOINT, &out.route.provider, &model, ms(out.latency));
            let r = out.response;
            let tool_calls = parse_json(r.tool_calls.as_deref());
            let mut message = json!({"role": "assistant", "content": r.content});
            if let Some(calls) = &tool_calls {
                message["tool_calls"] = calls.clone();
                if r.content.is_empty() {
                    message["content"] = Value::Null;
                }
            }
            if let Some(reasoning) = r.reasoning {
                message["reasoning_content"] = Value::String(reasoning);
            }
            let mut body = json!({
                "id": completion_id(),
                "object": "chat.completion",
                "created": now_secs(),
                "model": served_model(&out.route),
                "choices": [{
                    "index": 0,
                    "message": message,
                    "finish_reason": finish_reason(r.finish, tool_calls.is_some()),
                    "logprobs": null,
                }],
            });
            if let Some(usage) = usage(r.input_tokens, r.output_tokens) {
                body["usage"] = usage;
            }
            served_by(
                axum::Json(body).into_response(),
                &out.route.provider,
                &out.route.model,
            )
        })
    };
    result.unwrap_or_else(|e| {
        log_failure(ENDPOINT, &model, &e, ms(started.elapsed()));
        openai_error(&e)
    })
}

/// The `model` of an answer: the candidate that served it, as a routable id
/// (`provider/model`), so a fallback's answer says so.
fn served_model(route: &crate::routing::Route) -> String {
    format!("{}/{}", route.provider, route.model)
}

fn parse_json(text: Option<&str>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(t).ok())
}

fn finish_reason(finish: Option<FinishReason>, has_tool_calls: bool) -> &'static str {
    match finish {
        Some(FinishReason::Length) => "length",
        Some(FinishReason::ToolCalls) => "tool_calls",
        Some(FinishReason::ContentFilter) => "content_filter",
        _ if has_tool_calls => "tool_calls",
        _ => "stop",
    }
}

/// OpenAI `usage`, only when the upstream reported both counts (never invented).
fn usage(input: Option<u32>, output: Option<u32>) -> Option<Value> {
    let (i, o) = (input?, output?);
    Some(json!({"prompt_tokens": i, "completion_tokens": o, "total_tokens": i as u64 + o as u64}))
}

fn completion_id() -> String {
    // Unique per call without a dependency: each RandomState is freshly keyed.
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u64(now_secs());
    format!("chatcmpl-{:016x}", h.finish())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The SSE body: a role chunk, content/reasoning/tool-call deltas as they arrive, a chunk
/// with `finish_reason` (as soon as the upstream gives one, else at the end), a usage chunk
/// when asked (and known), then `[DONE]`. A failure midway becomes an `{"error": ...}` event
/// and the stream ends.
fn sse(
    stream: ChatStream,
    shape: Shape,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    enum Phase {
        Role,
        Deltas,
        Over,
    }
    struct S {
        stream: ChatStream,
        shape: Shape,
        id: String,
        created: u64,
        phase: Phase,
        finish: Option<FinishReason>,
        sent_finish: bool,
        saw_tool_calls: bool,
        input_tokens: Option<u32>,
        output_tokens: Option<u32>,
    }
    impl S {
        fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
            json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.shape.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
            })
        }
    }
    let shape = Shape {
        model: served_model(&stream.route),
        ..shape
    };
    let state = S {
        stream,
        shape,
        id: completion_id(),
        created: now_secs(),
        phase: Phase::Role,
        finish: None,
        sent_finish: false,
        saw_tool_calls: false,
        input_tokens: None,
        output_tokens: None,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        let mut out = String::new();
        match s.phase {
            Phase::Over => return None,
            // The role chunk goes out together with the first delta (or whatever comes
            // first): one write instead of two.
            Phase::Role => {
                s.phase = Phase::Deltas;
                push_event(
                    &mut out,
                    &s.chunk(json!({"role": "assistant", "content": ""}), None),
                );
            }
            Phase::Deltas => {}
        }
        loop {
            match s.stream.next().await {
                Some(Ok(chunk)) => {
                    s.finish = chunk.finish.or(s.finish);
                    s.input_tokens = chunk.input_tokens.or(s.input_tokens);
                    s.output_tokens = chunk.output_tokens.or(s.output_tokens);
                    let mut delta = Map::new();
                    if let Some(c) = chunk.content.filter(|c| !c.is_empty()) {
                        delta.insert("content".into(), Value::String(c));
                    }
                    if let Some(r) = chunk.reasoning.filter(|r| !r.is_empty()) {
                        delta.insert("reasoning_content".into(), Value::String(r));
                    }
                    if let Some(calls) = parse_json(chunk.tool_calls.as_deref()) {
                        s.saw_tool_calls = true;
                        delta.insert("tool_calls".into(), calls);
                    }
                    let mut emitted = !delta.is_empty();
                    if emitted {
                        push_event(&mut out, &s.chunk(Value::Object(delta), None));
                    }
                    // The finish chunk goes out as soon as the upstream names the reason:
                    // an upstream asked for usage sends it in a later event, and a client
                    // should not wait for that to learn the answer is complete.
                    if s.finish.is_some() && !s.sent_finish {
                        s.sent_finish = true;
                        let reason = finish_reason(s.finish, s.saw_tool_calls);
                        push_event(&mut out, &s.chunk(json!({}), Some(reason)));
                        emitted = true;
                    }
                    if emitted {
                        return Some((Ok(Bytes::from(out)), s));
                    }
                }
                Some(Err(e)) => {
                    s.phase = Phase::Over;
                    push_event(&mut out, &error_event(&e));
                    return Some((Ok(Bytes::from(out)), s));
                }
                None => {
                    s.phase = Phase::Over;
                    if !s.sent_finish {
                        let reason = finish_reason(s.finish, s.saw_tool_calls);
                        push_event(&mut out, &s.chunk(json!({}), Some(reason)));
                    }
                    if s.shape.include_usage
                        && let Some(usage) = usage(s.input_tokens, s.output_tokens)
                    {
                        let mut last = s.chunk(json!({}), None);
                        last["choices"] = json!([]);
                        last["usage"] = usage;
                        push_event(&mut out, &last);
                    }
                    out.push_str("data: [DONE]\n\n");
                    return Some((Ok(Bytes::from(out)), s));
                }
            }
        }
    })
}

/// A stream being opened (until its first chunk has arrived, see `Gateway::chat_stream`).
type Opening = Pin<Box<dyn Future<Output = Result<ChatStream, GatewayError>> + Send>>;

/// How long a stream's answer waits for the upstream's first event before chatd sends the
/// response head anyway. Until then a failure is a normal HTTP error (clients raise their
/// typed errors); after it, a client or a proxy with a read timeout (nginx: 60 s) needs to
/// see the connection alive while a model queues or thinks.
const HEAD_PATIENCE: Duration = Duration::from_secs(5);

/// How often a stream whose head went out early sends an SSE comment while the first event
/// is still awaited. Clients ignore comments (the SSE rules; OpenRouter sends them too).
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(10);

/// The SSE body of a stream answered before it opened: keep-alive comments until the first
/// chunk, then [`sse`], or the failure as the stream's error event. The request's log line
/// is written when the first chunk (or the failure) arrives, as for any stream.
fn sse_once_open(
    opening: Opening,
    shape: Shape,
    started: Instant,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    type Body =
        Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send>>;
    enum Phase {
        /// The comment that makes the head go out now.
        Head(Opening, Shape),
        Opening(Opening, Shape),
        Streaming(Body),
        Over,
    }
    const ENDPOINT: &str = "/v1/chat/completions";
    const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
    futures_util::stream::unfold(Phase::Head(opening, shape), move |phase| async move {
        use futures_util::StreamExt;
        match phase {
            Phase::Head(opening, shape) => Some((
                Ok(Bytes::from_static(KEEP_ALIVE)),
                Phase::Opening(opening, shape),
            )),
            Phase::Opening(mut opening, shape) => {
                match tokio::time::timeout(KEEP_ALIVE_EVERY, &mut opening).await {
                    Err(_) => Some((
                        Ok(Bytes::from_static(KEEP_ALIVE)),
                        Phase::Opening(opening, shape),
                    )),
                    Ok(Ok(stream)) => {
                        log_request(
                            ENDPOINT,
                            stream.provider(),
                            &shape.model,
                            ms(started.elapsed()),
                        );
                        let mut body: Body = Box::pin(sse(stream, shape));
                        let first = body.next().await?;
                        Some((first, Phase::Streaming(body)))
                    }
                    Ok(Err(e)) => {
                        log_failure(ENDPOINT, &shape.model, &e, ms(started.elapsed()));
                        let mut out = String::new();
                        push_event(&mut out, &error_event(&e));
                        Some((Ok(Bytes::from(out)), Phase::Over))
                    }
                }
            }
            Phase::Streaming(mut body) => {
                let item = body.next().await?;
                Some((item, Phase::Streaming(body)))
            }
            Phase::Over => None,
        }
    })
}

/// A failure sent as a stream's last event, in OpenAI's error shape.
fn error_event(e: &GatewayError) -> Value {
    json!({"error": {"message": e.to_string(), "type": e.openai_type(), "code": e.code(), "param": null}})
}

fn push_event(out: &mut String, value: &Value) {
    out.push_str("data: ");
    out.push_str(&value.to_string());
    out.push_str("\n\n");
}

/// `GET /v1/models`: tiers, then every registered provider's upstream models (prefixed so
/// each id routes back to its provider). A provider whose listing fails is reported in
/// `errors` and does not fail the list.
pub async fn models(State(state): State<AppState>) -> Response {
    let listing = state.gateway.list_models().await;
    let errors: Vec<Value> = listing
        .errors
        .iter()
        .map(|(provider, e)| json!({"provider": provider, "code": e.code(), "message": e.to_string()}))
        .collect();
    let data = model_objects(&listing);
    axum::Json(json!({"object": "list", "data": data, "errors": errors})).into_response()
}

/// `GET /v1/models/{id}`: one entry of the model list (the OpenAI SDK's `models.retrieve`).
pub async fn model(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let listing = state.gateway.list_models().await;
    if let Some(found) = model_objects(&listing)
        .into_iter()
        .find(|m| m["id"] == id.as_str())
    {
        return axum::Json(found).into_response();
    }
    // Not listed because its provider's listing failed: that failure is the answer.
    let failed = listing.errors.iter().find(|(provider, _)| {
        id.strip_prefix(provider.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    });
    if let Some((_, e)) = failed {
        return openai_error(e);
    }
    openai_error(&GatewayError::NotFound(format!(
        "model {id:?} is not in the model list (GET /v1/models); it may still be routable"
    )))
}

/// The model list's entries in OpenAI's shape: the tiers, then each provider's models with
/// the provider's name in front (so each id routes back to it).
fn model_objects(listing: &ModelListing) -> Vec<Value> {
    let mut data = Vec::new();
    for (tier, chain) in &listing.tiers {
        let mut entry = json!({"id": tier, "object": "model", "created": 0, "owned_by": "chatd", "target": chain[0]});
        if chain.len() > 1 {
            entry["fallbacks"] = json!(chain[1..]);
        }
        data.push(entry);
    }
    for (provider, models) in &listing.providers {
        for m in models.iter() {
            data.push(json!({
                "id": format!("{provider}/{}", m.id),
                "object": "model",
                "created": m.created.unwrap_or(0),
                "owned_by": m.owned_by.clone().unwrap_or_else(|| provider.clone()),
            }));
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> Result<(ChatRequest, Shape), GatewayError> {
        serde_json::from_value::<CompletionsRequest>(v)
            .unwrap()
            .into_contract()
    }

    fn base() -> Value {
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    }

    fn with(field: &str, value: Value) -> Value {
        let mut v = base();
        v[field] = value;
        v
    }

    #[test]
    fn neutral_values_pass_and_answer_changing_fields_are_named() {
        for (f, v) in [
            ("n", json!(1)),
            ("logprobs", json!(false)),
            ("user", json!("u")),
            ("presence_penalty", json!(0)),
        ] {
            assert!(req(with(f, v.clone())).is_ok(), "{f}={v}");
        }
        for (f, v) in [
            ("n", json!(2)),
            ("logprobs", json!(true)),
            ("seed", json!(7)),
            ("frequency_penalty", json!(0.5)),
            ("functions", json!([])),
            ("bogus", json!(1)),
        ] {
            let err = req(with(f, v)).unwrap_err();
            assert_eq!(err.param(), Some(f), "{err}");
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn openai_fields_map_to_the_contract() {
        let (r, s) = req(json!({
            "model": "ollama/q", "messages": [{"role":"user","content":[{"type":"text","text":"hi"}]}],
            "max_completion_tokens": 5, "stop": "END", "response_format": {"type": "json_object"},
            "stream": true, "stream_options": {"include_usage": true}, "reasoning_effort": "none",
        }))
        .unwrap();
        assert_eq!(
            (r.max_tokens, r.stop.clone(), r.json_mode, r.stream, r.think),
            (Some(5), vec!["END".to_string()], true, true, Some(false))
        );
        assert!(s.include_usage);
        assert_eq!(
            req(with("response_format", json!({"type":"json_schema"})))
                .unwrap_err()
                .param(),
            Some("response_format")
        );
        assert_eq!(
            req(with("stream_options", json!({"include_usage":true})))
                .unwrap_err()
                .param(),
            Some("stream_options")
        );
        let streamed = |opts: Value| {
            let mut v = with("stream", json!(true));
            v["stream_options"] = opts;
            req(v)
        };
        assert!(
            !streamed(json!({"include_usage": null}))
                .unwrap()
                .1
                .include_usage
        );
        assert!(streamed(json!({"include_obfuscation": false})).is_ok());
        for (opts, param) in [
            (
                json!({"include_usage": "yes"}),
                "stream_options.include_usage",
            ),
            (json!({"foo": true}), "stream_options.foo"),
            (json!(true), "stream_options"),
        ] {
            let err = streamed(opts.clone()).unwrap_err();
            assert_eq!(err.param(), Some(param), "{opts}: {err}");
        }
        let mut both = base();
        both["max_tokens"] = json!(3);
        both["max_completion_tokens"] = json!(4);
        assert!(req(both).is_err());
    }

    #[test]
    fn finish_reasons_and_usage() {
        assert_eq!(finish_reason(None, false), "stop");
        assert_eq!(finish_reason(None, true), "tool_calls");
        assert_eq!(finish_reason(Some(FinishReason::Length), true), "length");
        assert_eq!(finish_reason(Some(FinishReason::Other), false), "stop");
        assert_eq!(usage(Some(3), Some(4)).unwrap()["total_tokens"], 7);
        assert!(usage(None, Some(4)).is_none());
        assert_ne!(completion_id(), completion_id());
    }
}
