//! Request pieces shared by the native and the OpenAI-compatible endpoints, and their
//! validated conversion into the contract's types.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, Deserializer, Error, MapAccess, SeqAccess, Unexpected, Visitor};
use serde_json::{Map, Value};

use crate::contract::{
    ChatRequest, ContentPart, Image, ImageSource, InlineImage, JsonSchema, Message, ResponseFormat,
};
use crate::error::GatewayError;

/// Message content: a string, `null`, or OpenAI's array of content parts.
#[derive(Debug, Clone, Deserialize)]
// serde uses an untagged enum's `expecting` as the whole error message, not after "expected".
#[serde(untagged, expecting = "expected a string or an array of content parts")]
pub enum Content {
    Text(String),
    Parts(Vec<Value>),
}

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "expected a string or an array of strings")]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    /// The stop sequences as a list, empty strings removed.
    pub fn into_list(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect()
    }
}

/// One chat message as clients send it. Fields chatd does not use (OpenAI's `refusal`,
/// `audio`, ... in a replayed assistant message) are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(expecting = "a JSON object")]
pub struct ApiMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub tool_calls: Option<Value>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// The reasoning an assistant turn came with, sent back as chatd returned it
    /// (`reasoning_content` in the OpenAI API, `reasoning` in the native one).
    #[serde(default, alias = "reasoning")]
    pub reasoning_content: Option<String>,
}

impl ApiMessage {
    /// Validates and converts the message at `index` of `messages`.
    pub fn into_contract(self, index: usize) -> Result<Message, GatewayError> {
        let field = |f: &str| format!("messages[{index}].{f}");
        let role = match self.role.as_str() {
            "system" | "user" | "assistant" | "tool" => self.role,
            // OpenAI's newer name for system instructions.
            "developer" => "system".to_owned(),
            other => {
                return Err(GatewayError::bad_param(
                    &field("role"),
                    format!(
                        "{} is {other:?}; expected system, developer, user, assistant or tool",
                        field("role")
                    ),
                ));
            }
        };
        let content = match self.content {
            None => Vec::new(),
            Some(Content::Text(text)) if text.is_empty() => Vec::new(),
            Some(Content::Text(text)) => vec![ContentPart::Text(text)],
            Some(Content::Parts(parts)) => content_parts(parts, &field("content"))?,
        };
        let tool_calls = match self.tool_calls {
            None | Some(Value::Null) => None,
            Some(Value::Array(calls)) if role == "assistant" => {
                (!calls.is_empty()).then(|| Value::Array(calls).to_string())
            }
            Some(Value::Array(_)) => {
                return Err(GatewayError::bad_param(
                    &field("tool_calls"),
                    format!(
                        "{} is only allowed on assistant messages",
                        field("tool_calls")
                    ),
                ));
            }
            Some(_) => {
                return Err(GatewayError::bad_param(
                    &field("tool_calls"),
                    format!("{} must be an array", field("tool_calls")),
                ));
            }
        };
        if role == "tool" && self.tool_call_id.as_deref().is_none_or(str::is_empty) {
            return Err(GatewayError::bad_param(
                &field("tool_call_id"),
                format!("{} is required on tool messages", field("tool_call_id")),
            ));
        }
        let no_content = content
            .iter()
            .all(|part| matches!(part, ContentPart::Text(t) if t.is_empty()));
        if no_content && tool_calls.is_none() && role != "assistant" {
            return Err(GatewayError::bad_param(
                &field("content"),
                format!("{} must not be empty", field("content")),
            ));
        }
        Ok(Message {
            content,
            tool_calls,
            tool_call_id: self.tool_call_id,
            name: self.name,
            reasoning: self
                .reasoning_content
                .filter(|r| role == "assistant" && !r.is_empty()),
            role,
        })
    }
}

/// Content part kinds passed on to adapters as they are (`content-part.other`): OpenAI's,
/// which the contract has no case of its own for.
const OTHER_PART_KINDS: &[&str] = &["input_audio", "file"];

