//! Request pieces shared by the native and the OpenAI-compatible endpoints, and their
//! validated conversion into the contract's types.

use serde::Deserialize;
use serde_json::Value;

use crate::error::GatewayError;
use crate::runtime::bindings::Message;

/// Message content: a string, `null`, or OpenAI's array of parts (text parts only).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Value>),
}

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
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

/// One chat message as clients send it.
#[derive(Debug, Clone, Deserialize)]
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
            None => String::new(),
            Some(Content::Text(text)) => text,
            Some(Content::Parts(parts)) => join_text_parts(&parts, &field("content"))?,
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
        if content.is_empty() && tool_calls.is_none() && role != "assistant" {
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
        })
    }
}

fn join_text_parts(parts: &[Value], field: &str) -> Result<String, GatewayError> {
    let mut text = String::new();
    for (i, part) in parts.iter().enumerate() {
        match (
            part.get("type").and_then(Value::as_str),
            part.get("text").and_then(Value::as_str),
        ) {
            (Some("text"), Some(t)) => {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(t);
            }
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
            format!("temperature must be between 0 and 2, got {t}"),
        ));
    }
    if let Some(p) = top_p
        && !(0.0..=1.0).contains(&p)
    {
        return Err(GatewayError::bad_param(
            "top_p",
            format!("top_p must be between 0 and 1, got {p}"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(v: Value) -> Result<Message, GatewayError> {
        serde_json::from_value::<ApiMessage>(v)
            .unwrap()
            .into_contract(0)
    }

    #[test]
    fn content_forms() {
        assert_eq!(
            msg(json!({"role":"user","content":"hi"})).unwrap().content,
            "hi"
        );
        let parts = json!({"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]});
        assert_eq!(msg(parts).unwrap().content, "a\nb");
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
