//! The Anthropic Messages API: `POST /v1/messages` (JSON or SSE) and
//! `POST /v1/messages/count_tokens`, in front of every provider.
//!
//! Agents built on it (Claude Code) send fields beyond the published reference and retry a
//! 400 with fewer features until they give up, so a field that does not change the answer
//! through chatd's upstreams is accepted and ignored (logged at debug); only what would change
//! the answer and cannot be carried is refused, in Anthropic's error shape.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::conversation::{Conversation, image_url, inline_image, join};
use super::tools::{CallEvent, StreamedCalls, contract_tool, whole_calls};
use super::{
    Events, Framing, RequestBody, StreamRender, WireFormat, chat_request, empty_usage, keep_usage,
    random_id,
};
use crate::api::pipeline::failed;
use crate::api::types::{self, check_sampling};
use crate::api::{AppState, JsonBody, log_failure};
use crate::contract::{
    ChatRequest, ContentPart, FinishReason, JsonSchema, Message, ResponseFormat, StreamChunk, Usage,
};
use crate::error::GatewayError;
use crate::gateway::{ChatOutcome, ChatStream};

/// The body of `POST /v1/messages` (and of `count_tokens`, which has no `max_tokens`).
#[derive(Debug, Deserialize)]
#[serde(expecting = "a JSON object")]
pub struct MessagesRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    messages: Option<Vec<Value>>,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default, deserialize_with = "types::token_count")]
    max_tokens: Option<u64>,
    #[serde(default, deserialize_with = "types::number")]
    temperature: Option<f64>,
    #[serde(default, deserialize_with = "types::number")]
    top_p: Option<f64>,
    #[serde(default, deserialize_with = "types::token_count")]
    top_k: Option<u64>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    thinking: Option<Value>,
    #[serde(default)]
    output_config: Option<Value>,
    /// Everything else: accepted and ignored unless listed in [`check_extra`].
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// What the answer needs of the request: the model as the client named it.
#[derive(Debug)]
pub struct Shape {
    model: String,
}

impl RequestBody for MessagesRequest {
    type Shape = Shape;

    fn into_contract(self) -> Result<(ChatRequest, Shape), GatewayError> {
        check_extra(&self.extra)?;
        let model = types::required_model(self.model)?;
        // Anthropic requires max_tokens; without it the upstream's own limit applies.
        let max_tokens =
            check_sampling(self.temperature, self.top_p, self.max_tokens, "max_tokens")?;
        let top_k = types::u32_option(self.top_k, "top_k")?;
        let config = self.output_config.as_ref().filter(|c| !c.is_null());
        let (think, reasoning_effort) = thinking(self.thinking.as_ref(), config)?;
        let response_format = match config {
            Some(config) => output_format(config)?,
            None => ResponseFormat::Text,
        };
        let (tools, tool_choice) = tools(self.tools, self.tool_choice)?;
        let request = ChatRequest {
            max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k,
            stop: self
                .stop_sequences
                .unwrap_or_default()
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect(),
            response_format,
            think,
            reasoning_effort,
            stream: self.stream.unwrap_or(false),
            tools,
            tool_choice,
            ..chat_request(model.clone(), messages(self.system, self.messages)?)
        };
        Ok((request, Shape { model }))
    }

    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
}

/// Fields that would change the answer and that no upstream of chatd can carry.
fn check_extra(extra: &Map<String, Value>) -> Result<(), GatewayError> {
    for (field, value) in extra {
        let refused = match field.as_str() {
            // Anthropic's MCP connector calls the servers from its side.
            "mcp_servers" => value.as_array().is_some_and(|v| !v.is_empty()),
            _ => false,
        };
        if refused {
            return Err(GatewayError::bad_param(
                field,
                format!("{field} is not supported by chatd"),
            ));
        }
        tracing::debug!(field, "Anthropic request field accepted and ignored");
    }
    Ok(())
}

