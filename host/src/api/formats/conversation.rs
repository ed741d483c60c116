//! The contract's message list, built turn by turn by formats whose turns are shaped
//! otherwise (Anthropic content blocks, Responses input items, Ollama messages): a tool call
//! joins the assistant turn it belongs to, a tool result becomes a `tool` turn, empty turns
//! are left out.

use serde_json::Value;

use super::tools::contract_call;
use crate::contract::Message;
use crate::error::GatewayError;

/// Messages being put together.
#[derive(Debug, Default)]
pub struct Conversation {
    messages: Vec<Message>,
    /// Whether the last message is an assistant turn that later calls may still join.
    open_assistant: bool,
}

impl Conversation {
    /// A system (or developer) turn.
    pub fn system(&mut self, text: String) {
        self.push("system", text);
    }

    /// A user turn.
    pub fn user(&mut self, text: String) {
        self.push("user", text);
    }

    /// Assistant text: a turn of its own, which calls that follow join.
    pub fn assistant(&mut self, text: String) {
        let said = !text.is_empty();
        self.push("assistant", text);
        self.open_assistant = said;
    }

    /// A tool call the assistant made: joins the assistant turn just before it, or starts one.
    pub fn call(&mut self, id: &str, name: &str, arguments: String) {
        if !self.open_assistant {
            self.messages.push(message("assistant", String::new()));
            self.open_assistant = true;
        }
        let call = contract_call(id, name, arguments);
        let Some(last) = self.messages.last_mut() else {
            return;
        };
        let mut calls = match last.tool_calls.take() {
            Some(text) => match serde_json::from_str::<Value>(&text) {
                Ok(Value::Array(calls)) => calls,
                _ => Vec::new(),
            },
            None => Vec::new(),
        };
        calls.push(call);
        last.tool_calls = Some(Value::Array(calls).to_string());
    }

    /// The result of the call `id`.
    pub fn tool_result(&mut self, id: &str, name: Option<String>, text: String) {
        let mut result = message("tool", text);
        result.tool_call_id = Some(id.to_owned());
        result.name = name;
        self.messages.push(result);
        self.open_assistant = false;
    }

    fn push(&mut self, role: &str, text: String) {
        self.open_assistant = false;
        // A turn with nothing in it says nothing; the upstreams' APIs refuse some of them.
        if !text.is_empty() {
            self.messages.push(message(role, text));
        }
    }

    /// The messages; a 400 naming `field` when there are none.
    pub fn finish(self, field: &str) -> Result<Vec<Message>, GatewayError> {
        if self.messages.is_empty() {
            return Err(GatewayError::bad_param(
                field,
                format!("{field} must not be empty"),
            ));
        }
        Ok(self.messages)
    }
}

fn message(role: &str, content: String) -> Message {
    Message {
        role: role.to_owned(),
        content,
        tool_calls: None,
        tool_call_id: None,
        name: None,
    }
}

/// Text parts joined as the contract joins them ("\n" between parts).
pub fn join(texts: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let mut out = String::new();
    for text in texts {
        let text = text.as_ref();
        if text.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_join_their_assistant_turn_and_results_follow() {
        let mut c = Conversation::default();
        c.user("weather?".into());
        c.assistant(String::new());
        c.call("c0", "f", "{}".into());
        c.tool_result("c0", None, "r".into());
        c.assistant("Checking.".into());
        c.call("c1", "get_weather", "{}".into());
        c.call("c2", "get_time", "{}".into());
        c.tool_result("c1", None, "18C".into());
        c.call("c3", "f", "{}".into());
        let m = c.finish("messages").unwrap();
        let roles: Vec<&str> = m.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(
            roles,
            [
                "user",
                "assistant",
                "tool",
                "assistant",
                "tool",
                "assistant"
            ]
        );
        assert!(m[1].content.is_empty() && m[1].tool_calls.is_some());
        let calls: Value = serde_json::from_str(m[3].tool_calls.as_deref().unwrap()).unwrap();
        assert_eq!(calls.as_array().unwrap().len(), 2);
        assert_eq!(m[4].tool_call_id.as_deref(), Some("c1"));
        assert!(m[5].content.is_empty() && m[5].tool_calls.is_some());
        assert!(Conversation::default().finish("input").is_err());
        assert_eq!(join(["a", "", "b"]), "a\nb");
    }
}