/// A message's content parts, in the client's order (consecutive text parts kept apart, as
/// the contract keeps them): `text`, `image_url` (a `data:` URL becomes inline base64 with
/// its media type, an http(s) URL stays a URL), and `input_audio` / `file` passed on whole.
fn content_parts(parts: Vec<Value>, field: &str) -> Result<Vec<ContentPart>, GatewayError> {
    let mut converted = Vec::with_capacity(parts.len());
    for (i, part) in parts.into_iter().enumerate() {
        let at = format!("{field}[{i}]");
        let Value::Object(mut part) = part else {
            return Err(GatewayError::bad_param(
                &at,
                format!(
                    "{at} must be a content part object such as {{\"type\": \"text\", \"text\": \"...\"}}"
                ),
            ));
        };
        let kind = match part.get("type") {
            Some(Value::String(kind)) => kind.clone(),
            _ => {
                return Err(GatewayError::bad_param(
                    &at,
                    format!("{at} needs a \"type\" (text, image_url, input_audio or file)"),
                ));
            }
        };
        converted.push(match kind.as_str() {
            "text" => match part.remove("text") {
                Some(Value::String(text)) => ContentPart::Text(text),
                _ => {
                    return Err(GatewayError::bad_param(
                        &at,
                        format!("{at} must be {{\"type\": \"text\", \"text\": \"...\"}}"),
                    ));
                }
            },
            "image_url" => ContentPart::Image(image_part(part.remove("image_url"), &at)?),
            kind if OTHER_PART_KINDS.contains(&kind) => {
                ContentPart::Other((kind.to_owned(), Value::Object(part).to_string()))
            }
            other => {
                return Err(GatewayError::bad_param(
                    &at,
                    format!(
                        "{at} has type {other:?}; chatd takes text, image_url, input_audio and \
                         file parts"
                    ),
                ));
            }
        });
    }
    Ok(converted)
}

/// An `image_url` part's `image_url`: `{"url": ..., "detail": ...}` (or the URL alone, as
/// some clients send it).
fn image_part(image_url: Option<Value>, at: &str) -> Result<Image, GatewayError> {
    let field = format!("{at}.image_url");
    let (url, detail) = match image_url {
        Some(Value::String(url)) => (url, None),
        Some(Value::Object(mut object)) => {
            let url = match object.remove("url") {
                Some(Value::String(url)) => url,
                _ => {
                    return Err(GatewayError::bad_param(
                        &format!("{field}.url"),
                        format!("{field}.url is required (an http(s) URL or a data: URL)"),
                    ));
                }
            };
            let detail = match object.remove("detail") {
                None | Some(Value::Null) => None,
                Some(Value::String(d)) if matches!(d.as_str(), "auto" | "low" | "high") => Some(d),
                Some(other) => {
                    return Err(GatewayError::bad_param(
                        &format!("{field}.detail"),
                        format!(
                            "{field}.detail must be \"auto\", \"low\" or \"high\", not {other}"
                        ),
                    ));
                }
            };
            (url, detail)
        }
        _ => {
            return Err(GatewayError::bad_param(
                &field,
                format!("{field} must be {{\"url\": \"...\"}}"),
            ));
        }
    };
    let source = image_source(url).map_err(|why| {
        GatewayError::bad_param(&format!("{field}.url"), format!("{field}.url: {why}"))
    })?;
    Ok(Image { source, detail })
}

/// Where an image comes from: a `data:` URL is the image itself, given inline (its base64
/// text is passed on, not decoded: every upstream wants base64); an http(s) URL is fetched by
/// the upstream or by chatd.
pub fn image_source(mut url: String) -> Result<ImageSource, String> {
    if url
        .get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case("data:"))
    {
        let comma = url
            .find(',')
            .ok_or("a data: URL needs a comma before its data")?;
        let meta = &url[5..comma];
        let Some(media_type) = meta
            .split(';')
            .next()
            .map(|m| m.trim().to_ascii_lowercase())
            .filter(|m| m.starts_with("image/") && m.len() > "image/".len())
        else {
            return Err(format!(
                "a data: URL must hold an image (data:image/png;base64,...), not {:?}",
                meta.split(';').next().unwrap_or("")
            ));
        };
        if !meta
            .split(';')
            .skip(1)
            .any(|p| p.trim().eq_ignore_ascii_case("base64"))
        {
            return Err("a data: URL must be base64-encoded (data:image/png;base64,...)".into());
        }
        // Drop the prefix in place: the data is most of a request that may be megabytes.
        url.replace_range(..=comma, "");
        let base64 = standard_base64(url)?;
        return Ok(ImageSource::Inline(InlineImage { media_type, base64 }));
    }
    let parsed = url::Url::parse(&url)
        .map_err(|e| format!("must be an http(s) URL or a data: URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "must be an http(s) URL or a data: URL, not a {}: URL",
            parsed.scheme()
        ));
    }
    Ok(ImageSource::Url(url))
}