/// `thinking` → reasoning on or off, and how hard: `budget_tokens`, or `output_config.effort`.
/// `adaptive` leaves it to the upstream's default: asking a model that cannot reason to do so
/// is an error on some upstreams (Ollama).
fn thinking(
    thinking: Option<&Value>,
    config: Option<&Value>,
) -> Result<(Option<bool>, Option<String>), GatewayError> {
    let Some(thinking) = thinking.filter(|t| !t.is_null()) else {
        return Ok((None, None));
    };
    match thinking.get("type").and_then(Value::as_str) {
        Some("enabled") => {
            let named = config
                .and_then(|c| c.get("effort"))
                .and_then(Value::as_str)
                .map(|effort| match effort {
                    "low" | "medium" | "high" => effort,
                    _ => "high",
                });
            let budget = thinking.get("budget_tokens").and_then(Value::as_u64);
            let effort = named.or(budget.map(|b| match b {
                0..4096 => "low",
                4096..16384 => "medium",
                _ => "high",
            }));
            Ok((Some(true), effort.map(str::to_owned)))
        }
        Some("disabled") => Ok((Some(false), None)),
        Some(other) => {
            tracing::debug!(kind = other, "thinking type left to the upstream's default");
            Ok((None, None))
        }
        None => Err(GatewayError::bad_param(
            "thinking.type",
            "thinking needs a type (\"enabled\", \"disabled\" or \"adaptive\")",
        )),
    }
}

/// `output_config.format`: the JSON schema the answer must follow. Not strict: Anthropic's
/// schemas are not written for OpenAI's strict subset, which an upstream would refuse.
fn output_format(config: &Value) -> Result<ResponseFormat, GatewayError> {
    let Some(format) = config.get("format").filter(|f| !f.is_null()) else {
        return Ok(ResponseFormat::Text);
    };
    match (
        format.get("type").and_then(Value::as_str),
        format.get("schema"),
    ) {
        (Some("json_schema"), Some(schema @ Value::Object(_))) => {
            Ok(ResponseFormat::JsonSchema(JsonSchema {
                name: "response".to_owned(),
                schema: schema.to_string(),
                strict: false,
            }))
        }
        _ => Err(GatewayError::bad_param(
            "output_config.format",
            "output_config.format must be {\"type\": \"json_schema\", \"schema\": {...}}",
        )),
    }
}

/// Anthropic tools → the contract's OpenAI-shaped tools; `tool_choice` likewise.
fn tools(
    tools: Option<Vec<Value>>,
    choice: Option<Value>,
) -> Result<(Option<String>, Option<String>), GatewayError> {
    let mut converted = Vec::new();
    for (i, tool) in tools.unwrap_or_default().iter().enumerate() {
        let field = format!("tools[{i}]");
        let kind = tool.get("type").and_then(Value::as_str);
        let name = tool.get("name").and_then(Value::as_str).unwrap_or_default();
        match kind {
            None | Some("custom") => {}
            // Tools Anthropic runs on its side: offers the upstream model cannot take up.
            Some(k) if is_server_tool(k) => {
                tracing::debug!(tool = k, "Anthropic server tool left out");
                continue;
            }
            Some(k) => {
                return Err(GatewayError::bad_param(
                    &field,
                    format!(
                        "{field} has type {k:?}; chatd supports custom tools (name, description, input_schema)"
                    ),
                ));
            }
        }
        if name.is_empty() {
            return Err(GatewayError::bad_param(
                &format!("{field}.name"),
                format!("{field}.name is required"),
            ));
        }
        // A deferred tool is not shown to the model until a tool search finds it.
        if tool.get("defer_loading").and_then(Value::as_bool) == Some(true) {
            tracing::debug!(tool = name, "deferred tool left out");
            continue;
        }
        converted.push(contract_tool(
            name,
            tool.get("description"),
            tool.get("input_schema"),
        ));
    }
    let choice = match choice.as_ref().filter(|c| !c.is_null()) {
        None => None,
        Some(choice) => match choice.get("type").and_then(Value::as_str) {
            Some("auto") => Some(json!("auto")),
            Some("any") => Some(json!("required")),
            Some("none") => Some(json!("none")),
            Some("tool") => {
                let name = choice.get("name").and_then(Value::as_str).ok_or_else(|| {
                    GatewayError::bad_param("tool_choice.name", "tool_choice.name is required")
                })?;
                Some(json!({"type": "function", "function": {"name": name}}))
            }
            _ => {
                return Err(GatewayError::bad_param(
                    "tool_choice",
                    "tool_choice must be {\"type\": \"auto\" | \"any\" | \"none\"} or {\"type\": \"tool\", \"name\": ...}",
                ));
            }
        },
    };
    // A choice that forces a tool left out (or any tool, when none is left) cannot be
    // honoured; otherwise tools all left out leave nothing to choose from.
    let offered = |name: &str| converted.iter().any(|t| t["function"]["name"] == name);
    match choice.as_ref() {
        Some(Value::String(any)) if any == "required" && converted.is_empty() => {
            return Err(GatewayError::bad_param(
                "tool_choice",
                "tool_choice requires a tool call, but no tool chatd can offer the model was given",
            ));
        }
        Some(Value::Object(forced)) => {
            let name = forced["function"]["name"].as_str().unwrap_or_default();
            if !offered(name) {
                return Err(GatewayError::bad_param(
                    "tool_choice.name",
                    format!("tool_choice names {name:?}, which is not among the custom tools"),
                ));
            }
        }
        _ => {}
    }
    if converted.is_empty() {
        return Ok((None, None));
    }
    Ok((
        Some(Value::Array(converted).to_string()),
        choice.map(|c| c.to_string()),
    ))
}

