//! The OpenAI Chat Completions API: `POST /v1/chat/completions`, answered with JSON or SSE.
//!
//! Requests are validated against what chatd can honour: a field that would change the answer
//! and cannot be passed on (e.g. `n` > 1, `logprobs`, a JSON schema) is a 400 naming it,
//! never silently dropped. Errors use OpenAI's shape so SDKs raise their typed exceptions.

use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::{
    Events, Framing, RequestBody, StreamRender, WireFormat, now_secs, parse_json, random_id,
};
use crate::api::types::{
    self, ApiMessage, Sampling, Stop, check_sampling, convert_messages, convert_tools,
};
use crate::api::with_retry_after;
use crate::contract::{ChatRequest, FinishReason, StreamChunk};
use crate::error::GatewayError;
use crate::gateway::{ChatOutcome, ChatStream};

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
    #[serde(default, deserialize_with = "types::integer")]
    seed: Option<i64>,
    #[serde(default, deserialize_with = "types::number")]
    presence_penalty: Option<f64>,
    #[serde(default, deserialize_with = "types::number")]
    frequency_penalty: Option<f64>,
    /// Not OpenAI's, but OpenRouter's and vLLM's (sent through the SDKs' `extra_body`).
    #[serde(default, deserialize_with = "types::token_count")]
    top_k: Option<u64>,
    #[serde(default, deserialize_with = "types::number")]
    repetition_penalty: Option<f64>,
    /// Everything else: refused when chatd cannot honour it (see [`check_extra_fields`]),
    /// else passed through to providers that forward extra fields (`extra_body`).
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// What one validated request asks of the response.
#[derive(Debug)]
pub struct Shape {
    model: String,
    include_usage: bool,
}

impl RequestBody for CompletionsRequest {
    type Shape = Shape;

    fn into_contract(self) -> Result<(ChatRequest, Shape), GatewayError> {
        check_extra_fields(&self.extra)?;
        let model = types::required_model(self.model)?;
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
        let response_format = types::openai_response_format(self.response_format)?;
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
        let (think, reasoning_effort) = match self.reasoning_effort {
            None => (None, None),
            Some(level) if level == "none" => (Some(false), None),
            Some(level) if matches!(level.as_str(), "minimal" | "low" | "medium" | "high") => {
                (Some(true), Some(level))
            }
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
        let mut request = types::chat_request(model.clone(), convert_messages(self.messages)?);
        request.max_tokens = max_tokens;
        request.temperature = self.temperature;
        request.top_p = self.top_p;
        Sampling {
            seed: self.seed,
            top_k: self.top_k,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repeat_penalty: self.repetition_penalty,
        }
        .apply(&mut request, "top_k")?;
        request.stop = self.stop.map(Stop::into_list).unwrap_or_default();
        request.response_format = response_format;
        request.think = think;
        request.reasoning_effort = reasoning_effort;
        request.stream = stream;
        request.tools = tools;
        request.tool_choice = tool_choice;
        // The fields checked above are neutral by now: nothing to pass on.
        request.extra = types::passthrough(self.extra, &[IGNORED, NOT_HONOURED]);
        Ok((
            request,
            Shape {
                model,
                include_usage,
            },
        ))
    }

    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
}

/// OpenAI's fields that change the answer in ways no adapter can carry back (several
/// choices, log probabilities, audio out, ...), refused whatever the provider: passing them
/// through would answer without them. Neutral values pass (`n: 1`, `logprobs: false`).
const NOT_HONOURED: &[&str] = &[
    "n",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "modalities",
    "audio",
    "prediction",
    "web_search_options",
    "functions",
    "function_call",
];

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
        if value.is_null() || !NOT_HONOURED.contains(&field.as_str()) {
            continue;
        }
        let neutral = match field.as_str() {
            "n" => value.as_u64() == Some(1),
            "logprobs" => value == &Value::Bool(false),
            "logit_bias" => value.as_object().is_some_and(Map::is_empty),
            "modalities" => value == &json!(["text"]),
            _ => false,
        };
        if neutral {
            continue;
        }
        let why = match field.as_str() {
            "n" => "only n = 1 is supported".to_owned(),
            "functions" | "function_call" => {
                format!("{field} is deprecated; use tools and tool_choice")
            }
            _ => format!("{field} is not supported by chatd"),
        };
        return Err(GatewayError::bad_param(field, why));
    }
    Ok(())
}

