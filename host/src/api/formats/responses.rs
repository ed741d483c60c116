//! The OpenAI Responses API: `POST /v1/responses` (JSON or SSE), stateless, in front of every
//! provider.
//!
//! chatd stores no responses: each request carries the whole conversation in `input`, and a
//! continuation by `previous_response_id` (or a stored `conversation`) is refused with a 400
//! naming the field. Agents (Codex) send fields and tool types beyond the chat upstreams'
//! reach on every request: those that do not change the answer are accepted and ignored
//! (logged at debug), hosted tools are left out, and what cannot be honoured is a 400 in
//! OpenAI's shape.

use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::conversation::{Conversation, image_url, join, text_content};
use super::openai::openai_error;
use super::tools::{CallEvent, StreamedCalls, ToolCall, contract_tool, whole_calls};
use super::{
    Events, Framing, RequestBody, StreamRender, WireFormat, chat_request, empty_usage, keep_usage,
    now_secs, random_id,
};
use crate::api::types::{self, check_sampling};
use crate::contract::{
    ChatRequest, ContentPart, FinishReason, JsonSchema, Message, ResponseFormat, StreamChunk, Usage,
};
use crate::error::GatewayError;
use crate::gateway::{ChatOutcome, ChatStream};

/// The body of `POST /v1/responses`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a JSON object")]
pub struct ResponsesRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default, deserialize_with = "types::token_count")]
    max_output_tokens: Option<u64>,
    #[serde(default, deserialize_with = "types::number")]
    temperature: Option<f64>,
    #[serde(default, deserialize_with = "types::number")]
    top_p: Option<f64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    reasoning: Option<Value>,
    #[serde(default)]
    text: Option<Value>,
    /// Everything else: accepted and ignored unless [`check_extra`] refuses it.
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// What the answer echoes of the request.
#[derive(Debug)]
pub struct Shape {
    model: String,
    instructions: Option<String>,
    max_output_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    parallel_tool_calls: bool,
    tool_choice: Value,
    effort: Option<String>,
    /// Function tools that came inside a `namespace` tool: their calls name it.
    namespaced: Vec<(String, String)>,
}

impl RequestBody for ResponsesRequest {
    type Shape = Shape;

    fn into_contract(self) -> Result<(ChatRequest, Shape), GatewayError> {
        check_extra(&self.extra)?;
        let model = types::required_model(self.model)?;
        let max_tokens = check_sampling(
            self.temperature,
            self.top_p,
            self.max_output_tokens,
            "max_output_tokens",
        )?;
        let (think, effort) = reasoning(self.reasoning.as_ref())?;
        let response_format = text_format(self.text.as_ref())?;
        let mut offered = tools(self.tools.unwrap_or_default())?;
        let namespaced = std::mem::take(&mut offered.namespaced);
        let (tools, tool_choice) = offered.choose(self.tool_choice.as_ref())?;
        let mut conversation = Conversation::default();
        if let Some(instructions) = &self.instructions {
            conversation.system(instructions.clone());
        }
        let messages = input(conversation, self.input)?;
        let request = ChatRequest {
            max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            response_format,
            think,
            // The contract's levels stop at "high".
            reasoning_effort: effort
                .as_deref()
                .filter(|e| *e != "none")
                .map(|e| if e == "xhigh" { "high" } else { e }.to_owned()),
            stream: self.stream.unwrap_or(false),
            tools,
            tool_choice,
            ..chat_request(model.clone(), messages)
        };
        let shape = Shape {
            model,
            instructions: self.instructions,
            max_output_tokens: self.max_output_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            parallel_tool_calls: self.parallel_tool_calls.unwrap_or(true),
            tool_choice: self.tool_choice.unwrap_or_else(|| json!("auto")),
            effort,
            namespaced,
        };
        Ok((request, shape))
    }

    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
}

/// Fields that ask for what a stateless gateway over chat upstreams cannot do.
fn check_extra(extra: &Map<String, Value>) -> Result<(), GatewayError> {
    for (field, value) in extra {
        if value.is_null() {
            continue;
        }
        let why = match field.as_str() {
            "previous_response_id" | "conversation" => Some(format!(
                "{field} is not supported: chatd stores no responses; send the whole conversation in input"
            )),
            "prompt" => Some("prompt templates are not supported by chatd".to_owned()),
            "background" if value == &Value::Bool(true) => {
                Some("background responses are not supported by chatd".to_owned())
            }
            "top_logprobs" if value.as_u64() != Some(0) => {
                Some("top_logprobs is not supported by chatd".to_owned())
            }
            _ => None,
        };
        if let Some(why) = why {
            return Err(GatewayError::bad_param(field, why));
        }
        tracing::debug!(field, "Responses request field accepted and ignored");
    }
    Ok(())
}