/// Tool types Anthropic executes itself (web search and fetch, code execution, tool search).
fn is_server_tool(kind: &str) -> bool {
    [
        "web_search_",
        "web_fetch_",
        "code_execution_",
        "tool_search_tool_",
    ]
    .iter()
    .any(|p| kind.starts_with(p))
}

/// `system` and `messages` → the contract's messages.
fn messages(
    system: Option<Value>,
    messages: Option<Vec<Value>>,
) -> Result<Vec<Message>, GatewayError> {
    let mut conversation = Conversation::default();
    if let Some(system) = system.filter(|s| !s.is_null()) {
        conversation.system(system_text(&system, "system")?);
    }
    let messages = types::required_messages(messages)?;
    for (i, message) in messages.iter().enumerate() {
        let field = format!("messages[{i}]");
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let content = message.get("content").unwrap_or(&Value::Null);
        match role {
            // Claude Code puts its environment block in a system turn inside `messages`.
            "system" => conversation.system(system_text(content, &format!("{field}.content"))?),
            "user" => user_turn(&mut conversation, content, &field)?,
            "assistant" => assistant_turn(&mut conversation, content, &field)?,
            other => {
                return Err(GatewayError::bad_param(
                    &format!("{field}.role"),
                    format!("{field}.role is {other:?}; expected user or assistant"),
                ));
            }
        }
    }
    conversation.finish("messages")
}

/// A string or a list of text blocks.
fn system_text(value: &Value, field: &str) -> Result<String, GatewayError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Array(blocks) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (i, block) in blocks.iter().enumerate() {
                let at = format!("{field}[{i}]");
                match block_type(block) {
                    "text" => texts.push(text_of(block, &at)?),
                    _ => return Err(not_text(&at)),
                }
            }
            Ok(join(texts))
        }
        _ => Err(GatewayError::bad_param(
            field,
            format!("{field} must be a string or an array of text blocks"),
        )),
    }
}

fn not_text(field: &str) -> GatewayError {
    GatewayError::bad_param(
        field,
        format!("{field} must be {{\"type\": \"text\", \"text\": \"...\"}}"),
    )
}

fn block_type(block: &Value) -> &str {
    block.get("type").and_then(Value::as_str).unwrap_or("")
}

/// The blocks of a turn: a string is one text block.
fn blocks<'a>(content: &'a Value, field: &str) -> Result<Vec<&'a Value>, GatewayError> {
    match content {
        Value::Array(blocks) => Ok(blocks.iter().collect()),
        Value::String(_) => Ok(vec![content]),
        _ => Err(GatewayError::bad_param(
            &format!("{field}.content"),
            format!("{field}.content must be a string or an array of content blocks"),
        )),
    }
}