/// `text` as the contract's base64 (RFC 4648 §4, no line breaks): line breaks and spaces,
/// which some encoders insert, are removed; any other character outside the alphabet is an
/// error. Only checked, not decoded.
fn standard_base64(mut text: String) -> Result<String, String> {
    if !all_base64(text.as_bytes()) {
        text.retain(|c| !c.is_ascii_whitespace());
        if let Some(bad) = text.bytes().find(|b| !in_base64_alphabet(*b)) {
            return Err(format!(
                "the data of a data: URL must be standard base64; it holds {:?}",
                bad as char
            ));
        }
    }
    if text.is_empty() {
        return Err("the data: URL holds no data".into());
    }
    Ok(text)
}

/// Whether every byte is in the standard base64 alphabet (padding included). An image is
/// megabytes of it: checked in blocks without an early exit inside one, which the compiler
/// turns into vector compares (~10x faster than byte by byte, which took ~2 ms of a 1 MiB
/// image's ~6 ms of CPU).
fn all_base64(bytes: &[u8]) -> bool {
    bytes
        .chunks(64)
        .all(|block| block.iter().fold(true, |ok, &b| ok & in_base64_alphabet(b)))
}

/// Compares without branches, so that [`all_base64`] vectorizes.
#[inline(always)]
fn in_base64_alphabet(b: u8) -> bool {
    // `| 0x20` folds A-Z onto a-z and nothing else onto a-z.
    ((b | 0x20).wrapping_sub(b'a') < 26)
        | (b.wrapping_sub(b'0') < 10)
        | (b == b'+')
        | (b == b'/')
        | (b == b'=')
}

/// Validates the message list: at least one message, each valid.
pub fn convert_messages(messages: Option<Vec<ApiMessage>>) -> Result<Vec<Message>, GatewayError> {
    required_messages(messages)?
        .into_iter()
        .enumerate()
        .map(|(i, m)| m.into_contract(i))
        .collect()
}

/// `model`, which must be there and not blank.
pub fn required_model(model: Option<String>) -> Result<String, GatewayError> {
    let model = model.unwrap_or_default();
    if model.trim().is_empty() {
        return Err(GatewayError::bad_param("model", "model is required"));
    }
    Ok(model)
}

/// `messages`, which must be there and hold at least one message.
pub fn required_messages<T>(messages: Option<Vec<T>>) -> Result<Vec<T>, GatewayError> {
    let messages =
        messages.ok_or_else(|| GatewayError::bad_param("messages", "messages is required"))?;
    if messages.is_empty() {
        return Err(GatewayError::bad_param(
            "messages",
            "messages must not be empty",
        ));
    }
    Ok(messages)
}

/// Checks the sampling parameters every endpoint shares.
pub fn check_sampling(
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_tokens: Option<u64>,
    max_tokens_name: &str,
) -> Result<Option<u32>, GatewayError> {
    if let Some(t) = temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(GatewayError::bad_param(
            "temperature",
            format!("temperature must be between 0 and 2, got {t:?}"),
        ));
    }
    if let Some(p) = top_p
        && !(0.0..=1.0).contains(&p)
    {
        return Err(GatewayError::bad_param(
            "top_p",
            format!("top_p must be between 0 and 1, got {p:?}"),
        ));
    }
    match max_tokens {
        None => Ok(None),
        Some(0) => Err(GatewayError::bad_param(
            max_tokens_name,
            format!("{max_tokens_name} must be at least 1"),
        )),
        Some(n) => u32::try_from(n).map(Some).map_err(|_| {
            GatewayError::bad_param(max_tokens_name, format!("{max_tokens_name} is too large"))
        }),
    }
}

