//! The Ollama API in front of every provider: `POST /api/chat` and `/api/generate` (NDJSON
//! streams by default, as Ollama's), `GET /api/tags`, `POST /api/show`, `GET /api/version`,
//! `GET /api/ps`. Errors are Ollama's `{"error": "..."}`, which its clients raise as
//! `ResponseError`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::conversation::{Conversation, inline_image, text_content};
use super::tools::{StreamedCalls, ToolCall, whole_calls};
use super::{
    Events, Framing, RequestBody, StreamRender, WireFormat, chat_request, empty_usage, keep_usage,
    random_id,
};
use crate::api::models::{Entry, entries, find};
use crate::api::types::{self, Stop, check_sampling, convert_tools};
use crate::api::{AppState, JsonBody};
use crate::contract::{
    Capability, ChatRequest, ContentPart, FinishReason, JsonSchema, Message, ResponseFormat,
    StreamChunk, Usage,
};
use crate::error::GatewayError;
use crate::gateway::{ChatOutcome, ChatStream};

/// The Ollama API version chatd's endpoints follow (`GET /api/version`): clients gate features
/// (thinking, tools, structured outputs) on it.
const OLLAMA_VERSION: &str = "0.12.0";

/// The body of `POST /api/chat`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a JSON object")]
pub struct ChatBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    messages: Option<Vec<Value>>,
    #[serde(default)]
    tools: Option<Value>,
    #[serde(flatten)]
    common: Common,
}

/// The body of `POST /api/generate`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a JSON object")]
pub struct GenerateBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    images: Option<Vec<String>>,
    #[serde(flatten)]
    common: Common,
}

/// What `/api/chat` and `/api/generate` share.
#[derive(Debug, Deserialize)]
struct Common {
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    format: Option<Value>,
    #[serde(default)]
    options: Option<Map<String, Value>>,
    #[serde(default)]
    think: Option<Value>,
    /// Every other field: [`Common::check_extra`].
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// What the answer needs: the model as the client named it.
#[derive(Debug)]
pub struct Shape {
    model: String,
}

/// Options that decide how Ollama runs a model, not what it answers.
const RUNTIME_OPTIONS: &[&str] = &[
    "num_gpu",
    "main_gpu",
    "num_thread",
    "num_batch",
    "use_mmap",
    "use_mlock",
    "low_vram",
    "numa",
    "vocab_only",
    "f16_kv",
    "logits_all",
    "embedding_only",
];

impl Common {
    /// The request for `messages`, with what `options`, `format`, `think` and `stream` say.
    fn request(
        self,
        model: String,
        messages: Vec<Message>,
        generate: bool,
    ) -> Result<ChatRequest, GatewayError> {
        self.check_extra(generate)?;
        let mut options = self.options.unwrap_or_default();
        let mut take = |key: &str| options.remove(key).filter(|v| !v.is_null());
        let number = |value, key| option(value, key, Value::as_f64, "a number");
        let integer = |value, key| option(value, key, Value::as_i64, "an integer");
        let temperature = number(take("temperature"), "temperature")?;
        let top_p = number(take("top_p"), "top_p")?;
        // Ollama's -1 (no limit) and -2 (fill the context) are the upstream's own limit.
        let num_predict = integer(take("num_predict"), "num_predict")?.filter(|n| *n >= 0);
        let max_tokens = check_sampling(
            temperature,
            top_p,
            num_predict.map(|n| n as u64),
            "options.num_predict",
        )?;
        let top_k = integer(take("top_k"), "top_k")?
            .map(|k| u64::try_from(k).unwrap_or(0))
            .filter(|k| *k > 0);
        let stop = match take("stop") {
            None => Vec::new(),
            Some(stop) => serde_json::from_value::<Stop>(stop)
                .map_err(|_| {
                    GatewayError::bad_param(
                        "options.stop",
                        "options.stop must be a string or an array of strings",
                    )
                })?
                .into_list(),
        };
        let (think, reasoning_effort) = think(self.think)?;
        let request = ChatRequest {
            max_tokens,
            temperature,
            top_p,
            top_k: types::u32_option(top_k, "options.top_k")?,
            seed: integer(take("seed"), "seed")?,
            presence_penalty: number(take("presence_penalty"), "presence_penalty")?,
            frequency_penalty: number(take("frequency_penalty"), "frequency_penalty")?,
            repeat_penalty: number(take("repeat_penalty"), "repeat_penalty")?,
            stop,
            response_format: response_format(self.format)?,
            think,
            reasoning_effort,
            stream: self.stream.unwrap_or(true),
            ..chat_request(model, messages)
        };
        for key in RUNTIME_OPTIONS {
            if options.remove(*key).is_some() {
                tracing::debug!(option = key, "Ollama runtime option accepted and ignored");
            }
        }
        // The rest change the answer (num_ctx, min_p, mirostat, ...): the upstream gets them,
        // or the request is refused when its provider takes no extra fields.
        let extra = (!options.is_empty()).then(|| json!({"options": options}).to_string());
        Ok(ChatRequest { extra, ..request })
    }

