//! Tool calls between the contract's OpenAI shapes and the formats that shape them otherwise
//! (Anthropic `tool_use` blocks, Responses `function_call` items, Ollama's argument objects):
//! reading whole calls and streamed call deltas, and building the contract's JSON.

use serde_json::{Map, Value, json};

use super::random_id;

/// One complete tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text (OpenAI's `function.arguments`).
    pub arguments: String,
}

impl ToolCall {
    /// The arguments as a JSON object (Anthropic's `input`, Ollama's `arguments`): text that
    /// is not a JSON object gives an empty object, since both require one.
    pub fn arguments_object(&self) -> Value {
        arguments_object(&self.arguments)
    }
}

/// Arguments text as a JSON object (`{}` for anything else: an empty string from an upstream
/// that streamed none, or text that is not an object).
pub fn arguments_object(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(object @ Value::Object(_)) => object,
        _ => Value::Object(Map::new()),
    }
}

/// The id to give a client for an upstream's call id: kept, unless it is missing or one of
/// the positional placeholders (`call_0`, `call_1`, ...) that adapters give the calls of an
/// upstream that names none (Ollama), which would repeat on every turn of a conversation.
fn client_id(upstream: Option<&str>, prefix: &str) -> String {
    match upstream {
        Some(id) if !is_placeholder(id) => id.to_owned(),
        _ => random_id(prefix),
    }
}

fn is_placeholder(id: &str) -> bool {
    id.is_empty()
        || id
            .strip_prefix("call_")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The calls of a whole answer (the contract's `tool-calls` JSON text); ids as
/// [`client_id`] gives them, with `prefix` for new ones.
pub fn whole_calls(text: Option<&str>, prefix: &str) -> Vec<ToolCall> {
    let Some(Value::Array(calls)) = text.and_then(|t| serde_json::from_str(t).ok()) else {
        return Vec::new();
    };
    calls
        .iter()
        .map(|call| ToolCall {
            id: client_id(call["id"].as_str(), prefix),
            name: call["function"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            arguments: arguments_text(&call["function"]["arguments"]),
        })
        .collect()
}

fn arguments_text(arguments: &Value) -> String {
    match arguments {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The contract's JSON for one call of an assistant turn.
pub fn contract_call(id: &str, name: &str, arguments: String) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
}

/// The contract's JSON for one function tool.
pub fn contract_tool(name: &str, description: Option<&Value>, parameters: Option<&Value>) -> Value {
    let mut function = Map::new();
    function.insert("name".into(), Value::String(name.to_owned()));
    if let Some(description) = description.filter(|d| !d.is_null()) {
        function.insert("description".into(), description.clone());
    }
    let mut parameters = parameters
        .filter(|p| !p.is_null())
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    // Agents send JSON Schema 2020-12 with its `$schema` URI, which some upstreams' schema
    // readers (Ollama's) refuse; it says nothing about the arguments.
    if let Some(schema) = parameters.as_object_mut() {
        schema.remove("$schema");
    }
    function.insert("parameters".into(), parameters);
    json!({"type": "function", "function": function})
}

/// What a streamed call delta did to the calls of an answer.
#[derive(Debug, PartialEq)]
pub enum CallEvent {
    /// A new call began: its position among the answer's calls.
    Started(usize),
    /// Argument text was added to the call at that position.
    Arguments(usize, String),
}

/// The calls of a streamed answer, put together from the contract's streamed deltas (OpenAI
/// `delta.tool_calls`: an `index`, then `id`, `function.name` and pieces of
/// `function.arguments`).
#[derive(Debug, Default)]
pub struct StreamedCalls {
    calls: Vec<(u64, ToolCall)>,
}

impl StreamedCalls {
    /// Reads one chunk's deltas (JSON text): what changed, in order.
    pub fn feed(&mut self, deltas: &str, prefix: &str) -> Vec<CallEvent> {
        let mut events = Vec::new();
        let Ok(Value::Array(deltas)) = serde_json::from_str::<Value>(deltas) else {
            return events;
        };
        for (position, delta) in deltas.iter().enumerate() {
            let index = delta["index"].as_u64().unwrap_or(position as u64);
            let function = &delta["function"];
            let slot = match self.calls.iter().position(|(i, _)| *i == index) {
                Some(slot) => slot,
                None => {
                    self.calls.push((
                        index,
                        ToolCall {
                            id: client_id(delta["id"].as_str(), prefix),
                            name: function["name"].as_str().unwrap_or_default().to_owned(),
                            arguments: String::new(),
                        },
                    ));
                    let slot = self.calls.len() - 1;
                    events.push(CallEvent::Started(slot));
                    slot
                }
            };
            let piece = arguments_text(&function["arguments"]);
            if !piece.is_empty() {
                self.calls[slot].1.arguments.push_str(&piece);
                events.push(CallEvent::Arguments(slot, piece));
            }
        }
        events
    }

    /// The call at a position.
    pub fn get(&self, slot: usize) -> &ToolCall {
        &self.calls[slot].1
    }

    /// Every call so far, in the order they began.
    pub fn all(&self) -> impl Iterator<Item = &ToolCall> {
        self.calls.iter().map(|(_, call)| call)
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_ids_are_replaced_and_real_ones_kept() {
        let calls = whole_calls(
            Some(
                r#"[{"id":"call_0","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}},
                    {"id":"call_Wx1","type":"function","function":{"name":"g","arguments":{"b":2}}}]"#,
            ),
            "toolu_",
        );
        assert!(calls[0].id.starts_with("toolu_"), "{}", calls[0].id);
        assert_eq!(calls[0].arguments_object(), json!({"a": 1}));
        assert_eq!(calls[1].id, "call_Wx1");
        assert_eq!(calls[1].arguments, r#"{"b":2}"#);
        assert!(whole_calls(None, "x").is_empty());
        assert_eq!(arguments_object("[1]"), json!({}));
    }

    #[test]
    fn streamed_deltas_make_calls_in_order() {
        let mut calls = StreamedCalls::default();
        let mut seen = calls.feed(
            r#"[{"index":3,"id":"c","type":"function","function":{"name":"f","arguments":""}}]"#,
            "call_",
        );
        seen.extend(calls.feed(
            r#"[{"index":3,"function":{"arguments":"{\"a\""}}]"#,
            "call_",
        ));
        seen.extend(calls.feed(
            r#"[{"index":3,"function":{"arguments":":1}"}},{"index":5,"function":{"name":"g"}}]"#,
            "call_",
        ));
        assert_eq!(
            seen,
            [
                CallEvent::Started(0),
                CallEvent::Arguments(0, "{\"a\"".into()),
                CallEvent::Arguments(0, ":1}".into()),
                CallEvent::Started(1),
            ]
        );
        assert_eq!(calls.get(0).arguments, r#"{"a":1}"#);
        assert_eq!(calls.get(1).name, "g");
    }

    #[test]
    fn tools_lose_the_schema_uri() {
        let tool = contract_tool(
            "f",
            None,
            Some(
                &json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"}),
            ),
        );
        assert_eq!(
            tool,
            json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}})
        );
    }
}