/// A chat request for `model` with `messages` and every option unset, for the endpoints to
/// fill in.
pub fn chat_request(model: String, messages: Vec<Message>) -> ChatRequest {
    ChatRequest {
        model,
        messages,
        max_tokens: None,
        temperature: None,
        top_p: None,
        top_k: None,
        seed: None,
        presence_penalty: None,
        frequency_penalty: None,
        repeat_penalty: None,
        stop: Vec::new(),
        response_format: ResponseFormat::Text,
        think: None,
        reasoning_effort: None,
        stream: false,
        tools: None,
        tool_choice: None,
        extra: None,
    }
}

/// The sampling options beyond temperature and top_p, as a client sent them.
#[derive(Debug, Default)]
pub struct Sampling {
    pub seed: Option<i64>,
    pub top_k: Option<u64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub repeat_penalty: Option<f64>,
}

impl Sampling {
    /// Sets the options on `request`; `top_k_field` is how the client named `top_k`. A zero
    /// presence or frequency penalty is every upstream's default and is left unset, so that
    /// it needs no capability (clients send it as a neutral default).
    pub fn apply(self, request: &mut ChatRequest, top_k_field: &str) -> Result<(), GatewayError> {
        request.seed = self.seed;
        request.top_k = self
            .top_k
            .map(|k| {
                u32::try_from(k).map_err(|_| {
                    GatewayError::bad_param(top_k_field, format!("{top_k_field} is too large"))
                })
            })
            .transpose()?;
        request.presence_penalty = self.presence_penalty.filter(|p| *p != 0.0);
        request.frequency_penalty = self.frequency_penalty.filter(|p| *p != 0.0);
        request.repeat_penalty = self.repeat_penalty;
        Ok(())
    }
}

/// OpenAI's `response_format`: `text`, `json_object`, or `json_schema` with its `name`,
/// `schema` (an object) and `strict`.
pub fn openai_response_format(value: Option<Value>) -> Result<ResponseFormat, GatewayError> {
    const FIELD: &str = "response_format";
    let mut rf = match value {
        None | Some(Value::Null) => return Ok(ResponseFormat::Text),
        Some(Value::Object(rf)) => rf,
        Some(_) => {
            return Err(GatewayError::bad_param(
                FIELD,
                "response_format must be an object",
            ));
        }
    };
    match rf.get("type").and_then(Value::as_str) {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let field = "response_format.json_schema";
            let Some(Value::Object(mut spec)) = rf.remove("json_schema") else {
                return Err(GatewayError::bad_param(
                    field,
                    format!("{field} is required: {{\"name\": ..., \"schema\": {{...}}}}"),
                ));
            };
            let name = match spec.remove("name") {
                None | Some(Value::Null) => "response".to_owned(),
                Some(Value::String(name)) if !name.is_empty() => name,
                Some(_) => {
                    return Err(GatewayError::bad_param(
                        &format!("{field}.name"),
                        format!("{field}.name must be a non-empty string"),
                    ));
                }
            };
            let strict = match spec.remove("strict") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(strict)) => strict,
                Some(_) => {
                    return Err(GatewayError::bad_param(
                        &format!("{field}.strict"),
                        format!("{field}.strict must be true or false"),
                    ));
                }
            };
            match spec.remove("schema") {
                Some(schema @ Value::Object(_)) => Ok(ResponseFormat::JsonSchema(JsonSchema {
                    name,
                    schema: schema.to_string(),
                    strict,
                })),
                _ => Err(GatewayError::bad_param(
                    &format!("{field}.schema"),
                    format!("{field}.schema is required and must be a JSON schema object"),
                )),
            }
        }
        Some(other) => Err(GatewayError::bad_param(
            FIELD,
            format!(
                "response_format type {other:?} is not supported (use \"text\", \"json_object\" or \"json_schema\")"
            ),
        )),
        None => Err(GatewayError::bad_param(
            FIELD,
            "response_format needs a type",
        )),
    }
}