    /// Fields beyond the ones read: accepted when they do not change the answer.
    fn check_extra(&self, generate: bool) -> Result<(), GatewayError> {
        for (field, value) in &self.extra {
            let set = match value {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                _ => true,
            };
            let why = match field.as_str() {
                "keep_alive" | "truncate" | "shift" => None,
                "logprobs" | "top_logprobs" if set => Some("is not supported by chatd"),
                "raw" if generate && set => Some(
                    "is not supported by chatd: every provider applies the model's own template",
                ),
                "template" if generate && set => Some(
                    "is not supported by chatd: every provider applies the model's own template",
                ),
                "suffix" if generate && set => {
                    Some("(fill-in-the-middle) is not supported by chatd")
                }
                "context" if generate && set => Some(
                    "is not supported by chatd: it keeps no token context; send the conversation to /api/chat",
                ),
                _ => None,
            };
            if let Some(why) = why {
                return Err(GatewayError::bad_param(field, format!("{field} {why}")));
            }
            tracing::debug!(field, "Ollama request field accepted and ignored");
        }
        Ok(())
    }
}

/// An option read with `read`; a 400 naming it when it is not `what`.
fn option<T>(
    value: Option<Value>,
    key: &str,
    read: fn(&Value) -> Option<T>,
    what: &str,
) -> Result<Option<T>, GatewayError> {
    value
        .map(|v| {
            read(&v).ok_or_else(|| {
                let field = format!("options.{key}");
                GatewayError::bad_param(&field, format!("{field} must be {what}"))
            })
        })
        .transpose()
}

/// `format`: "json", a JSON schema, or nothing.
fn response_format(format: Option<Value>) -> Result<ResponseFormat, GatewayError> {
    match format {
        None | Some(Value::Null) => Ok(ResponseFormat::Text),
        Some(Value::String(s)) if s.is_empty() => Ok(ResponseFormat::Text),
        Some(Value::String(s)) if s == "json" => Ok(ResponseFormat::JsonObject),
        Some(schema @ Value::Object(_)) => Ok(ResponseFormat::JsonSchema(JsonSchema {
            name: "response".to_owned(),
            schema: schema.to_string(),
            strict: false,
        })),
        Some(_) => Err(GatewayError::bad_param(
            "format",
            "format must be \"json\" or a JSON schema object",
        )),
    }
}

/// `think`: a boolean, or an effort ("low", "medium", "high").
fn think(think: Option<Value>) -> Result<(Option<bool>, Option<String>), GatewayError> {
    match think {
        None | Some(Value::Null) => Ok((None, None)),
        Some(Value::Bool(on)) => Ok((Some(on), None)),
        Some(Value::String(level)) if matches!(level.as_str(), "low" | "medium" | "high") => {
            Ok((Some(true), Some(level)))
        }
        Some(_) => Err(GatewayError::bad_param(
            "think",
            "think must be true, false, \"low\", \"medium\" or \"high\"",
        )),
    }
}

/// Images as Ollama sends them: bare base64.
fn images(
    images: Option<&Vec<Value>>,
    field: &str,
    parts: &mut Vec<ContentPart>,
) -> Result<(), GatewayError> {
    for (i, image) in images.into_iter().flatten().enumerate() {
        let at = format!("{field}[{i}]");
        let data = image
            .as_str()
            .ok_or_else(|| GatewayError::bad_param(&at, format!("{at} must be a base64 string")))?;
        parts.push(inline_image(sniff_media_type(data), data, &at)?);
    }
    Ok(())
}

/// The media type of base64 image data, from its first bytes: Ollama's clients send bare
/// base64, and upstreams that take data URLs need the type.
fn sniff_media_type(base64: &str) -> &'static str {
    const SIGNATURES: [(&str, &str); 4] = [
        ("iVBORw0KGgo", "image/png"),
        ("/9j/", "image/jpeg"),
        ("R0lGOD", "image/gif"),
        ("UklGR", "image/webp"),
    ];
    SIGNATURES
        .iter()
        .find(|(start, _)| base64.trim_start().starts_with(start))
        .map_or("image/png", |(_, kind)| kind)
}

