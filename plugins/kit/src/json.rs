//! Reading upstream JSON and the JSON text fields of a chat request; writing request bodies.

use crate::prelude::*;
use serde_json::{Map, Value};

use crate::errors::{invalid, malformed};
use crate::types::AdapterError;

/// Parses a JSON object out of upstream bytes; `what` names them in the error ("response body",
/// "stream line", ...).
pub fn json_object(bytes: &[u8], what: &str) -> Result<Value, AdapterError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|error| malformed(format!("{what} is not JSON: {error}")))?;
    if !value.is_object() {
        return Err(malformed(format!("{what} is not a JSON object")));
    }
    Ok(value)
}

/// Parses the JSON text of request field `field`.
pub fn parse_json(field: &str, text: &str) -> Result<Value, AdapterError> {
    serde_json::from_str(text)
        .map_err(|error| invalid(format!("{field} is not valid JSON: {error}")))
}

/// Parses the JSON text of request field `field`, which must be an array.
pub fn parse_json_array(field: &str, text: &str) -> Result<Vec<Value>, AdapterError> {
    match parse_json(field, text)? {
        Value::Array(items) => Ok(items),
        _ => Err(invalid(format!("{field} must be a JSON array"))),
    }
}

/// A JSON number for a float parameter; JSON has no NaN or infinity.
pub fn finite(field: &str, value: f64) -> Result<Value, AdapterError> {
    serde_json::Number::from_f64(value)
        .map(Value::Number)
        .ok_or_else(|| invalid(format!("{field} must be a finite number")))
}

/// The text at `value`, taken out of it (answer text is most of a body: no copy); null is
/// empty text, anything else is malformed (`field` names it in the error).
pub fn take_text(value: &mut Value, field: &str) -> Result<String, AdapterError> {
    match value.take() {
        Value::String(text) => Ok(text),
        Value::Null => Ok(String::new()),
        _ => Err(malformed(format!("{field} is not a string"))),
    }
}

/// A string value, unless it is absent or empty.
pub fn non_empty(value: &Value) -> Option<String> {
    value
        .as_str()
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

/// A token count, unless it is absent or does not fit.
pub fn token_count(value: &Value) -> Option<u32> {
    value.as_u64().and_then(|count| u32::try_from(count).ok())
}

/// Appends the JSON object `map` to `out`, compact: byte for byte what `serde_json::to_vec`
/// writes.
///
/// Why not `serde_json::to_vec`: it looks for characters to escape one byte at a time, which
/// in the guest costs ~1.5 ns a byte — 30% of building a 2 KB chat request, most of whose bytes
/// are message text. Here strings are checked eight bytes at a time; numbers, booleans and
/// null are still written by serde_json.
pub fn write_object(out: &mut Vec<u8>, map: &Map<String, Value>) {
    out.push(b'{');
    for (index, (key, value)) in map.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        write_value(out, value);
    }
    out.push(b'}');
}

/// About how many bytes [`write_object`] writes for `map`: exact but for escapes (each string
/// counted unescaped) and numbers (counted at their longest).
///
/// A request body is written into a buffer of this size plus a margin for escapes. Grown by
/// doubling instead, a 4 MiB body passed through buffers of 4 and 8 MiB, both in the
/// adapter's memory at the last copy: three times the body, times every big request an
/// adapter is building at once (bench/README.md).
pub fn object_len(map: &Map<String, Value>) -> usize {
    map.iter()
        .map(|(key, value)| key.len() + 4 + value_len(value))
        .sum::<usize>()
        + 2
}

fn value_len(value: &Value) -> usize {
    match value {
        Value::String(text) => text.len() + 2,
        Value::Object(map) => object_len(map),
        Value::Array(items) => items.iter().map(|item| value_len(item) + 1).sum::<usize>() + 2,
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 24,
    }
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(text) => write_str(out, text),
        Value::Object(map) => write_object(out, map),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // serde_json's own number formatting (itoa / ryu); a number cannot fail to serialise.
        Value::Number(number) => {
            out.extend_from_slice(serde_json::to_string(number).unwrap_or_default().as_bytes())
        }
    }
}