/// Renders an error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
pub fn openai_error(err: &GatewayError) -> Response {
    let body = json!({"error": {
        "message": err.to_string(),
        "type": err.openai_type(),
        "param": err.param(),
        "code": err.openai_code(),
    }});
    with_retry_after(err, (err.status(), axum::Json(body)).into_response())
}

/// `POST /v1/chat/completions`.
pub struct OpenAi;

impl WireFormat for OpenAi {
    const ENDPOINT: &'static str = "/v1/chat/completions";
    const FRAMING: Framing = Framing::Sse;
    /// SSE comments: clients ignore them (the SSE rules; OpenRouter sends them too).
    const KEEPS_ALIVE: bool = true;
    type Request = CompletionsRequest;
    type Stream = OpenAiStream;

    fn answer(shape: Shape, out: ChatOutcome) -> Response {
        let r = out.response;
        let tool_calls = r
            .tool_calls
            .as_deref()
            .and_then(|t| serde_json::from_str::<&RawValue>(t).ok());
        let has_calls = tool_calls.is_some();
        let only_calls = has_calls && r.content.is_empty();
        let body = Completion {
            id: completion_id(),
            object: "chat.completion",
            created: now_secs(),
            model: &shape.model,
            choices: [Choice {
                index: 0,
                message: AnswerMessage {
                    role: "assistant",
                    content: if only_calls { None } else { Some(&r.content) },
                    reasoning_content: r.reasoning.as_deref(),
                    tool_calls,
                },
                finish_reason: finish_reason(r.finish, has_calls),
                logprobs: (),
            }],
            usage: Usage::of(r.usage.input_tokens, r.usage.output_tokens),
        };
        axum::Json(body).into_response()
    }

    /// The answer's `model` is the candidate that served it, as a routable id
    /// (`provider/model`): a fallback's answer says so.
    fn served(shape: &mut Shape, route: &crate::routing::Route) {
        shape.model = format!("{}/{}", route.provider, route.model);
    }

    fn stream(shape: Shape) -> OpenAiStream {
        OpenAiStream {
            shape,
            id: completion_id(),
            created: now_secs(),
            finish: None,
            sent_finish: false,
            saw_tool_calls: false,
            input_tokens: None,
            output_tokens: None,
        }
    }

    fn error(err: &GatewayError) -> Response {
        openai_error(err)
    }
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

/// A whole answer, its fields in OpenAI's order. Typed rather than built as a `Value`: it
/// is written for every non-streamed request.
#[derive(Serialize)]
struct Completion<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: AnswerMessage<'a>,
    finish_reason: &'static str,
    /// Always `null`: asking for log probabilities is refused.
    logprobs: (),
}

#[derive(Serialize)]
struct AnswerMessage<'a> {
    role: &'static str,
    /// `null` when the answer is only tool calls.
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    /// The adapter's JSON text, passed through once checked to be JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<&'a RawValue>,
}

/// OpenAI `usage`, only when the upstream reported both counts (never invented).
#[derive(Debug, Serialize)]
struct Usage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u64,
}

impl Usage {
    fn of(input: Option<u32>, output: Option<u32>) -> Option<Usage> {
        let (i, o) = (input?, output?);
        Some(Usage {
            prompt_tokens: i,
            completion_tokens: o,
            total_tokens: u64::from(i) + u64::from(o),
        })
    }
}

fn completion_id() -> String {
    random_id("chatcmpl-")
}