impl RequestBody for ChatBody {
    type Shape = Shape;

    fn into_contract(self) -> Result<(ChatRequest, Shape), GatewayError> {
        let model = types::required_model(self.model)?;
        let (tools, tool_choice) = convert_tools(self.tools, None)?;
        let messages = types::required_messages(self.messages)?;
        let mut conversation = Conversation::default();
        // Ollama's clients send no call ids: calls get ids here, and results are paired with
        // the earliest unanswered call of their tool (or the earliest, unnamed).
        let mut unanswered: Vec<(String, String)> = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            let field = format!("messages[{i}]");
            let text = |key: &str| message.get(key).and_then(Value::as_str).unwrap_or_default();
            let content = message.get("content").unwrap_or(&Value::Null);
            let content = match content {
                Value::Null => String::new(),
                Value::String(text) => text.clone(),
                _ => {
                    return Err(GatewayError::bad_param(
                        &format!("{field}.content"),
                        format!("{field}.content must be a string"),
                    ));
                }
            };
            let mut parts = text_content(content.clone());
            images(
                message.get("images").and_then(Value::as_array),
                &format!("{field}.images"),
                &mut parts,
            )?;
            match text("role") {
                "system" => conversation.system(content),
                "user" => conversation.user(parts),
                "assistant" => {
                    conversation.reasoning(text("thinking").to_owned());
                    conversation.assistant(content);
                    let calls = message.get("tool_calls").and_then(Value::as_array);
                    for (j, call) in calls.into_iter().flatten().enumerate() {
                        let function = &call["function"];
                        let name = function["name"].as_str().unwrap_or_default();
                        if name.is_empty() {
                            return Err(GatewayError::bad_param(
                                &format!("{field}.tool_calls[{j}].function.name"),
                                format!("{field}.tool_calls[{j}].function.name is required"),
                            ));
                        }
                        let id = match call["id"].as_str() {
                            Some(id) if !id.is_empty() => id.to_owned(),
                            _ => random_id("call_"),
                        };
                        let arguments = match &function["arguments"] {
                            Value::String(text) => text.clone(),
                            Value::Null => "{}".to_owned(),
                            other => other.to_string(),
                        };
                        conversation.call(&id, name, arguments);
                        unanswered.push((id, name.to_owned()));
                    }
                }
                "tool" => {
                    let name = [text("tool_name"), text("name")]
                        .into_iter()
                        .find(|n| !n.is_empty());
                    let id = match text("tool_call_id") {
                        "" => {
                            let at = unanswered
                                .iter()
                                .position(|(_, n)| name.is_none_or(|name| n == name))
                                .or((!unanswered.is_empty()).then_some(0));
                            match at {
                                Some(at) => unanswered.remove(at).0,
                                None => random_id("call_"),
                            }
                        }
                        id => id.to_owned(),
                    };
                    conversation.tool_result(&id, name.map(str::to_owned), parts);
                }
                other => {
                    return Err(GatewayError::bad_param(
                        &format!("{field}.role"),
                        format!(
                            "{field}.role is {other:?}; expected system, user, assistant or tool"
                        ),
                    ));
                }
            }
        }
        let messages = conversation.finish("messages")?;
        let request = ChatRequest {
            tools,
            tool_choice,
            ..self.common.request(model.clone(), messages, false)?
        };
        Ok((request, Shape { model }))
    }

    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
}

impl RequestBody for GenerateBody {
    type Shape = Shape;

    fn into_contract(self) -> Result<(ChatRequest, Shape), GatewayError> {
        let model = types::required_model(self.model)?;
        let mut conversation = Conversation::default();
        if let Some(system) = self.system {
            conversation.system(system);
        }
        let mut parts = text_content(self.prompt.unwrap_or_default());
        let given: Option<Vec<Value>> = self
            .images
            .map(|list| list.into_iter().map(Value::String).collect());
        images(given.as_ref(), "images", &mut parts)?;
        if parts.is_empty() {
            // Ollama loads the model on an empty prompt; chatd has nothing to load.
            return Err(GatewayError::bad_param(
                "prompt",
                "prompt is required (chatd loads no models)",
            ));
        }
        conversation.user(parts);
        let messages = conversation.finish("prompt")?;
        let request = self.common.request(model.clone(), messages, true)?;
        Ok((request, Shape { model }))
    }

    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
}

