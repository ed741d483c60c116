//! OpenAI Chat Completions shapes, which the contract uses for tool calls: what adapters for
//! other APIs need to produce or read them.

use crate::prelude::*;
use serde_json::{Map, Value, json};

use crate::errors::{invalid, malformed};
use crate::json::parse_json;
use crate::types::AdapterError;

/// One entry of an OpenAI `tool_calls` array (arguments as JSON text).
pub fn tool_call(
    id: impl Into<Value>,
    name: impl Into<Value>,
    arguments: impl Into<Value>,
) -> Value {
    call_object(None, id.into(), name.into(), arguments.into())
}

/// One entry of an OpenAI streaming `delta.tool_calls` array: a [`tool_call`] with its `index`.
pub fn tool_call_delta(
    index: impl Into<Value>,
    id: impl Into<Value>,
    name: impl Into<Value>,
    arguments: impl Into<Value>,
) -> Value {
    call_object(Some(index.into()), id.into(), name.into(), arguments.into())
}

fn call_object(index: Option<Value>, id: Value, name: Value, arguments: Value) -> Value {
    let mut call = Map::new();
    if let Some(index) = index {
        call.insert("index".into(), index);
    }
    call.insert("id".into(), id);
    call.insert("type".into(), "function".into());
    call.insert(
        "function".into(),
        json!({ "name": name, "arguments": arguments }),
    );
    Value::Object(call)
}

/// The models of a model listing in OpenAI's shape (`{"data": [{"id": ...}, ...]}`), each made
/// by `model` from its id and its entry.
pub fn model_list<T>(
    body: &Value,
    model: impl Fn(String, &Value) -> T,
) -> Result<Vec<T>, AdapterError> {
    let models = body["data"]
        .as_array()
        .ok_or_else(|| malformed("response has no \"data\" array"))?;
    models
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let id = entry["id"]
                .as_str()
                .ok_or_else(|| malformed(format!("data[{index}] has no id")))?;
            Ok(model(id.to_owned(), entry))
        })
        .collect()
}

/// The arguments of an OpenAI tool call (`function.arguments`, named `field` in errors) as a
/// JSON object: the JSON text parsed, already parsed arguments as they are, none or blank text
/// as `{}`.
pub fn arguments_object(field: &str, arguments: &Value) -> Result<Value, AdapterError> {
    let object = match arguments {
        // A call without parameters may come with no arguments at all.
        Value::Null => Value::Object(Map::new()),
        Value::String(text) if text.trim().is_empty() => Value::Object(Map::new()),
        Value::String(text) => parse_json(field, text)?,
        // Some clients send the arguments already parsed.
        other => other.clone(),
    };
    if !object.is_object() {
        return Err(invalid(format!("{field} must be a JSON object")));
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{invalid_request, malformed_response};

    #[test]
    fn tool_calls_in_openai_shape() {
        assert_eq!(
            tool_call("call_1", "f", "{}"),
            json!({ "id": "call_1", "type": "function", "function": { "name": "f", "arguments": "{}" } })
        );
        assert_eq!(
            tool_call_delta(2, Value::Null, "f", ""),
            json!({ "index": 2, "id": null, "type": "function", "function": { "name": "f", "arguments": "" } })
        );
    }

    #[test]
    fn model_lists() {
        let body = json!({ "data": [{ "id": "a", "created": 1 }, { "id": "b" }] });
        let models = model_list(&body, |id, entry| (id, entry["created"].as_u64())).unwrap();
        assert_eq!(models, [("a".to_owned(), Some(1)), ("b".to_owned(), None)]);
        assert_eq!(
            malformed_response(model_list(&json!({}), |id, _| id)),
            "response has no \"data\" array"
        );
        assert_eq!(
            malformed_response(model_list(&json!({ "data": [{ "id": 1 }] }), |id, _| id)),
            "data[0] has no id"
        );
    }

    #[test]
    fn arguments_become_an_object() {
        let field = "messages[1].tool_calls[0].function.arguments";
        for (arguments, expected) in [
            (json!(null), json!({})),
            (json!(""), json!({})),
            (json!("  "), json!({})),
            (json!("{\"city\":\"Paris\"}"), json!({ "city": "Paris" })),
            (json!({ "a": 1 }), json!({ "a": 1 })),
        ] {
            assert_eq!(arguments_object(field, &arguments).unwrap(), expected);
        }
        for (arguments, expected) in [
            (json!("[1,2]"), format!("{field} must be a JSON object")),
            (json!(5), format!("{field} must be a JSON object")),
            (json!("{oops"), format!("{field} is not valid JSON")),
        ] {
            let message = invalid_request(arguments_object(field, &arguments));
            assert!(message.starts_with(&expected), "{message}");
        }
    }
}