/// The SSE body: a role chunk, content/reasoning/tool-call deltas as they arrive, a chunk
/// with `finish_reason` (as soon as the upstream gives one, else at the end), a usage chunk
/// when asked (and known), then `[DONE]`. A failure midway becomes an `{"error": ...}` event
/// and the stream ends.
pub struct OpenAiStream {
    shape: Shape,
    id: String,
    created: u64,
    finish: Option<FinishReason>,
    sent_finish: bool,
    saw_tool_calls: bool,
    input_tokens: Option<u32>,
    output_tokens: Option<u32>,
}

impl OpenAiStream {
    fn chunk_json(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.shape.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        })
    }

    fn finish_chunk(&mut self, out: &mut Events) {
        self.sent_finish = true;
        let reason = finish_reason(self.finish, self.saw_tool_calls);
        out.push(&self.chunk_json(json!({}), Some(reason)));
    }
}

impl StreamRender for OpenAiStream {
    fn open(&mut self, out: &mut Events) {
        out.push(&self.chunk_json(json!({"role": "assistant", "content": ""}), None));
    }

    fn chunk(&mut self, chunk: StreamChunk, out: &mut Events) {
        self.finish = chunk.finish.or(self.finish);
        self.input_tokens = chunk.usage.input_tokens.or(self.input_tokens);
        self.output_tokens = chunk.usage.output_tokens.or(self.output_tokens);
        let mut delta = Map::new();
        if let Some(c) = chunk.content.filter(|c| !c.is_empty()) {
            delta.insert("content".into(), Value::String(c));
        }
        if let Some(r) = chunk.reasoning.filter(|r| !r.is_empty()) {
            delta.insert("reasoning_content".into(), Value::String(r));
        }
        if let Some(calls) = parse_json(chunk.tool_calls.as_deref()) {
            self.saw_tool_calls = true;
            delta.insert("tool_calls".into(), calls);
        }
        if !delta.is_empty() {
            out.push(&self.chunk_json(Value::Object(delta), None));
        }
        // The finish chunk goes out as soon as the upstream names the reason: an upstream
        // asked for usage sends it in a later event, and a client should not wait for that
        // to learn the answer is complete.
        if self.finish.is_some() && !self.sent_finish {
            self.finish_chunk(out);
        }
    }

    fn end(&mut self, _: &ChatStream, out: &mut Events) {
        if !self.sent_finish {
            self.finish_chunk(out);
        }
        if self.shape.include_usage
            && let Some(usage) = Usage::of(self.input_tokens, self.output_tokens)
        {
            let mut last = self.chunk_json(json!({}), None);
            last["choices"] = json!([]);
            last["usage"] = json!(usage);
            out.push(&last);
        }
        out.raw_data("[DONE]");
    }