/// `POST /api/chat`.
pub struct OllamaChat;

/// `POST /api/generate`.
pub struct OllamaGenerate;

/// What the two endpoints share: rendering, and errors.
trait Endpoint {
    const ENDPOINT: &'static str;
    const GENERATE: bool;
}

impl Endpoint for OllamaChat {
    const ENDPOINT: &'static str = "/api/chat";
    const GENERATE: bool = false;
}

impl Endpoint for OllamaGenerate {
    const ENDPOINT: &'static str = "/api/generate";
    const GENERATE: bool = true;
}

macro_rules! ollama_format {
    ($format:ty, $body:ty) => {
        impl WireFormat for $format {
            const ENDPOINT: &'static str = <$format as Endpoint>::ENDPOINT;
            const FRAMING: Framing = Framing::Ndjson;
            const KEEPS_ALIVE: bool = false;
            type Request = $body;
            type Stream = OllamaStream;

            fn answer(shape: Shape, out: ChatOutcome) -> Response {
                answer(<$format as Endpoint>::GENERATE, shape, out)
            }

            fn stream(shape: Shape) -> OllamaStream {
                OllamaStream::new(<$format as Endpoint>::GENERATE, shape)
            }

            fn error(err: &GatewayError) -> Response {
                ollama_error(err)
            }
        }
    };
}

ollama_format!(OllamaChat, ChatBody);
ollama_format!(OllamaGenerate, GenerateBody);

/// Ollama's error shape: `{"error": "..."}`.
pub fn ollama_error(err: &GatewayError) -> Response {
    (err.status(), axum::Json(json!({"error": err.to_string()}))).into_response()
}

fn created_at() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

fn done_reason(finish: Option<FinishReason>) -> &'static str {
    match finish {
        Some(FinishReason::Length) => "length",
        // Ollama says "stop" after tool calls too.
        _ => "stop",
    }
}

/// Ollama's tool calls: no ids (its clients send none back), arguments as an object.
fn ollama_calls<'a>(calls: impl Iterator<Item = &'a ToolCall>) -> Vec<Value> {
    calls
        .map(|c| json!({"function": {"name": c.name, "arguments": c.arguments_object()}}))
        .collect()
}

/// The fields of a last line: why it stopped, the counts, and the time (nanoseconds).
fn finish_fields(
    line: &mut Value,
    finish: Option<FinishReason>,
    usage: &Usage,
    elapsed: std::time::Duration,
) {
    line["done"] = json!(true);
    line["done_reason"] = json!(done_reason(finish));
    line["total_duration"] = json!(elapsed.as_nanos() as u64);
    if let Some(n) = usage.input_tokens {
        line["prompt_eval_count"] = json!(n);
    }
    if let Some(n) = usage.output_tokens {
        line["eval_count"] = json!(n);
    }
}

/// One line: `message` (chat) or `response` (generate) with the text, and the reasoning.
fn line(generate: bool, model: &str, content: &str, thinking: Option<&str>) -> Value {
    let mut line = json!({"model": model, "created_at": created_at()});
    if generate {
        line["response"] = json!(content);
        if let Some(thinking) = thinking {
            line["thinking"] = json!(thinking);
        }
    } else {
        let mut message = json!({"role": "assistant", "content": content});
        if let Some(thinking) = thinking {
            message["thinking"] = json!(thinking);
        }
        line["message"] = message;
    }
    line["done"] = json!(false);
    line
}

fn answer(generate: bool, shape: Shape, out: ChatOutcome) -> Response {
    let r = out.response;
    let thinking = r.reasoning.as_deref().filter(|t| !t.is_empty());
    let mut body = line(generate, &shape.model, &r.content, thinking);
    let calls = whole_calls(r.tool_calls.as_deref(), "call_");
    if !generate && !calls.is_empty() {
        body["message"]["tool_calls"] = json!(ollama_calls(calls.iter()));
    }
    finish_fields(&mut body, r.finish, &r.usage, out.latency);
    axum::Json(body).into_response()
}

