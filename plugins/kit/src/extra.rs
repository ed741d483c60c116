//! Passthrough fields (`chat-request.extra`, `embeddings-request.extra`).

use crate::prelude::*;
use serde_json::{Map, Value};

use crate::errors::invalid;
use crate::json::parse_json;
use crate::types::AdapterError;

/// Merges the passthrough object `extra` (JSON text) into the upstream `body`, top-level.
///
/// - A field in `owned` is refused (`invalid-request` naming it): the adapter builds it, and
///   overriding it would break the request or the parsing of the answer (`stream`,
///   `messages`, `model`, ...).
/// - A field in `merged` that both sides set as objects is merged key by key, the client's
///   keys winning (Ollama's `options`: the client's `num_ctx` joins the adapter's
///   `temperature` instead of replacing the whole object).
/// - Any other field is set, replacing what the adapter put there.
pub fn merge_extra(
    body: &mut Map<String, Value>,
    extra: Option<&str>,
    owned: &[&str],
    merged: &[&str],
) -> Result<(), AdapterError> {
    let Some(extra) = extra else {
        return Ok(());
    };
    let Value::Object(fields) = parse_json("extra", extra)? else {
        return Err(invalid("extra must be a JSON object"));
    };
    if let Some(field) = fields.keys().find(|key| owned.contains(&key.as_str())) {
        return Err(invalid(format!(
            "extra.{field} cannot be set: the adapter builds it"
        )));
    }
    for (key, value) in fields {
        match (body.get_mut(&key), value) {
            (Some(Value::Object(ours)), Value::Object(theirs))
                if merged.contains(&key.as_str()) =>
            {
                ours.extend(theirs);
            }
            (_, value) => {
                body.insert(key, value);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::invalid_request;
    use serde_json::json;

    fn body() -> Map<String, Value> {
        let Value::Object(map) = json!({"model": "m", "options": {"temperature": 0.5}}) else {
            unreachable!()
        };
        map
    }

    #[test]
    fn fields_are_merged_top_level_and_merged_objects_key_by_key() {
        let mut map = body();
        let extra = r#"{"keep_alive":"5m","options":{"num_ctx":8192,"temperature":0.1}}"#;
        merge_extra(&mut map, Some(extra), &["model"], &["options"]).unwrap();
        assert_eq!(
            Value::Object(map),
            json!({"model": "m", "keep_alive": "5m",
                   "options": {"temperature": 0.1, "num_ctx": 8192}})
        );
        // Not a merged field: replaced whole.
        let mut map = body();
        merge_extra(&mut map, Some(r#"{"options":{"a":1}}"#), &[], &[]).unwrap();
        assert_eq!(map["options"], json!({"a": 1}));
        let mut map = body();
        merge_extra(&mut map, None, &[], &[]).unwrap();
        assert_eq!(map, body());
    }

    #[test]
    fn owned_fields_and_non_objects_are_refused() {
        let mut map = body();
        assert_eq!(
            invalid_request(merge_extra(
                &mut map,
                Some(r#"{"keep_alive":1,"stream":true}"#),
                &["model", "stream"],
                &[]
            )),
            "extra.stream cannot be set: the adapter builds it"
        );
        assert_eq!(map, body(), "nothing merged on a refusal");
        assert_eq!(
            invalid_request(merge_extra(&mut map, Some("[1]"), &[], &[])),
            "extra must be a JSON object"
        );
        assert!(
            invalid_request(merge_extra(&mut map, Some("{"), &[], &[]))
                .starts_with("extra is not valid JSON")
        );
    }
}