    fn error(&mut self, e: &GatewayError, out: &mut Events) {
        out.push(&json!({"error": {"message": e.to_string(), "type": e.openai_type(), "code": e.openai_code(), "param": null}}));
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;
    use crate::contract::ResponseFormat;

    fn req(v: Value) -> Result<(ChatRequest, Shape), GatewayError> {
        parse::<CompletionsRequest>(v)
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
            ("modalities", json!(["text"])),
        ] {
            let (r, _) = req(with(f, v.clone())).unwrap_or_else(|e| panic!("{f}={v}: {e}"));
            // Neutral: nothing to forward, and nothing that needs a capability.
            assert_eq!(r.extra, None, "{f}={v}");
            assert_eq!(r.presence_penalty, None, "{f}={v}");
        }
        for (f, v) in [
            ("n", json!(2)),
            ("logprobs", json!(true)),
            ("top_logprobs", json!(2)),
            ("functions", json!([])),
            ("audio", json!({"voice": "x"})),
        ] {
            let err = parse::<CompletionsRequest>(with(f, v)).unwrap_err();
            assert_eq!(err.param(), Some(f), "{err}");
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
        }
        // Sampling options contract 0.3.0 carries, for the providers whose adapters declare
        // them (the gateway refuses them for the others, naming them).
        let mut body = base();
        for (f, v) in [
            ("seed", json!(7)),
            ("frequency_penalty", json!(0.5)),
            ("presence_penalty", json!(-1)),
            ("top_k", json!(40)),
            ("repetition_penalty", json!(1.1)),
        ] {
            body[f] = v;
        }
        let (r, _) = req(body).unwrap();
        assert_eq!(
            (
                r.seed,
                r.frequency_penalty,
                r.presence_penalty,
                r.top_k,
                r.repeat_penalty
            ),
            (Some(7), Some(0.5), Some(-1.0), Some(40), Some(1.1))
        );
        assert!(serde_json::from_value::<CompletionsRequest>(with("seed", json!(1.5))).is_err());
        // Unknown fields are the client's extra_body: passed through (or refused by the
        // gateway, naming them, where the adapter forwards none).
        let mut body = with("bogus", json!(1));
        body["provider"] = json!({"order": ["a"]});
        body["user"] = json!("u");
        let (r, _) = req(body).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(r.extra.as_deref().unwrap()).unwrap(),
            json!({"bogus": 1, "provider": {"order": ["a"]}})
        );
    }

    #[test]
    fn openai_fields_map_to_the_contract() {
        let (r, s) = parse::<CompletionsRequest>(json!({
            "model": "ollama/q", "messages": [{"role":"user","content":[{"type":"text","text":"hi"}]}],
            "max_completion_tokens": 5, "stop": "END", "response_format": {"type": "json_object"},
            "stream": true, "stream_options": {"include_usage": true}, "reasoning_effort": "none",
        }))
        .unwrap();
        assert_eq!(
            (
                r.max_tokens,
                r.stop.clone(),
                matches!(r.response_format, ResponseFormat::JsonObject),
                r.stream,
                r.think
            ),
            (Some(5), vec!["END".to_string()], true, true, Some(false))
        );
        assert!(s.include_usage);
        assert_eq!(
            parse::<CompletionsRequest>(with("response_format", json!({"type":"json_schema"})))
                .unwrap_err()
                .param(),
            Some("response_format.json_schema")
        );
        assert_eq!(
            req(with("response_format", json!({"type":"xml"})))
                .unwrap_err()
                .param(),
            Some("response_format")
        );
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let (r, _) = req(with(
            "response_format",
            json!({"type": "json_schema", "json_schema": {"name": "Thing", "schema": schema, "strict": true}}),
        ))
        .unwrap();
        let ResponseFormat::JsonSchema(js) = r.response_format else {
            panic!("not a schema");
        };
        assert_eq!((js.name.as_str(), js.strict), ("Thing", true));
        assert_eq!(serde_json::from_str::<Value>(&js.schema).unwrap(), schema);
        assert_eq!(
            parse::<CompletionsRequest>(with("stream_options", json!({"include_usage":true})))
                .unwrap_err()
                .param(),
            Some("stream_options")
        );
        let streamed = |opts: Value| {
            let mut v = with("stream", json!(true));
            v["stream_options"] = opts;
            parse::<CompletionsRequest>(v)
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
        assert!(parse::<CompletionsRequest>(both).is_err());
    }

    #[test]
    fn finish_reasons_and_usage() {
        assert_eq!(finish_reason(None, false), "stop");
        assert_eq!(finish_reason(None, true), "tool_calls");
        assert_eq!(finish_reason(Some(FinishReason::Length), true), "length");
        assert_eq!(finish_reason(Some(FinishReason::Other), false), "stop");
        assert_eq!(json!(Usage::of(Some(3), Some(4)))["total_tokens"], 7);
        assert!(Usage::of(None, Some(4)).is_none());
        assert_ne!(completion_id(), completion_id());
    }
}