/// A user turn: its text and images, and each `tool_result` as a tool turn, in order.
fn user_turn(
    conversation: &mut Conversation,
    content: &Value,
    field: &str,
) -> Result<(), GatewayError> {
    let mut parts = Vec::new();
    for (i, block) in blocks(content, field)?.into_iter().enumerate() {
        let at = format!("{field}.content[{i}]");
        if block_type(block) == "tool_result" {
            // What was given before a result belongs before it.
            conversation.user(std::mem::take(&mut parts));
            let id = block
                .get("tool_use_id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .ok_or_else(|| {
                    GatewayError::bad_param(
                        &format!("{at}.tool_use_id"),
                        format!("{at}.tool_use_id is required"),
                    )
                })?;
            let result = match block.get("content") {
                None | Some(Value::Null) => Vec::new(),
                Some(content) => {
                    let mut result = Vec::new();
                    for (j, inner) in blocks(content, &at)?.into_iter().enumerate() {
                        result.push(part(inner, &format!("{at}.content[{j}]"))?);
                    }
                    result
                }
            };
            conversation.tool_result(id, None, result);
        } else {
            parts.push(part(block, &at)?);
        }
    }
    conversation.user(parts);
    Ok(())
}

/// A text or image block (or a plain string) as a content part.
fn part(block: &Value, field: &str) -> Result<ContentPart, GatewayError> {
    if let Value::String(text) = block {
        return Ok(ContentPart::Text(text.clone()));
    }
    match block_type(block) {
        "text" => Ok(ContentPart::Text(text_of(block, field)?.to_owned())),
        "image" => {
            let source = block.get("source").unwrap_or(&Value::Null);
            let text = |key: &str| source.get(key).and_then(Value::as_str).unwrap_or_default();
            match text("type") {
                "base64" => inline_image(
                    text("media_type"),
                    text("data"),
                    &format!("{field}.source.data"),
                ),
                "url" => image_url(text("url"), None, &format!("{field}.source.url")),
                other => Err(GatewayError::bad_param(
                    &format!("{field}.source.type"),
                    format!("{field}.source.type is {other:?}; chatd takes base64 and url images"),
                )),
            }
        }
        other => Err(unsupported_block(field, other)),
    }
}

fn text_of<'a>(block: &'a Value, field: &str) -> Result<&'a str, GatewayError> {
    block
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| not_text(field))
}

/// An assistant turn sent back: text, `tool_use` blocks as calls, thinking as the turn's
/// reasoning (the adapter decides whether its upstream takes it back).
fn assistant_turn(
    conversation: &mut Conversation,
    content: &Value,
    field: &str,
) -> Result<(), GatewayError> {
    let mut texts: Vec<&str> = Vec::new();
    let mut calls = Vec::new();
    for (i, block) in blocks(content, field)?.into_iter().enumerate() {
        let at = format!("{field}.content[{i}]");
        if let Value::String(text) = block {
            texts.push(text);
            continue;
        }
        match block_type(block) {
            "text" => texts.push(text_of(block, &at)?),
            "tool_use" => {
                let id = block.get("id").and_then(Value::as_str).unwrap_or_default();
                let name = block
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if id.is_empty() || name.is_empty() {
                    return Err(GatewayError::bad_param(
                        &at,
                        format!("{at}: a tool_use block needs an id and a name"),
                    ));
                }
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push((id, name, input.to_string()));
            }
            "thinking" => {
                let thinking = block.get("thinking").and_then(Value::as_str);
                conversation.reasoning(thinking.unwrap_or_default().to_owned());
            }
            "redacted_thinking" => {}
            other => return Err(unsupported_block(&at, other)),
        }
    }
    conversation.assistant(join(texts));
    for (id, name, arguments) in calls {
        conversation.call(id, name, arguments);
    }
    Ok(())
}

fn unsupported_block(field: &str, kind: &str) -> GatewayError {
    GatewayError::bad_param(
        field,
        format!(
            "{field} has type {kind:?}; chatd supports text, image, tool_use, tool_result and thinking blocks"
        ),
    )
}

/// `POST /v1/messages`.
pub struct Anthropic;

impl WireFormat for Anthropic {
    const ENDPOINT: &'static str = "/v1/messages";
    const FRAMING: Framing = Framing::Sse;
    const KEEPS_ALIVE: bool = true;
    type Request = MessagesRequest;
    type Stream = AnthropicStream;