/// The NDJSON stream: a line per chunk with text or reasoning, the tool calls in one line
/// once they are complete (Ollama's clients take each call whole), then the `done` line with
/// the counts. A failure midway is an `{"error": "..."}` line, which the clients raise.
pub struct OllamaStream {
    generate: bool,
    shape: Shape,
    calls: StreamedCalls,
    finish: Option<FinishReason>,
    usage: Usage,
}

impl OllamaStream {
    fn new(generate: bool, shape: Shape) -> OllamaStream {
        OllamaStream {
            generate,
            shape,
            calls: StreamedCalls::default(),
            finish: None,
            usage: empty_usage(),
        }
    }
}

impl StreamRender for OllamaStream {
    fn chunk(&mut self, chunk: StreamChunk, out: &mut Events) {
        self.finish = chunk.finish.or(self.finish);
        keep_usage(&mut self.usage, chunk.usage);
        let content = chunk.content.unwrap_or_default();
        let thinking = chunk.reasoning.filter(|r| !r.is_empty());
        if !content.is_empty() || thinking.is_some() {
            out.push(&line(
                self.generate,
                &self.shape.model,
                &content,
                thinking.as_deref(),
            ));
        }
        if let Some(deltas) = chunk.tool_calls {
            self.calls.feed(&deltas, "call_");
        }
    }

    fn end(&mut self, stream: &ChatStream, out: &mut Events) {
        if !self.generate && !self.calls.is_empty() {
            let mut calls = line(false, &self.shape.model, "", None);
            calls["message"]["tool_calls"] = json!(ollama_calls(self.calls.all()));
            out.push(&calls);
        }
        let mut last = line(self.generate, &self.shape.model, "", None);
        finish_fields(&mut last, self.finish, &self.usage, stream.elapsed());
        out.push(&last);
    }

    fn error(&mut self, err: &GatewayError, out: &mut Events) {
        out.push(&json!({"error": err.to_string()}));
    }
}

/// `GET /api/version`.
pub async fn version() -> Response {
    axum::Json(json!({"version": OLLAMA_VERSION})).into_response()
}

/// `GET /api/ps`: the models loaded in memory; chatd loads none of its own.
pub async fn ps() -> Response {
    axum::Json(json!({"models": []})).into_response()
}

/// `GET /api/tags`: the routable models, as `GET /v1/models` lists them.
pub async fn tags(State(state): State<AppState>) -> Response {
    let listing = state.gateway.list_models().await;
    let models: Vec<Value> = crate::api::clients::visible(&state, entries(&listing))
        .iter()
        .map(tag)
        .collect();
    axum::Json(json!({"models": models})).into_response()
}

fn tag(entry: &Entry) -> Value {
    json!({
        "name": entry.id,
        "model": entry.id,
        "modified_at": modified_at(entry),
        "size": 0,
        "digest": digest(&entry.id),
        "details": details(),
    })
}