/// The native API's `format`: `"json"` for any JSON object, or a JSON schema object (as
/// Ollama's API takes it).
pub fn native_format(format: Option<Value>) -> Result<ResponseFormat, GatewayError> {
    match format {
        None | Some(Value::Null) => Ok(ResponseFormat::Text),
        Some(Value::String(s)) if s.is_empty() => Ok(ResponseFormat::Text),
        Some(Value::String(s)) if s == "json" => Ok(ResponseFormat::JsonObject),
        Some(schema @ Value::Object(_)) => Ok(ResponseFormat::JsonSchema(JsonSchema {
            name: "response".into(),
            schema: schema.to_string(),
            strict: false,
        })),
        Some(other) => Err(GatewayError::bad_param(
            "format",
            format!("format must be \"json\" or a JSON schema object, got {other}"),
        )),
    }
}

/// The native API's `options`, named as Ollama names them. Any other option (`num_ctx`,
/// `mirostat`, ...) is passed through, as an `options` object, to adapters that forward
/// extra fields.
#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a JSON object")]
pub struct NativeOptions {
    #[serde(default, deserialize_with = "number")]
    pub temperature: Option<f64>,
    #[serde(default, deserialize_with = "number")]
    pub top_p: Option<f64>,
    #[serde(default, deserialize_with = "token_count")]
    pub top_k: Option<u64>,
    #[serde(default, deserialize_with = "integer")]
    pub seed: Option<i64>,
    #[serde(default, deserialize_with = "token_count")]
    pub num_predict: Option<u64>,
    #[serde(default, deserialize_with = "number")]
    pub repeat_penalty: Option<f64>,
    #[serde(default, deserialize_with = "number")]
    pub presence_penalty: Option<f64>,
    #[serde(default, deserialize_with = "number")]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// What a client sent beyond the API's fields, as the passthrough JSON object's text:
/// `null` values and the `ignored` fields left out; `None` when nothing is left. Whether the
/// provider forwards it is the gateway's check (an adapter without "passthrough" gets a 400
/// naming the field).
pub fn passthrough(mut extra: Map<String, Value>, ignored: &[&[&str]]) -> Option<String> {
    extra.retain(|field, value| {
        !value.is_null() && !ignored.iter().any(|list| list.contains(&field.as_str()))
    });
    (!extra.is_empty()).then(|| Value::Object(extra).to_string())
}

/// A count the contract carries as a `u32` (`top_k`, Ollama's `num_predict`), named `field`
/// when it is too large.
pub fn u32_option(value: Option<u64>, field: &str) -> Result<Option<u32>, GatewayError> {
    value
        .map(|n| {
            u32::try_from(n)
                .map_err(|_| GatewayError::bad_param(field, format!("{field} is too large")))
        })
        .transpose()
}

/// Validates OpenAI-shaped `tools` / `tool_choice` and returns them as JSON text.
pub fn convert_tools(
    tools: Option<Value>,
    tool_choice: Option<Value>,
) -> Result<(Option<String>, Option<String>), GatewayError> {
    let tools = match tools {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) => {
            for (i, tool) in list.iter().enumerate() {
                let name = tool.pointer("/function/name").and_then(Value::as_str);
                if tool.get("type").and_then(Value::as_str) != Some("function")
                    || name.is_none_or(str::is_empty)
                {
                    return Err(GatewayError::bad_param(
                        &format!("tools[{i}]"),
                        format!(
                            "tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
                        ),
                    ));
                }
            }
            (!list.is_empty()).then(|| Value::Array(list).to_string())
        }
        Some(_) => return Err(GatewayError::bad_param("tools", "tools must be an array")),
    };
    let tool_choice = match tool_choice {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if matches!(s.as_str(), "auto" | "none" | "required") => {
            Some(Value::String(s).to_string())
        }
        Some(v @ Value::Object(_))
            if v.pointer("/function/name")
                .and_then(Value::as_str)
                .is_some() =>
        {
            Some(v.to_string())
        }
        Some(_) => {
            return Err(GatewayError::bad_param(
                "tool_choice",
                "tool_choice must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}",
            ));
        }
    };
    if tool_choice.is_some() && tools.is_none() {
        return Err(GatewayError::bad_param(
            "tool_choice",
            "tool_choice needs tools",
        ));
    }
    Ok((tools, tool_choice))
}