    fn answer(shape: Shape, out: ChatOutcome) -> Response {
        let r = out.response;
        let calls = whole_calls(r.tool_calls.as_deref(), TOOL_ID_PREFIX);
        let mut content = Vec::new();
        if let Some(thinking) = r.reasoning.filter(|t| !t.is_empty()) {
            content.push(json!({"type": "thinking", "thinking": thinking, "signature": ""}));
        }
        if !r.content.is_empty() {
            content.push(json!({"type": "text", "text": r.content}));
        }
        for call in &calls {
            content.push(json!({
                "type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments_object(),
            }));
        }
        let body = json!({
            "id": random_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": shape.model,
            "content": content,
            "stop_reason": stop_reason(r.finish, !calls.is_empty()),
            "stop_sequence": null,
            "usage": usage(&r.usage),
        });
        axum::Json(body).into_response()
    }

    fn stream(shape: Shape) -> AnthropicStream {
        AnthropicStream {
            id: random_id("msg_"),
            model: shape.model,
            started: false,
            blocks: 0,
            open: None,
            calls: StreamedCalls::default(),
            call_blocks: Vec::new(),
            finish: None,
            usage: empty_usage(),
        }
    }

    fn error(err: &GatewayError) -> Response {
        (err.status(), axum::Json(error_body(err))).into_response()
    }
}

/// The prefix of the tool-call ids chatd makes up (Anthropic's own are `toolu_...`).
const TOOL_ID_PREFIX: &str = "toolu_";

/// `{"type":"error","error":{"type","message"}}`, with chatd's code where the SDKs read an
/// error code (`error.details.error_code`).
fn error_body(err: &GatewayError) -> Value {
    json!({"type": "error", "error": {
        "type": err.anthropic_type(),
        "message": err.to_string(),
        "details": {"error_code": err.code()},
    }})
}

fn stop_reason(finish: Option<FinishReason>, called: bool) -> &'static str {
    match finish {
        Some(FinishReason::Length) => "max_tokens",
        Some(FinishReason::ContentFilter) => "refusal",
        // Ollama says "stop" after a tool call.
        _ if called => "tool_use",
        Some(FinishReason::ToolCalls) => "tool_use",
        _ => "end_turn",
    }
}

/// Anthropic's usage; its fields are required, so a count the upstream did not report is 0.
/// Anthropic counts cached input apart from `input_tokens`; OpenAI-style upstreams count it
/// in.
fn usage(usage: &Usage) -> Value {
    let cached = usage.cached_input_tokens.unwrap_or(0);
    json!({
        "input_tokens": usage.input_tokens.unwrap_or(0).saturating_sub(cached),
        "output_tokens": usage.output_tokens.unwrap_or(0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    })
}

/// A content block being streamed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Block {
    Text,
    Thinking,
    /// The tool call at this position among the answer's calls.
    Tool(usize),
}

/// The SSE stream: `message_start`; per block `content_block_start`, its deltas
/// (`thinking_delta`, `text_delta`, `input_json_delta` — a tool's input always in deltas
/// after an empty `input`, as Claude Code requires) and `content_block_stop`; then
/// `message_delta` with the stop reason and usage, and `message_stop`. A failure after the
/// head is an `error` event. Every event is named by an `event:` line: the SDKs drop unnamed
/// ones.
pub struct AnthropicStream {
    id: String,
    model: String,
    started: bool,
    /// Blocks started so far (the next block's index).
    blocks: usize,
    open: Option<Block>,
    calls: StreamedCalls,
    /// The block index of each call.
    call_blocks: Vec<usize>,
    finish: Option<FinishReason>,
    usage: Usage,
}

impl AnthropicStream {
    fn start(&mut self, out: &mut Events) {
        if self.started {
            return;
        }
        self.started = true;
        out.named(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": usage(&empty_usage()),
            }}),
        );
    }

    /// Makes `block` the open one (closing another); its index.
    fn enter(&mut self, block: Block, start: Value, out: &mut Events) -> usize {
        if self.open == Some(block) {
            return self.blocks - 1;
        }
        self.close(out);
        let index = self.blocks;
        self.blocks += 1;
        self.open = Some(block);
        out.named(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        );
        index
    }

    fn close(&mut self, out: &mut Events) {
        if self.open.take().is_some() {
            out.named(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.blocks - 1}),
            );
        }
    }

    fn delta(out: &mut Events, index: usize, delta: Value) {
        out.named(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }
}