/// `reasoning.effort` → reasoning on ("none" off), as `reasoning_effort` on chat completions.
fn reasoning(reasoning: Option<&Value>) -> Result<(Option<bool>, Option<String>), GatewayError> {
    let effort = reasoning
        .and_then(|r| r.get("effort"))
        .filter(|e| !e.is_null());
    let Some(effort) = effort else {
        return Ok((None, None));
    };
    match effort.as_str() {
        Some("none") => Ok((Some(false), Some("none".into()))),
        Some(e @ ("minimal" | "low" | "medium" | "high" | "xhigh")) => {
            Ok((Some(true), Some(e.to_owned())))
        }
        _ => Err(GatewayError::bad_param(
            "reasoning.effort",
            format!(
                "reasoning.effort {effort} is not one of none, minimal, low, medium, high, xhigh"
            ),
        )),
    }
}

/// `text.format`: the form of the answer. (`text.verbosity` is a hint.)
fn text_format(text: Option<&Value>) -> Result<ResponseFormat, GatewayError> {
    let format = text.and_then(|t| t.get("format")).filter(|f| !f.is_null());
    let Some(format) = format else {
        return Ok(ResponseFormat::Text);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => match format.get("schema") {
            Some(schema @ Value::Object(_)) => Ok(ResponseFormat::JsonSchema(JsonSchema {
                name: format
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("response")
                    .to_owned(),
                schema: schema.to_string(),
                strict: format
                    .get("strict")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            })),
            _ => Err(GatewayError::bad_param(
                "text.format.schema",
                "text.format.schema must be a JSON schema object",
            )),
        },
        Some(other) => Err(GatewayError::bad_param(
            "text.format.type",
            format!("text.format type {other:?} is not one of text, json_object, json_schema"),
        )),
        None => Err(GatewayError::bad_param(
            "text.format.type",
            "text.format needs a type",
        )),
    }
}

/// The function tools of a request, as the contract takes them.
struct Offered {
    functions: Vec<Value>,
    namespaced: Vec<(String, String)>,
}

/// Function tools are offered; a `namespace` tool's functions too (their calls name it);
/// hosted and freeform tools, which no chat upstream runs, are left out.
fn tools(tools: Vec<Value>) -> Result<Offered, GatewayError> {
    let mut offered = Offered {
        functions: Vec::new(),
        namespaced: Vec::new(),
    };
    for (i, tool) in tools.iter().enumerate() {
        let field = format!("tools[{i}]");
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => offered.functions.push(function_tool(tool, &field)?),
            Some("namespace") => {
                let namespace = tool.get("name").and_then(Value::as_str).unwrap_or_default();
                let inner = tool.get("tools").and_then(Value::as_array);
                for (j, function) in inner.into_iter().flatten().enumerate() {
                    if function.get("type").and_then(Value::as_str) != Some("function") {
                        continue;
                    }
                    let converted = function_tool(function, &format!("{field}.tools[{j}]"))?;
                    let name = converted["function"]["name"].as_str().unwrap_or_default();
                    offered
                        .namespaced
                        .push((name.to_owned(), namespace.to_owned()));
                    offered.functions.push(converted);
                }
            }
            Some(kind) => {
                tracing::debug!(tool = kind, "Responses tool left out: not a function tool");
            }
            None => {
                return Err(GatewayError::bad_param(
                    &format!("{field}.type"),
                    format!("{field}.type is required"),
                ));
            }
        }
    }
    Ok(offered)
}

fn function_tool(tool: &Value, field: &str) -> Result<Value, GatewayError> {
    let name = tool
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            GatewayError::bad_param(
                &format!("{field}.name"),
                format!("{field}.name is required"),
            )
        })?;
    Ok(contract_tool(
        name,
        tool.get("description"),
        tool.get("parameters"),
    ))
}

