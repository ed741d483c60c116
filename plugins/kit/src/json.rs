//! Reading upstream JSON and the JSON text fields of a chat request.

use serde_json::Value;

use crate::errors::{invalid, malformed};
use crate::types::AdapterError;

/// Parses a JSON object out of upstream bytes; `what` names them in the error ("response body",
/// "stream line", ...).
#[inline]
pub fn json_object(bytes: &[u8], what: &str) -> Result<Value, AdapterError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|error| malformed(format!("{what} is not JSON: {error}")))?;
    if !value.is_object() {
        return Err(malformed(format!("{what} is not a JSON object")));
    }
    Ok(value)
}

/// Parses the JSON text of request field `field`.
#[inline]
pub fn parse_json(field: &str, text: &str) -> Result<Value, AdapterError> {
    serde_json::from_str(text)
        .map_err(|error| invalid(format!("{field} is not valid JSON: {error}")))
}

/// Parses the JSON text of request field `field`, which must be an array.
#[inline]
pub fn parse_json_array(field: &str, text: &str) -> Result<Vec<Value>, AdapterError> {
    match parse_json(field, text)? {
        Value::Array(items) => Ok(items),
        _ => Err(invalid(format!("{field} must be a JSON array"))),
    }
}

/// A JSON number for a float parameter; JSON has no NaN or infinity.
#[inline]
pub fn finite(field: &str, value: f64) -> Result<Value, AdapterError> {
    serde_json::Number::from_f64(value)
        .map(Value::Number)
        .ok_or_else(|| invalid(format!("{field} must be a finite number")))
}

/// A string value, unless it is absent or empty.
#[inline]
pub fn non_empty(value: &Value) -> Option<String> {
    value
        .as_str()
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

/// A token count, unless it is absent or does not fit.
#[inline]
pub fn token_count(value: &Value) -> Option<u32> {
    value.as_u64().and_then(|count| u32::try_from(count).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{invalid_request, malformed_response};
    use serde_json::json;

    #[test]
    fn json_objects_only() {
        assert_eq!(
            json_object(br#"{"a":[1]}"#, "x").unwrap(),
            json!({"a": [1]})
        );
        for (bytes, expected) in [
            (&b"[1]"[..], "stream line is not a JSON object"),
            (b"\"text\"", "stream line is not a JSON object"),
        ] {
            assert_eq!(
                malformed_response(json_object(bytes, "stream line")),
                expected
            );
        }
        assert_eq!(
            malformed_response(json_object(b"{\"a\":", "stream event")),
            "stream event is not JSON: EOF while parsing a value at line 1 column 5"
        );
    }

    #[test]
    fn request_json_fields_name_the_field() {
        assert_eq!(parse_json("tools", "[1]").unwrap(), json!([1]));
        assert!(
            invalid_request(parse_json("tool_choice", "{"))
                .starts_with("tool_choice is not valid JSON: ")
        );
        assert_eq!(
            parse_json_array("tools", "[]").unwrap(),
            Vec::<Value>::new()
        );
        assert_eq!(
            invalid_request(parse_json_array("messages[2].tool_calls", "{}")),
            "messages[2].tool_calls must be a JSON array"
        );
        assert!(
            invalid_request(parse_json_array("tools", "[{")).starts_with("tools is not valid JSON")
        );
    }

    #[test]
    fn floats_must_be_finite() {
        assert_eq!(finite("temperature", 0.5).unwrap(), json!(0.5));
        assert_eq!(
            invalid_request(finite("top_p", f64::INFINITY)),
            "top_p must be a finite number"
        );
        assert!(finite("temperature", f64::NAN).is_err());
    }

    #[test]
    fn strings_and_counts() {
        assert_eq!(non_empty(&json!("x")).as_deref(), Some("x"));
        assert_eq!(non_empty(&json!("")), None);
        assert_eq!(non_empty(&json!(null)), None);
        assert_eq!(non_empty(&json!(5)), None);
        assert_eq!(token_count(&json!(12)), Some(12));
        assert_eq!(token_count(&json!(-1)), None);
        assert_eq!(token_count(&json!(1e30)), None);
        assert_eq!(token_count(&json!(u64::from(u32::MAX) + 1)), None);
        assert_eq!(token_count(&json!(null)), None);
    }
}