impl StreamRender for AnthropicStream {
    fn open(&mut self, out: &mut Events) {
        self.start(out);
    }

    /// The head is `message_start` (Anthropic's streams begin with it), then `ping` events.
    fn keep_alive(&mut self, out: &mut Events) {
        if self.started {
            out.named("ping", &json!({"type": "ping"}));
        } else {
            self.start(out);
        }
    }

    fn chunk(&mut self, chunk: StreamChunk, out: &mut Events) {
        self.finish = chunk.finish.or(self.finish);
        keep_usage(&mut self.usage, chunk.usage);
        if let Some(thinking) = chunk.reasoning.filter(|r| !r.is_empty()) {
            let start = json!({"type": "thinking", "thinking": "", "signature": ""});
            let index = self.enter(Block::Thinking, start, out);
            Self::delta(
                out,
                index,
                json!({"type": "thinking_delta", "thinking": thinking}),
            );
        }
        if let Some(text) = chunk.content.filter(|c| !c.is_empty()) {
            let index = self.enter(Block::Text, json!({"type": "text", "text": ""}), out);
            Self::delta(out, index, json!({"type": "text_delta", "text": text}));
        }
        let Some(deltas) = chunk.tool_calls else {
            return;
        };
        for event in self.calls.feed(&deltas, TOOL_ID_PREFIX) {
            match event {
                CallEvent::Started(slot) => {
                    let call = self.calls.get(slot);
                    let start =
                        json!({"type": "tool_use", "id": call.id, "name": call.name, "input": {}});
                    let index = self.enter(Block::Tool(slot), start, out);
                    self.call_blocks.push(index);
                }
                CallEvent::Arguments(slot, piece) => {
                    let delta = json!({"type": "input_json_delta", "partial_json": piece});
                    Self::delta(out, self.call_blocks[slot], delta);
                }
            }
        }
    }

    fn end(&mut self, _: &ChatStream, out: &mut Events) {
        self.start(out);
        self.close(out);
        // Input tokens are known only now (Ollama counts them at the end); the SDKs take
        // them from here.
        let mut usage = usage(&self.usage);
        if self.usage.input_tokens.is_none() {
            // Absent rather than 0, so that the SDKs keep message_start's.
            if let Some(fields) = usage.as_object_mut() {
                fields.remove("input_tokens");
            }
        }
        out.named(
            "message_delta",
            &json!({"type": "message_delta", "delta": {
                "stop_reason": stop_reason(self.finish, !self.calls.is_empty()),
                "stop_sequence": null,
            }, "usage": usage}),
        );
        out.named("message_stop", &json!({"type": "message_stop"}));
    }