impl Offered {
    /// The tools and the contract's `tool_choice` for the client's `tool_choice`.
    fn choose(
        mut self,
        choice: Option<&Value>,
    ) -> Result<(Option<String>, Option<String>), GatewayError> {
        let name_of = |tool: &Value| tool["function"]["name"].as_str().unwrap_or("").to_owned();
        let choice = match choice.filter(|c| !c.is_null()) {
            None => None,
            Some(Value::String(mode)) if matches!(mode.as_str(), "auto" | "none" | "required") => {
                Some(json!(mode))
            }
            Some(choice) => match choice.get("type").and_then(Value::as_str) {
                Some("function") => {
                    let name = choice.get("name").and_then(Value::as_str).unwrap_or("");
                    if !self.functions.iter().any(|t| name_of(t) == name) {
                        return Err(GatewayError::bad_param(
                            "tool_choice",
                            format!(
                                "tool_choice names {name:?}, which is not among the function tools"
                            ),
                        ));
                    }
                    Some(json!({"type": "function", "function": {"name": name}}))
                }
                // Only these tools may be called this turn.
                Some("allowed_tools") => {
                    let allowed: Vec<String> = choice
                        .get("tools")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t.get("name").and_then(Value::as_str))
                        .map(str::to_owned)
                        .collect();
                    self.functions.retain(|t| allowed.contains(&name_of(t)));
                    match choice.get("mode").and_then(Value::as_str) {
                        Some("required") => Some(json!("required")),
                        _ => Some(json!("auto")),
                    }
                }
                Some(kind) => {
                    return Err(GatewayError::bad_param(
                        "tool_choice",
                        format!(
                            "tool_choice {kind:?} is not supported by chatd: only function tools reach the model"
                        ),
                    ));
                }
                None => {
                    return Err(GatewayError::bad_param(
                        "tool_choice",
                        "tool_choice must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"name\": ...}",
                    ));
                }
            },
        };
        if self.functions.is_empty() {
            if choice.as_ref().is_some_and(|c| c != "auto" && c != "none") {
                return Err(GatewayError::bad_param(
                    "tool_choice",
                    "tool_choice requires a tool call, but no function tool was given",
                ));
            }
            return Ok((None, None));
        }
        Ok((
            Some(Value::Array(self.functions).to_string()),
            choice.map(|c| c.to_string()),
        ))
    }
}

/// `input` (a string, or a list of items) after the instructions.
fn input(
    mut conversation: Conversation,
    input: Option<Value>,
) -> Result<Vec<Message>, GatewayError> {
    match input {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => conversation.user(text_content(text)),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(&mut conversation, item, &format!("input[{i}]"))?;
            }
        }
        Some(_) => {
            return Err(GatewayError::bad_param(
                "input",
                "input must be a string or an array of items",
            ));
        }
    }
    conversation.finish("input")
}

fn input_item(
    conversation: &mut Conversation,
    item: &Value,
    field: &str,
) -> Result<(), GatewayError> {
    let text = |key: &str| item.get(key).and_then(Value::as_str).unwrap_or_default();
    // An item without a type is a message (`{"role": "user", "content": "hi"}`).
    match item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message")
    {
        "message" => {
            let content = content(item.get("content"), &format!("{field}.content"))?;
            match text("role") {
                "user" => conversation.user(content),
                "system" | "developer" => conversation.system(join(texts(&content))),
                "assistant" => conversation.assistant(join(texts(&content))),
                other => {
                    return Err(GatewayError::bad_param(
                        &format!("{field}.role"),
                        format!(
                            "{field}.role is {other:?}; expected user, assistant, system or developer"
                        ),
                    ));
                }
            }
        }
        "function_call" => {
            let (id, name) = (text("call_id"), text("name"));
            if id.is_empty() || name.is_empty() {
                return Err(GatewayError::bad_param(
                    field,
                    format!("{field}: a function_call needs a call_id and a name"),
                ));
            }
            conversation.call(id, name, text("arguments").to_owned());
        }
        "function_call_output" => {
            let output = content(item.get("output"), &format!("{field}.output"))?;
            conversation.tool_result(text("call_id"), None, output);
        }
        // The model's reasoning sent back: its summary is the turn's reasoning; the
        // encrypted content is another API's and opaque.
        "reasoning" => {
            let summary = item.get("summary").and_then(Value::as_array);
            let parts = summary.into_iter().flatten();
            conversation.reasoning(join(
                parts.filter_map(|p| p.get("text").and_then(Value::as_str)),
            ));
        }
        "item_reference" => {
            return Err(GatewayError::bad_param(
                field,
                format!(
                    "{field}: item references need stored responses, which chatd does not keep"
                ),
            ));
        }
        other => {
            tracing::debug!(item = other, "Responses input item left out");
        }
    }
    Ok(())
}