fn modified_at(entry: &Entry) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(entry.created.unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// A stable digest per model id (clients key caches by it; chatd has no model files).
fn digest(id: &str) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(id.as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

fn details() -> Value {
    json!({"parent_model": "", "format": "", "family": "", "families": null,
           "parameter_size": "", "quantization_level": ""})
}

/// The body of `POST /api/show`.
#[derive(Debug, Deserialize)]
pub struct ShowBody {
    #[serde(default)]
    model: Option<String>,
    /// The older name of `model`.
    #[serde(default)]
    name: Option<String>,
}

/// `POST /api/show`: what clients read of a model: its context length (`model_info`, under
/// the architecture's name, when the upstream's listing says) and its capabilities (what
/// the provider's adapter carries: tools, images, thinking).
pub async fn show(
    State(state): State<AppState>,
    body: Result<JsonBody<ShowBody>, GatewayError>,
) -> Response {
    let shown = async {
        let JsonBody(body, _held) = body?;
        let id = body.model.or(body.name).unwrap_or_default();
        if id.trim().is_empty() {
            return Err(GatewayError::bad_param("model", "model is required"));
        }
        let listing = state.gateway.list_models().await;
        let entry = find(&listing, &id)?;
        let (_, provider) = state
            .gateway
            .snapshot()
            .route(entry.target.as_deref().unwrap_or(&entry.id))?;
        let mut capabilities = vec!["completion"];
        for (capability, name) in [
            (Capability::Tools, "tools"),
            (Capability::Images, "vision"),
            (Capability::Reasoning, "thinking"),
        ] {
            if provider.can(capability) {
                capabilities.push(name);
            }
        }
        let mut model_info = json!({"general.architecture": "chatd", "general.name": entry.id});
        if let Some(length) = entry.context_length {
            model_info["chatd.context_length"] = json!(length);
        }
        Ok(json!({
            "modelfile": "", "parameters": "", "template": "{{ .Prompt }}",
            "details": details(), "model_info": model_info,
            "capabilities": capabilities, "modified_at": modified_at(&entry),
        }))
    }
    .await;
    match shown {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => {
            let e = match e {
                GatewayError::NotFound(_) | GatewayError::ModelNotListed(_) => {
                    GatewayError::NotFound("model not found".into())
                }
                e => e,
            };
            ollama_error(&e)
        }
    }
}

/// The body of `POST /api/embed` (and of the older `POST /api/embeddings`, whose text is
/// `prompt`).
#[derive(Debug, Deserialize)]
#[serde(expecting = "a JSON object")]
pub struct EmbedBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default, deserialize_with = "types::token_count")]
    dimensions: Option<u64>,
    /// `truncate`, `options`, `keep_alive`: forwarded to adapters that pass extra fields on
    /// (the ollama adapter does), as Ollama would take them.
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// `POST /api/embed`: `{"embeddings": [[...], ...]}`; routed like chat, through the
/// provider's adapter (which must declare "embeddings").
pub async fn embed(
    State(state): State<AppState>,
    body: Result<JsonBody<EmbedBody>, GatewayError>,
) -> Response {
    embed_as(state, body, false).await
}

/// `POST /api/embeddings`, Ollama's older endpoint: one `prompt`, `{"embedding": [...]}`.
pub async fn embeddings(
    State(state): State<AppState>,
    body: Result<JsonBody<EmbedBody>, GatewayError>,
) -> Response {
    embed_as(state, body, true).await
}