    fn error(&mut self, err: &GatewayError, out: &mut Events) {
        out.named("error", &error_body(err));
    }
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": N}` for the request as chatd would
/// send it, the model routed as for a chat (an unroutable model is the same error). The
/// count is an estimate: chatd's upstreams have no counting endpoint, and each model has its
/// own tokenizer, so chatd counts with OpenAI's o200k tokenizer, plus a few tokens per
/// message as chat templates add them.
pub async fn count_tokens(
    State(state): State<AppState>,
    body: Result<JsonBody<MessagesRequest>, GatewayError>,
) -> Response {
    const ENDPOINT: &str = "/v1/messages/count_tokens";
    let started = std::time::Instant::now();
    let counted = async {
        // The body's bytes count until the count is done: the request is held until then.
        let JsonBody(body, _held) = body.map_err(|e| (e, "-".to_owned()))?;
        let named = crate::api::named_model(body.model.as_deref());
        let fail = |e| (e, named.clone());
        let (request, _) = body.into_contract().map_err(fail)?;
        state
            .gateway
            .snapshot()
            .route(&request.model)
            .map_err(fail)?;
        // Tokenizing a long prompt takes milliseconds: not on the thread serving connections.
        tokio::task::spawn_blocking(move || estimate_input_tokens(&request))
            .await
            .map_err(|_| fail(GatewayError::Internal("counting tokens failed".into())))
    }
    .await;
    match counted {
        Ok(tokens) => {
            tracing::debug!(endpoint = ENDPOINT, tokens, "tokens counted");
            axum::Json(json!({"input_tokens": tokens})).into_response()
        }
        Err((e, named)) => {
            log_failure(
                ENDPOINT,
                &named,
                &e,
                crate::api::pipeline::ms(started.elapsed()),
            );
            failed::<Anthropic>(&e)
        }
    }
}

/// Tokens a chat template adds around each message (role markers), and to prime the answer;
/// OpenAI's published figures for its chat models.
const TOKENS_PER_MESSAGE: usize = 4;
const TOKENS_TO_PRIME: usize = 3;
/// What an image costs, whatever its size (chatd does not decode images): Anthropic's figure
/// for one of about 1.15 megapixels, the size its API scales large images down to.
const TOKENS_PER_IMAGE: usize = 1600;

/// The prompt's size in o200k tokens: every message's text and tool calls, and the tools.
fn estimate_input_tokens(request: &ChatRequest) -> usize {
    let bpe = tiktoken_rs::o200k_base_singleton();
    let count = |text: &str| bpe.encode_ordinary(text).len();
    let mut tokens = TOKENS_TO_PRIME;
    for message in &request.messages {
        tokens += TOKENS_PER_MESSAGE;
        for part in &message.content {
            tokens += match part {
                ContentPart::Text(text) => count(text),
                ContentPart::Image(_) => TOKENS_PER_IMAGE,
                ContentPart::Other((_, json)) => count(json),
            };
        }
        if let Some(reasoning) = &message.reasoning {
            tokens += count(reasoning);
        }
        if let Some(calls) = &message.tool_calls {
            tokens += count(calls);
        }
    }
    if let Some(tools) = &request.tools {
        tokens += count(tools);
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::super::conversation::text_of;
    use super::super::parse;
    use super::*;

    #[test]
    fn claude_code_turns_become_contract_messages() {
        let (r, s) = parse::<MessagesRequest>(json!({
            "model": "ollama/q", "max_tokens": 32000, "stream": true,
            "system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "run it"}]},
                {"role": "system", "content": "# Environment"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hm", "signature": ""},
                    {"type": "text", "text": "Running."},
                    {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "a.txt"}], "is_error": false},
                    {"type": "text", "text": "and now?"}]},
            ],
            "tools": [
                {"name": "Bash", "input_schema": {"$schema": "x", "type": "object"}},
                {"name": "Later", "defer_loading": true, "input_schema": {"type": "object"}},
                {"type": "web_search_20250305", "name": "web_search"},
            ],
            "thinking": {"type": "adaptive", "display": "updates"},
            "context_management": {"edits": []}, "output_config": {"effort": "high"},
            "metadata": {"user_id": "{}"},
        }))
        .unwrap();
        assert_eq!(s.model, "ollama/q");
        let roles: Vec<_> = r.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(
            roles,
            ["system", "user", "system", "assistant", "tool", "user"]
        );
        assert_eq!(text_of(&r.messages[0].content), "A\nB");
        assert_eq!(text_of(&r.messages[3].content), "Running.");
        assert_eq!(r.messages[3].reasoning.as_deref(), Some("hm"));
        let calls: Value =
            serde_json::from_str(r.messages[3].tool_calls.as_deref().unwrap()).unwrap();
        assert_eq!(calls[0]["function"]["arguments"], r#"{"command":"ls"}"#);
        assert_eq!(r.messages[4].tool_call_id.as_deref(), Some("toolu_1"));
        assert_eq!(text_of(&r.messages[4].content), "a.txt");
        let tools: Value = serde_json::from_str(r.tools.as_deref().unwrap()).unwrap();
        assert_eq!(
            tools,
            json!([{"type": "function", "function": {"name": "Bash", "parameters": {"type": "object"}}}])
        );
        assert_eq!((r.think, r.max_tokens, r.stream), (None, Some(32000), true));
    }

    #[test]
    fn choices_thinking_and_refusals() {
        let base = || {
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}]})
        };
        let with = |field: &str, value: Value| {
            let mut v = base();
            v[field] = value;
            parse::<MessagesRequest>(v)
        };
        let choice = |v: Value| with("tool_choice", v).unwrap().0.tool_choice.unwrap();
        assert_eq!(choice(json!({"type": "any"})), "\"required\"");
        assert_eq!(
            choice(json!({"type": "tool", "name": "f"})),
            r#"{"function":{"name":"f"},"type":"function"}"#
        );
        assert_eq!(
            with(
                "thinking",
                json!({"type": "enabled", "budget_tokens": 2048})
            )
            .unwrap()
            .0
            .think,
            Some(true)
        );
        assert_eq!(
            with("thinking", json!({"type": "disabled"}))
                .unwrap()
                .0
                .think,
            Some(false)
        );
        for (field, value, param) in [
            ("tool_choice", json!({"type": "sometimes"}), "tool_choice"),
            ("mcp_servers", json!([{"url": "x"}]), "mcp_servers"),
            (
                "messages",
                json!([{"role": "robot", "content": "x"}]),
                "messages[0].role",
            ),
            (
                "messages",
                json!([{"role": "user", "content": [{"type": "document"}]}]),
                "messages[0].content[0]",
            ),
            (
                "tools",
                json!([{"type": "bash_20250124", "name": "bash"}]),
                "tools[0]",
            ),
            ("model", json!(""), "model"),
        ] {
            let err = with(field, value).unwrap_err();
            assert_eq!(err.param(), Some(param), "{err}");
        }
        // Unknown fields do not change the answer: accepted.
        assert!(with("service_tier", json!("auto")).is_ok());
        assert!(
            with("max_tokens", Value::Null)
                .unwrap()
                .0
                .max_tokens
                .is_none()
        );
    }

    #[test]
    fn images_schemas_and_sampling_reach_the_contract() {
        let (r, _) = parse::<MessagesRequest>(json!({
            "model": "m", "max_tokens": 5, "top_k": 40,
            "thinking": {"type": "enabled", "budget_tokens": 8000},
            "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is it?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}]}],
        }))
        .unwrap();
        assert_eq!(r.top_k, Some(40));
        assert_eq!(
            (r.think, r.reasoning_effort.as_deref()),
            (Some(true), Some("medium"))
        );
        assert!(
            matches!(&r.response_format, ResponseFormat::JsonSchema(s) if s.schema == r#"{"type":"object"}"#)
        );
        let parts = &r.messages[0].content;
        assert!(
            matches!(&parts[1], ContentPart::Image(i) if matches!(&i.source, crate::contract::ImageSource::Inline(x) if x.media_type == "image/png"))
        );
        assert!(
            matches!(&parts[2], ContentPart::Image(i) if matches!(&i.source, crate::contract::ImageSource::Url(_)))
        );
        let bad = parse::<MessagesRequest>(
            json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}),
        );
        assert_eq!(
            bad.unwrap_err().param(),
            Some("messages[0].content[0].source.type")
        );
    }

    #[test]
    fn a_slow_stream_starts_with_message_start_then_pings() {
        let mut stream = Anthropic::stream(Shape { model: "m".into() });
        let mut out = Events::new(Framing::Sse);
        stream.keep_alive(&mut out);
        stream.keep_alive(&mut out);
        stream.open(&mut out);
        let text = String::from_utf8(out.into_bytes().to_vec()).unwrap();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(names, ["message_start", "ping"], "{text}");
    }

    #[test]
    fn stop_reasons() {
        assert_eq!(stop_reason(Some(FinishReason::Stop), true), "tool_use");
        assert_eq!(stop_reason(Some(FinishReason::Length), true), "max_tokens");
        assert_eq!(stop_reason(None, false), "end_turn");
        assert_eq!(
            stop_reason(Some(FinishReason::ToolCalls), false),
            "tool_use"
        );
    }

    #[test]
    fn more_text_counts_more_tokens() {
        let (short, _) = parse::<MessagesRequest>(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .unwrap();
        let (long, _) = parse::<MessagesRequest>(json!({"model": "m", "messages": [{"role": "user", "content": "hello there ".repeat(50)}]})).unwrap();
        let (a, b) = (estimate_input_tokens(&short), estimate_input_tokens(&long));
        assert_eq!(a, TOKENS_TO_PRIME + TOKENS_PER_MESSAGE + 1);
        assert!(b > a + 50, "{a} {b}");
    }
}