/// The text parts of content.
fn texts(content: &[ContentPart]) -> impl Iterator<Item = &str> {
    content.iter().filter_map(|part| match part {
        ContentPart::Text(text) => Some(text.as_str()),
        _ => None,
    })
}

/// A message's content, or a call's output: a string, or parts (`input_text`, `output_text`,
/// `refusal`, `input_image`).
fn content(content: Option<&Value>, field: &str) -> Result<Vec<ContentPart>, GatewayError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(text_content(text.clone())),
        Some(Value::Array(parts)) => {
            let mut converted = Vec::with_capacity(parts.len());
            for (i, part) in parts.iter().enumerate() {
                let at = format!("{field}[{i}]");
                let text = |key: &str| part.get(key).and_then(Value::as_str).unwrap_or_default();
                converted.push(match text("type") {
                    "input_text" | "output_text" | "text" => ContentPart::Text(text("text").to_owned()),
                    "refusal" => ContentPart::Text(text("refusal").to_owned()),
                    "input_image" if !text("image_url").is_empty() => {
                        let detail = part.get("detail").and_then(Value::as_str).map(str::to_owned);
                        image_url(text("image_url"), detail, &format!("{at}.image_url"))?
                    }
                    kind => {
                        return Err(GatewayError::bad_param(
                            &at,
                            format!("{at} has type {kind:?}; chatd supports input_text, output_text and input_image (by image_url) parts"),
                        ));
                    }
                });
            }
            Ok(converted)
        }
        Some(_) => Err(GatewayError::bad_param(
            field,
            format!("{field} must be a string or an array of content parts"),
        )),
    }
}

/// `POST /v1/responses`.
pub struct Responses;

impl WireFormat for Responses {
    const ENDPOINT: &'static str = "/v1/responses";
    const FRAMING: Framing = Framing::Sse;
    const KEEPS_ALIVE: bool = true;
    type Request = ResponsesRequest;
    type Stream = ResponsesStream;

    fn answer(shape: Shape, out: ChatOutcome) -> Response {
        let r = out.response;
        let mut output = Vec::new();
        if let Some(reasoning) = r.reasoning.filter(|t| !t.is_empty()) {
            output.push(reasoning_item(&random_id("rs_"), &reasoning));
        }
        if !r.content.is_empty() {
            output.push(message_item(&random_id("msg_"), &r.content, "completed"));
        }
        let calls = whole_calls(r.tool_calls.as_deref(), CALL_ID_PREFIX);
        for call in &calls {
            output.push(call_item(&shape, &random_id("fc_"), call, "completed"));
        }
        let answer = Answer {
            id: random_id("resp_"),
            created_at: now_secs(),
            shape: &shape,
        };
        let status = status(r.finish);
        let body = answer.json(status, output, usage(&r.usage), None);
        axum::Json(body).into_response()
    }

    fn stream(shape: Shape) -> ResponsesStream {
        ResponsesStream {
            id: random_id("resp_"),
            created_at: now_secs(),
            shape,
            sequence: 0,
            started: false,
            open: None,
            output: Vec::new(),
            calls: StreamedCalls::default(),
            call_items: Vec::new(),
            finish: None,
            usage: empty_usage(),
        }
    }

    fn error(err: &GatewayError) -> Response {
        openai_error(err)
    }
}

/// The prefix of the call ids chatd makes up.
const CALL_ID_PREFIX: &str = "call_";

/// `completed`, or `incomplete` when the output limit cut the answer.
fn status(finish: Option<FinishReason>) -> &'static str {
    match finish {
        Some(FinishReason::Length) => "incomplete",
        _ => "completed",
    }
}