async fn embed_as(
    state: AppState,
    body: Result<JsonBody<EmbedBody>, GatewayError>,
    legacy: bool,
) -> Response {
    let endpoint = if legacy {
        "/api/embeddings"
    } else {
        "/api/embed"
    };
    let started = std::time::Instant::now();
    let request = crate::api::checked(
        body,
        |b| b.model.as_deref(),
        |b: EmbedBody| {
            let model = types::required_model(b.model)?;
            let input = match (b.input, b.prompt) {
                (Some(input), _) if !legacy => Some(input),
                (_, Some(prompt)) if legacy => Some(Value::String(prompt)),
                _ => None,
            };
            let inputs = crate::api::embeddings::inputs(input).map_err(|e| {
                if legacy {
                    GatewayError::bad_param("prompt", "prompt is required and must not be empty")
                } else {
                    e
                }
            })?;
            let dimensions = types::u32_option(b.dimensions, "dimensions")?;
            Ok(crate::contract::EmbeddingsRequest {
                model,
                inputs,
                dimensions,
                extra: types::passthrough(b.extra, &[&["input", "prompt"]]),
            })
        },
    );
    let (request, held) = match request {
        Ok(r) => r,
        Err((e, named)) => {
            crate::api::log_failure(
                endpoint,
                &named,
                &e,
                crate::api::pipeline::ms(started.elapsed()),
            );
            return crate::api::pipeline::failed::<OllamaChat>(&e);
        }
    };
    let model = request.model.clone();
    let answered = state.gateway.embeddings(request).await;
    drop(held);
    match answered {
        Ok(out) => {
            crate::api::log_request(
                endpoint,
                &out.route.provider,
                &model,
                crate::api::pipeline::ms(out.latency),
            );
            let total = u64::try_from(out.latency.as_nanos()).unwrap_or(u64::MAX);
            let mut embeddings = out.response.embeddings;
            if legacy {
                let first = if embeddings.is_empty() {
                    Vec::new()
                } else {
                    embeddings.swap_remove(0)
                };
                return axum::Json(json!({"embedding": first})).into_response();
            }
            let mut body = json!({
                "model": model,
                "embeddings": embeddings,
                "total_duration": total,
                "load_duration": 0,
            });
            if let Some(n) = out.response.input_tokens {
                body["prompt_eval_count"] = json!(n);
            }
            axum::Json(body).into_response()
        }
        Err(e) => {
            crate::api::log_failure(
                endpoint,
                &model,
                &e,
                crate::api::pipeline::ms(started.elapsed()),
            );
            crate::api::pipeline::failed::<OllamaChat>(&e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::conversation::text_of;
    use super::super::parse;
    use super::*;

    #[test]
    fn options_format_and_think_map_to_the_contract() {
        let (r, s) = parse::<ChatBody>(json!({"model": "ollama/q", "messages": [{"role": "user", "content": "hi"}],
            "tools": [], "keep_alive": "5m", "think": "high", "format": {"type": "object"},
            "options": {"temperature": 0.2, "top_k": 40, "seed": 7, "num_predict": -1, "stop": "END",
                        "repeat_penalty": 1.1, "num_ctx": 8192, "num_gpu": 1}}))
        .unwrap();
        assert_eq!(s.model, "ollama/q");
        assert!(r.stream, "Ollama streams unless told not to");
        assert_eq!(
            (r.temperature, r.top_k, r.seed, r.max_tokens),
            (Some(0.2), Some(40), Some(7), None)
        );
        assert_eq!(
            (r.stop.clone(), r.repeat_penalty),
            (vec!["END".to_owned()], Some(1.1))
        );
        assert_eq!(
            (r.think, r.reasoning_effort.as_deref()),
            (Some(true), Some("high"))
        );
        assert!(matches!(r.response_format, ResponseFormat::JsonSchema(_)));
        assert_eq!(r.extra.as_deref(), Some(r#"{"options":{"num_ctx":8192}}"#));
        assert!(r.tools.is_none());
        let (r, _) = parse::<ChatBody>(json!({"model": "m", "stream": false, "format": "json",
            "options": {"num_predict": 64}, "messages": [{"role": "user", "content": "hi"}]}))
        .unwrap();
        assert!(!r.stream && r.extra.is_none());
        assert_eq!(r.max_tokens, Some(64));
        assert!(matches!(r.response_format, ResponseFormat::JsonObject));
    }

    #[test]
    fn tool_turns_get_ids_and_results_pair_with_their_call() {
        let (r, _) = parse::<ChatBody>(json!({"model": "m", "messages": [
            {"role": "user", "content": "weather and time?", "images": ["iVBORw0KGgo="]},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"function": {"name": "get_time", "arguments": {}}}]},
            {"role": "tool", "content": "12:00", "tool_name": "get_time"},
            {"role": "tool", "content": "18C"}]}))
        .unwrap();
        let calls: Value =
            serde_json::from_str(r.messages[1].tool_calls.as_deref().unwrap()).unwrap();
        assert_eq!(calls[0]["function"]["arguments"], r#"{"city":"Paris"}"#);
        let (weather, time) = (
            calls[0]["id"].as_str().unwrap(),
            calls[1]["id"].as_str().unwrap(),
        );
        assert_ne!(weather, time);
        assert_eq!(r.messages[2].tool_call_id.as_deref(), Some(time));
        assert_eq!(r.messages[3].tool_call_id.as_deref(), Some(weather));
        assert!(matches!(r.messages[0].content[1], ContentPart::Image(_)));
    }

    #[test]
    fn generate_refuses_what_a_chat_upstream_cannot_honour() {
        let (r, _) = parse::<GenerateBody>(
            json!({"model": "m", "prompt": "hi", "system": "terse", "raw": false, "context": []}),
        )
        .unwrap();
        assert_eq!(r.messages.len(), 2);
        assert_eq!(text_of(&r.messages[1].content), "hi");
        for (field, value) in [
            ("suffix", json!("}")),
            ("raw", json!(true)),
            ("template", json!("{{ .Prompt }}")),
            ("context", json!([1, 2])),
        ] {
            let mut v = json!({"model": "m", "prompt": "hi"});
            v[field] = value;
            assert_eq!(parse::<GenerateBody>(v).unwrap_err().param(), Some(field));
        }
        assert_eq!(
            parse::<GenerateBody>(json!({"model": "m"}))
                .unwrap_err()
                .param(),
            Some("prompt")
        );
        assert_eq!(
            parse::<ChatBody>(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "options": {"temperature": "hot"}}))
                .unwrap_err()
                .param(),
            Some("options.temperature")
        );
        assert_eq!(sniff_media_type("/9j/4AAQ"), "image/jpeg");
    }
}