/// Appends `text` as a JSON string, escaped exactly as serde_json escapes it: `"`, `\\` and
/// control characters; everything else (including non-ASCII) as is.
fn write_str(out: &mut Vec<u8>, text: &str) {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    // High bit set in a byte whose value is zero / below 0x20 (exact as a yes/no for the whole
    // word: the classic bit trick).
    let zero = |word: u64| word.wrapping_sub(ONES) & !word;
    let control = |word: u64| word.wrapping_sub(ONES * 0x20) & !word;
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut run_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8) {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
            // Bytes below 0x20, '"' or '\\' (XOR turns a match into a zero byte).
            let special =
                (control(word) | zero(word ^ (ONES * 0x22)) | zero(word ^ (ONES * 0x5c))) & HIGHS;
            if special == 0 {
                i += 8;
                continue;
            }
            // The lowest flagged byte is a true match (a false flag can only sit above one).
            i += (special.trailing_zeros() / 8) as usize;
        }
        let byte = bytes[i];
        let short = match byte {
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            0x08 => Some(b'b'),
            0x09 => Some(b't'),
            0x0a => Some(b'n'),
            0x0c => Some(b'f'),
            0x0d => Some(b'r'),
            _ => None,
        };
        if short.is_some() || byte < 0x20 {
            out.extend_from_slice(&bytes[run_start..i]);
            match short {
                Some(letter) => out.extend_from_slice(&[b'\\', letter]),
                None => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(b"\\u00");
                    out.extend_from_slice(&[
                        HEX[usize::from(byte >> 4)],
                        HEX[usize::from(byte & 0xf)],
                    ]);
                }
            }
            run_start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{invalid_request, malformed_response};
    use serde_json::json;

    fn written(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        write_value(&mut out, value);
        out
    }

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_escapes_them() {
        // Every byte that could need escaping, at every offset of an 8-byte word, between
        // runs long enough to take the word-at-a-time path.
        let mut cases: Vec<String> = (0u8..0x80)
            .flat_map(|byte| {
                (0..17).map(move |offset| {
                    let mut text = "abcdefghijklmnopq".to_owned();
                    text.insert(offset, char::from(byte));
                    text
                })
            })
            .collect();
        cases.extend(
            [
                "",
                "\"",
                "\\\\",
                "Grüße, 日本 🎉 \u{7f} \u{80} \u{2028}",
                "line\r\nbreak\ttab\u{0}nul\u{1f}\u{8}\u{c}",
                "a mutex admits one holder; a semaphore admits up to N. \"quoted\" C:\\path",
            ]
            .map(str::to_owned),
        );
        for text in cases {
            let value = Value::String(text.clone());
            assert_eq!(
                String::from_utf8(written(&value)).unwrap(),
                serde_json::to_string(&value).unwrap(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn objects_and_arrays_match_serde_json_byte_for_byte() {
        let value = json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi \"there\"\n"}, {"role": "assistant", "content": null}],
            "options": {"temperature": 0.2, "top_p": 1.0, "num_predict": 256, "stop": ["\n\n", "END"]},
            "stream": false,
            "think": true,
            "empty": {},
            "none": [],
            "big": 18446744073709551615u64,
            "negative": -3,
            "tiny": 1e-300
        });
        let Value::Object(map) = &value else {
            unreachable!()
        };
        let mut out = Vec::new();
        write_object(&mut out, map);
        assert_eq!(out, serde_json::to_vec(&value).unwrap());
    }

    #[test]
    fn a_body_is_written_without_growing_its_buffer_unless_it_needs_escapes() {
        let text = "plain text, nothing to escape ".repeat(10_000);
        let value = json!({"model": "m", "messages": [{"role": "user", "content": text}], "n": 3, "ok": true});
        let Value::Object(map) = &value else {
            unreachable!()
        };
        let estimate = object_len(map);
        let mut out = Vec::with_capacity(estimate);
        write_object(&mut out, map);
        assert!(out.len() <= estimate, "{} > {estimate}", out.len());
        assert!(estimate - out.len() < 64, "{} vs {estimate}", out.len());
    }

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
    fn text_is_taken_null_is_empty_and_others_are_malformed() {
        let mut body = json!({"content": "hi", "none": null, "n": 5});
        assert_eq!(take_text(&mut body["content"], "content").unwrap(), "hi");
        assert_eq!(body["content"], Value::Null, "taken, not copied");
        assert_eq!(take_text(&mut body["none"], "none").unwrap(), "");
        assert_eq!(
            malformed_response(take_text(&mut body["n"], "message.content")),
            "message.content is not a string"
        );
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