/// Responses usage, when the upstream reported both counts (never invented).
fn usage(usage: &Usage) -> Option<Value> {
    let (i, o) = (usage.input_tokens?, usage.output_tokens?);
    Some(json!({
        "input_tokens": i,
        "input_tokens_details": {"cached_tokens": usage.cached_input_tokens.unwrap_or(0)},
        "output_tokens": o,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens.unwrap_or(0)},
        "total_tokens": i as u64 + o as u64,
    }))
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content: Vec<Value> = if status == "completed" {
        vec![output_text(text)]
    } else {
        Vec::new()
    };
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// Reasoning text as a reasoning item's summary (what Codex and the SDKs show of it).
fn reasoning_item(id: &str, text: &str) -> Value {
    let summary: Vec<Value> = if text.is_empty() {
        Vec::new()
    } else {
        vec![json!({"type": "summary_text", "text": text})]
    };
    json!({"id": id, "type": "reasoning", "summary": summary})
}

fn call_item(shape: &Shape, id: &str, call: &ToolCall, status: &str) -> Value {
    let mut item = json!({
        "id": id, "type": "function_call", "status": status,
        "call_id": call.id, "name": call.name, "arguments": call.arguments,
    });
    if let Some((_, namespace)) = shape.namespaced.iter().find(|(n, _)| *n == call.name) {
        item["namespace"] = json!(namespace);
    }
    item
}

/// The response object, as answers and stream events carry it.
struct Answer<'a> {
    id: String,
    created_at: u64,
    shape: &'a Shape,
}

impl Answer<'_> {
    fn json(
        &self,
        status: &str,
        output: Vec<Value>,
        usage: Option<Value>,
        error: Option<Value>,
    ) -> Value {
        let s = self.shape;
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": error,
            "incomplete_details": (status == "incomplete").then(|| json!({"reason": "max_output_tokens"})),
            "instructions": s.instructions,
            "max_output_tokens": s.max_output_tokens,
            "model": s.model,
            "output": output,
            "parallel_tool_calls": s.parallel_tool_calls,
            "previous_response_id": null,
            "reasoning": {"effort": s.effort, "summary": null},
            "store": false,
            "temperature": s.temperature,
            "text": {"format": {"type": "text"}},
            "tool_choice": s.tool_choice,
            "tools": [],
            "top_p": s.top_p,
            "truncation": "disabled",
            "usage": usage,
            "metadata": {},
        })
    }
}

/// The output item being streamed.
#[derive(Debug)]
enum Open {
    Message { id: String, text: String },
    Reasoning { id: String, text: String },
    Call(usize),
}

/// The SSE stream: `response.created` and `response.in_progress`; per output item
/// `output_item.added`, its parts and deltas (`output_text`, reasoning summary text, function
/// call arguments), their `.done` events and `output_item.done` with the whole item (Codex
/// takes items from that event only); then `response.completed` (or `response.incomplete`)
/// with every item and the usage. A failure after the head is `response.failed` with the
/// error, which Codex reports. Every event is named and numbered (`sequence_number`).
pub struct ResponsesStream {
    id: String,
    created_at: u64,
    shape: Shape,
    sequence: u64,
    started: bool,
    open: Option<Open>,
    /// Items done so far.
    output: Vec<Value>,
    calls: StreamedCalls,
    /// The item id and output index of each call.
    call_items: Vec<(String, usize)>,
    finish: Option<FinishReason>,
    usage: Usage,
}