/// Deserializes `messages`: `null` or an array of message objects.
pub(super) fn messages<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<ApiMessage>>, D::Error> {
    struct Messages;
    impl<'de> Visitor<'de> for Messages {
        type Value = Vec<ApiMessage>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array of messages")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut list = Vec::new();
            while let Some(Object(message)) = seq.next_element()? {
                list.push(message);
            }
            Ok(list)
        }
    }
    deserializer.deserialize_option(Nullable(Messages))
}

/// Deserializes an optional number (`temperature`, `top_p`).
pub(super) fn number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    struct Number;
    impl Visitor<'_> for Number {
        type Value = f64;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number")
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
    }
    deserializer.deserialize_option(Nullable(Number))
}

/// Deserializes an optional whole number (`seed`).
pub(super) fn integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    struct Integer;
    impl Visitor<'_> for Integer {
        type Value = i64;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an integer")
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
        }
    }
    deserializer.deserialize_option(Nullable(Integer))
}

/// Deserializes an optional token count (`max_tokens`); 0 passes here and is refused by
/// [`check_sampling`], which names the field as the client spelled it.
pub(super) fn token_count<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    struct Count;
    impl Visitor<'_> for Count {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a positive integer")
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }
    }
    deserializer.deserialize_option(Nullable(Count))
}

/// Reads `null` as `None` and anything else with the visitor it wraps, whose `expecting`
/// then shows in the error (serde's own visitors for `f64`, `u64`, `Vec` say "f64", "u64",
/// "a sequence").
struct Nullable<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for Nullable<V> {
    type Value = Option<V::Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self.0).map(Some)
    }
}

/// A `T` read only from a JSON object: a derived struct also accepts an array of its field
/// values in declaration order (`["user", "hi"]` as a message), which no client means.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OnlyMap<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for OnlyMap<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(OnlyMap(PhantomData))
            .map(Object)
    }
}

/// The 400 for a body `serde_json` could not read as a `T`: a syntax error keeps its line
/// and column; any other names the field at fault (in the message and as `param`).
pub(super) fn invalid_body<T: DeserializeOwned>(
    body: &[u8],
    error: serde_json::Error,
) -> GatewayError {
    if !error.is_data() {
        return GatewayError::bad_request(format!("invalid JSON body: {error}"));
    }
    // serde_json's error knows only a line and column. Reading the body again through
    // serde_path_to_error finds the field path; only rejected bodies pay for the second read,
    // so the accepted ones are parsed at full speed.
    let mut reader = serde_json::Deserializer::from_slice(body);
    let (path, error) = match serde_path_to_error::deserialize::<_, T>(&mut reader) {
        Err(e) => {
            let path = e
                .path()
                .iter()
                .next()
                .is_some()
                .then(|| e.path().to_string());
            (path, e.into_inner())
        }
        Ok(_) => (None, error),
    };
    // The position is noise once the field is named, and it points past the bad value.
    let position = format!(" at line {} column {}", error.line(), error.column());
    let text = error.to_string();
    let detail = json_type_names(text.strip_suffix(&position).unwrap_or(&text));
    match path {
        Some(path) => GatewayError::bad_param(&path, format!("{path}: {detail}")),
        None => GatewayError::bad_request(format!("request body: {detail}")),
    }
}

