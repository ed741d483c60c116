//! Request pieces shared by the native and the OpenAI-compatible endpoints, and their
//! validated conversion into the contract's types.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, Deserializer, Error, MapAccess, SeqAccess, Unexpected, Visitor};
use serde_json::Value;

use crate::contract::{ContentPart, Message};
use crate::error::GatewayError;

/// Message content: a string, `null`, or OpenAI's array of parts (text parts only).
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
            Some(Content::Parts(parts)) => text_parts(parts, &field("content"))?,
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
            role,
            content,
            tool_calls,
            tool_call_id: self.tool_call_id,
            name: self.name,
            reasoning: None,
        })
    }
}

/// The text parts of a message, each kept apart (the contract keeps them so).
fn text_parts(parts: Vec<Value>, field: &str) -> Result<Vec<ContentPart>, GatewayError> {
    let mut text = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        match (
            part.get("type").and_then(Value::as_str),
            part.get("text").and_then(Value::as_str),
        ) {
            (Some("text"), Some(t)) => text.push(ContentPart::Text(t.to_owned())),
            (Some(kind), _) if kind != "text" => {
                return Err(GatewayError::bad_param(
                    &format!("{field}[{i}]"),
                    format!("{field}[{i}] has type {kind:?}; chatd supports only text parts"),
                ));
            }
            _ => {
                return Err(GatewayError::bad_param(
                    &format!("{field}[{i}]"),
                    format!("{field}[{i}] must be {{\"type\": \"text\", \"text\": \"...\"}}"),
                ));
            }
        }
    }
    Ok(text)
}

/// Validates the message list: at least one message, each valid.
pub fn convert_messages(messages: Option<Vec<ApiMessage>>) -> Result<Vec<Message>, GatewayError> {
    let messages =
        messages.ok_or_else(|| GatewayError::bad_param("messages", "messages is required"))?;
    if messages.is_empty() {
        return Err(GatewayError::bad_param(
            "messages",
            "messages must not be empty",
        ));
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| m.into_contract(i))
        .collect()
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
        assert_eq!(err.param(), Some("messages[0].content[0]"));
        assert!(err.to_string().contains("only text parts"));
        assert_eq!(
            msg(json!({"role":"developer","content":"x"})).unwrap().role,
            "system"
        );
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