impl ResponsesStream {
    fn answer(&self) -> Answer<'_> {
        Answer {
            id: self.id.clone(),
            created_at: self.created_at,
            shape: &self.shape,
        }
    }

    /// One event: `data` gets its `type` and `sequence_number`.
    fn emit(&mut self, out: &mut Events, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        out.named(kind, &data);
    }

    fn start(&mut self, out: &mut Events) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self.answer().json("in_progress", Vec::new(), None, None);
        self.emit(out, "response.created", json!({"response": response}));
        let response = self.answer().json("in_progress", Vec::new(), None, None);
        self.emit(out, "response.in_progress", json!({"response": response}));
    }

    /// The index the next item gets.
    fn next_index(&self) -> usize {
        self.output.len() + usize::from(self.open.is_some())
    }

    fn open_message(&mut self, out: &mut Events) -> (String, usize) {
        if let Some(Open::Message { id, .. }) = &self.open {
            return (id.clone(), self.output.len());
        }
        self.close(out);
        let (id, index) = (random_id("msg_"), self.output.len());
        let item = message_item(&id, "", "in_progress");
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        );
        self.emit(
            out,
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0, "part": output_text("")}),
        );
        self.open = Some(Open::Message {
            id: id.clone(),
            text: String::new(),
        });
        (id, index)
    }

    fn open_reasoning(&mut self, out: &mut Events) -> (String, usize) {
        if let Some(Open::Reasoning { id, .. }) = &self.open {
            return (id.clone(), self.output.len());
        }
        self.close(out);
        let (id, index) = (random_id("rs_"), self.output.len());
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": reasoning_item(&id, "")}),
        );
        self.emit(
            out,
            "response.reasoning_summary_part.added",
            json!({"item_id": id, "output_index": index, "summary_index": 0,
                   "part": {"type": "summary_text", "text": ""}}),
        );
        self.open = Some(Open::Reasoning {
            id: id.clone(),
            text: String::new(),
        });
        (id, index)
    }

    /// Ends the open item: its `.done` events and `output_item.done`.
    fn close(&mut self, out: &mut Events) {
        let Some(open) = self.open.take() else {
            return;
        };
        let index = self.output.len();
        let item = match open {
            Open::Message { id, text } => {
                let at = json!({"item_id": id, "output_index": index, "content_index": 0});
                let mut done = at.clone();
                done["text"] = json!(text);
                done["logprobs"] = json!([]);
                self.emit(out, "response.output_text.done", done);
                let mut part = at;
                part["part"] = output_text(&text);
                self.emit(out, "response.content_part.done", part);
                message_item(&id, &text, "completed")
            }
            Open::Reasoning { id, text } => {
                let at = json!({"item_id": id, "output_index": index, "summary_index": 0});
                let mut done = at.clone();
                done["text"] = json!(text);
                self.emit(out, "response.reasoning_summary_text.done", done);
                let mut part = at;
                part["part"] = json!({"type": "summary_text", "text": text});
                self.emit(out, "response.reasoning_summary_part.done", part);
                reasoning_item(&id, &text)
            }
            Open::Call(slot) => {
                let call = self.calls.get(slot).clone();
                let id = self.call_items[slot].0.clone();
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "name": call.name, "arguments": call.arguments}),
                );
                call_item(&self.shape, &id, &call, "completed")
            }
        };
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        self.output.push(item);
    }

    /// Text for the open message or reasoning item: kept for its `.done` events, and sent.
    fn append(&mut self, out: &mut Events, kind: &str, mut event: Value, delta: String) {
        if let Some(Open::Message { text, .. } | Open::Reasoning { text, .. }) = &mut self.open {
            text.push_str(&delta);
        }
        event["delta"] = json!(delta);
        self.emit(out, kind, event);
    }

    fn call_event(&mut self, event: CallEvent, out: &mut Events) {
        match event {
            CallEvent::Started(slot) => {
                self.close(out);
                let (id, index) = (random_id("fc_"), self.next_index());
                let call = self.calls.get(slot).clone();
                let item = call_item(&self.shape, &id, &call, "in_progress");
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": index, "item": item}),
                );
                self.call_items.push((id, index));
                self.open = Some(Open::Call(slot));
            }
            CallEvent::Arguments(slot, delta) => {
                let (id, index) = self.call_items[slot].clone();
                self.emit(
                    out,
                    "response.function_call_arguments.delta",
                    json!({"item_id": id, "output_index": index, "delta": delta}),
                );
            }
        }
    }
}

impl StreamRender for ResponsesStream {
    fn open(&mut self, out: &mut Events) {
        self.start(out);
    }

    fn chunk(&mut self, chunk: StreamChunk, out: &mut Events) {
        self.finish = chunk.finish.or(self.finish);
        keep_usage(&mut self.usage, chunk.usage);
        if let Some(delta) = chunk.reasoning.filter(|r| !r.is_empty()) {
            let (id, index) = self.open_reasoning(out);
            let at = json!({"item_id": id, "output_index": index, "summary_index": 0});
            self.append(out, "response.reasoning_summary_text.delta", at, delta);
        }
        if let Some(delta) = chunk.content.filter(|c| !c.is_empty()) {
            let (id, index) = self.open_message(out);
            let mut at = json!({"item_id": id, "output_index": index, "content_index": 0});
            at["logprobs"] = json!([]);
            self.append(out, "response.output_text.delta", at, delta);
        }
        if let Some(deltas) = chunk.tool_calls {
            for event in self.calls.feed(&deltas, CALL_ID_PREFIX) {
                self.call_event(event, out);
            }
        }
    }