/// serde calls JSON's arrays and objects "sequence" and "map"; clients know JSON's words.
fn json_type_names(detail: &str) -> String {
    for (serde, json) in [("sequence", "array"), ("map", "object")] {
        if let Some(rest) = detail.strip_prefix(&format!("invalid type: {serde},")) {
            return format!("invalid type: {json},{rest}");
        }
    }
    detail.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_request_is_sized_by_its_text_images_and_json_fields() {
        use crate::contract::{Image, ImageSource, InlineImage, JsonSchema, ResponseFormat};
        let message = |content: Vec<ContentPart>| Message {
            role: "user".into(),
            content,
            tool_calls: Some("[1]".into()),
            tool_call_id: None,
            name: None,
            reasoning: Some("why".into()),
        };
        let inline = ImageSource::Inline(InlineImage {
            media_type: "image/png".into(),
            base64: "A".repeat(500),
        });
        let parts = [inline, ImageSource::Url("https://x/y.png".into())].map(|source| {
            ContentPart::Image(Image {
                source,
                detail: None,
            })
        });
        let mut request = chat_request(
            "m".into(),
            vec![
                message(vec![ContentPart::Text("x".repeat(1000))]),
                message(
                    parts
                        .into_iter()
                        .chain([ContentPart::Other(("file".into(), "{}".into()))])
                        .collect(),
                ),
            ],
        );
        request.response_format = ResponseFormat::JsonSchema(JsonSchema {
            name: "n".into(),
            schema: r#"{"type":"object"}"#.into(),
            strict: true,
        });
        request.tools = Some("[]".into());
        request.extra = Some("{}".into());
        let per_message = "[1]".len() + "why".len();
        assert_eq!(
            crate::contract::request_size(&request),
            1000 + 500 + 15 + 6 + 2 * per_message + 17 + 2 + 2
        );
    }

    #[test]
    fn the_base64_alphabet_check_agrees_with_the_plain_one_on_every_byte() {
        let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
        for b in 0..=255u8 {
            for at in [0, 63, 64, 100] {
                let mut bytes = vec![b'A'; 130];
                bytes[at] = b;
                assert_eq!(all_base64(&bytes), plain(b), "byte {b:#04x} at {at}");
            }
        }
        assert!(all_base64(b""));
    }

    fn msg(v: Value) -> Result<Message, GatewayError> {
        serde_json::from_value::<ApiMessage>(v)
            .unwrap()
            .into_contract(0)
    }

    /// A message's text parts, joined as an adapter that takes one string joins them.
    fn text(m: Message) -> String {
        let texts: Vec<String> = m
            .content
            .into_iter()
            .map(|part| match part {
                ContentPart::Text(t) => t,
                _ => panic!("not a text part"),
            })
            .collect();
        texts.join("\n")
    }

    #[test]
    fn content_forms() {
        assert_eq!(
            text(msg(json!({"role":"user","content":"hi"})).unwrap()),
            "hi"
        );
        let parts = json!({"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]});
        assert_eq!(text(msg(parts).unwrap()), "a\nb");
        let image = json!({"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]});
        let err = msg(image).unwrap_err();
        assert_eq!(err.param(), Some("messages[0].content[0].image_url.url"));
        assert!(err.to_string().contains("http(s) URL or a data: URL"));
        let audio = json!({"role":"user","content":[{"type":"video","video":{}}]});
        let err = msg(audio).unwrap_err();
        assert_eq!(err.param(), Some("messages[0].content[0]"));
        assert!(err.to_string().contains("\"video\""));
        assert_eq!(
            msg(json!({"role":"developer","content":"x"})).unwrap().role,
            "system"
        );
    }

    #[test]
    fn image_parts_data_urls_inline_and_http_urls_as_urls() {
        let m = msg(json!({"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:Image/PNG;base64,iVBO\nRw0K", "detail": "low"}},
            {"type": "image_url", "image_url": "https://example.com/cat.png"},
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        ]}))
        .unwrap();
        assert!(matches!(&m.content[0], ContentPart::Text(t) if t == "what is this?"));
        let ContentPart::Image(Image {
            source: ImageSource::Inline(inline),
            detail,
        }) = &m.content[1]
        else {
            panic!("not inline: {:?}", m.content[1]);
        };
        assert_eq!(
            (
                inline.media_type.as_str(),
                inline.base64.as_str(),
                detail.as_deref()
            ),
            ("image/png", "iVBORw0K", Some("low"))
        );
        assert!(matches!(&m.content[2],
            ContentPart::Image(Image { source: ImageSource::Url(u), detail: None }) if u == "https://example.com/cat.png"));
        let ContentPart::Other((kind, json)) = &m.content[3] else {
            panic!("not other");
        };
        assert_eq!(kind, "input_audio");
        assert_eq!(
            serde_json::from_str::<Value>(json).unwrap(),
            json!({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}})
        );
        for (url, why) in [
            ("data:text/plain;base64,aGk=", "must hold an image"),
            ("data:image/png,raw", "base64-encoded"),
            ("data:image/png;base64,a!b", "standard base64"),
            ("data:image/png;base64,", "no data"),
            ("ftp://example.com/a.png", "ftp"),
            ("file:///etc/passwd", "file"),
        ] {
            let e = image_source(url.to_owned()).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
        }
        let bad_detail = json!({"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x.example/a.png","detail":"max"}}]});
        assert_eq!(
            msg(bad_detail).unwrap_err().param(),
            Some("messages[0].content[0].image_url.detail")
        );
    }

    #[test]
    fn reasoning_sent_back_is_kept_on_assistant_turns_only() {
        let a = msg(json!({"role":"assistant","content":"4","reasoning_content":"2+2"})).unwrap();
        assert_eq!(a.reasoning.as_deref(), Some("2+2"));
        let native = msg(json!({"role":"assistant","content":"4","reasoning":"2+2"})).unwrap();
        assert_eq!(native.reasoning.as_deref(), Some("2+2"));
        let user = msg(json!({"role":"user","content":"4","reasoning_content":"x"})).unwrap();
        assert_eq!(user.reasoning, None);
    }

    #[test]
    fn native_formats_and_passthrough() {
        assert!(matches!(native_format(None), Ok(ResponseFormat::Text)));
        assert!(matches!(
            native_format(Some(json!("json"))),
            Ok(ResponseFormat::JsonObject)
        ));
        let schema = json!({"type": "object"});
        let Ok(ResponseFormat::JsonSchema(js)) = native_format(Some(schema.clone())) else {
            panic!("no schema");
        };
        assert_eq!(serde_json::from_str::<Value>(&js.schema).unwrap(), schema);
        assert_eq!(
            native_format(Some(json!("yaml"))).unwrap_err().param(),
            Some("format")
        );
        let mut extra = Map::new();
        extra.insert("keep_alive".into(), json!("5m"));
        extra.insert("user".into(), json!("u"));
        extra.insert("gone".into(), Value::Null);
        assert_eq!(
            passthrough(extra, &[&["user"]]).as_deref(),
            Some(r#"{"keep_alive":"5m"}"#)
        );
        assert_eq!(passthrough(Map::new(), &[]), None);
    }

    #[test]
    fn bad_messages_name_the_field() {
        assert_eq!(
            msg(json!({"role":"robot","content":"x"}))
                .unwrap_err()
                .param(),
            Some("messages[0].role")
        );
        assert_eq!(
            msg(json!({"role":"user","content":""}))
                .unwrap_err()
                .param(),
            Some("messages[0].content")
        );
        assert_eq!(
            msg(json!({"role":"tool","content":"4"}))
                .unwrap_err()
                .param(),
            Some("messages[0].tool_call_id")
        );
        let calls = json!([{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]);
        let m = msg(json!({"role":"assistant","content":null,"tool_calls":calls})).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(m.tool_calls.as_deref().unwrap()).unwrap(),
            calls
        );
        assert!(convert_messages(Some(vec![])).is_err());
        assert!(convert_messages(None).is_err());
    }

    #[test]
    fn sampling_and_tools_are_checked() {
        assert!(check_sampling(Some(2.5), None, None, "max_tokens").is_err());
        assert!(check_sampling(None, Some(-0.1), None, "max_tokens").is_err());
        assert_eq!(
            check_sampling(None, None, Some(0), "max_tokens")
                .unwrap_err()
                .param(),
            Some("max_tokens")
        );
        assert_eq!(
            check_sampling(Some(0.2), Some(1.0), Some(10), "max_tokens").unwrap(),
            Some(10)
        );
        let tools = json!([{"type":"function","function":{"name":"get_weather","parameters":{}}}]);
        let (t, c) = convert_tools(Some(tools), Some(json!("auto"))).unwrap();
        assert!(t.unwrap().contains("get_weather"));
        assert_eq!(c.as_deref(), Some("\"auto\""));
        assert!(convert_tools(Some(json!([{"type":"function"}])), None).is_err());
        assert!(convert_tools(None, Some(json!("auto"))).is_err());
        assert!(convert_tools(Some(json!([])), Some(json!("sometimes"))).is_err());
    }
}