    fn end(&mut self, _: &ChatStream, out: &mut Events) {
        self.start(out);
        self.close(out);
        let status = status(self.finish);
        let output = std::mem::take(&mut self.output);
        let usage = usage(&self.usage);
        let response = self.answer().json(status, output, usage, None);
        let kind = if status == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.emit(out, kind, json!({"response": response}));
    }

    fn error(&mut self, err: &GatewayError, out: &mut Events) {
        self.start(out);
        let output = std::mem::take(&mut self.output);
        let error = json!({"code": err.code(), "message": err.to_string()});
        let response = self.answer().json("failed", output, None, Some(error));
        self.emit(out, "response.failed", json!({"response": response}));
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    #[test]
    fn codex_turns_become_contract_messages() {
        let (r, s) = parse::<ResponsesRequest>(json!({
            "model": "ollama/q", "stream": true, "store": false, "include": ["reasoning.encrypted_content"],
            "prompt_cache_key": "k", "client_metadata": {}, "text": {"verbosity": "low"},
            "reasoning": {"effort": "medium"}, "parallel_tool_calls": true, "tool_choice": "auto",
            "input": [
                {"type": "message", "id": "m1", "role": "developer", "content": [{"type": "input_text", "text": "Be a coder."}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "run it"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "x"},
                {"type": "function_call", "id": "fc_1", "call_id": "call_A", "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"},
                {"type": "function_call_output", "call_id": "call_A", "output": "a.txt"},
                {"role": "user", "content": "and?"},
            ],
            "tools": [
                {"type": "function", "name": "exec_command", "parameters": {"type": "object"}, "strict": false},
                {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
                {"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "close_agent", "parameters": {}}]},
                {"type": "web_search"},
            ],
        }))
        .unwrap();
        let roles: Vec<_> = r.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
        assert_eq!(r.messages[3].tool_call_id.as_deref(), Some("call_A"));
        let tools: Value = serde_json::from_str(r.tools.as_deref().unwrap()).unwrap();
        let names: Vec<_> = tools
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].clone())
            .collect();
        assert_eq!(names, [json!("exec_command"), json!("close_agent")]);
        assert_eq!(s.namespaced, [("close_agent".to_owned(), "ns".to_owned())]);
        assert_eq!((r.think, r.stream), (Some(true), true));
    }

    #[test]
    fn what_a_stateless_gateway_refuses_is_named() {
        let base = || json!({"model": "m", "input": "hi"});
        for (field, value, param) in [
            (
                "previous_response_id",
                json!("resp_1"),
                "previous_response_id",
            ),
            ("conversation", json!("conv_1"), "conversation"),
            ("background", json!(true), "background"),
            ("reasoning", json!({"effort": "max"}), "reasoning.effort"),
            ("tool_choice", json!({"type": "web_search"}), "tool_choice"),
            (
                "input",
                json!([{"type": "item_reference", "id": "x"}]),
                "input[0]",
            ),
            (
                "input",
                json!([{"role": "user", "content": [{"type": "input_file"}]}]),
                "input[0].content[0]",
            ),
            ("input", json!([]), "input"),
        ] {
            let mut v = base();
            v[field] = value;
            let err = parse::<ResponsesRequest>(v).unwrap_err();
            assert_eq!(err.param(), Some(param), "{err}");
        }
        let mut v = base();
        v["previous_response_id"] = Value::Null;
        v["text"] = json!({"format": {"type": "json_object"}});
        assert!(matches!(
            parse::<ResponsesRequest>(v).unwrap().0.response_format,
            ResponseFormat::JsonObject
        ));
    }

    #[test]
    fn allowed_tools_narrow_the_offer() {
        let (r, _) = parse::<ResponsesRequest>(json!({"model": "m", "input": "hi",
            "tools": [{"type": "function", "name": "a"}, {"type": "function", "name": "b"}],
            "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "b"}]}}))
        .unwrap();
        assert!(!r.tools.as_deref().unwrap().contains("\"a\""));
        assert_eq!(r.tool_choice.as_deref(), Some("\"required\""));
    }
}
