//! `POST /v1/embeddings`, in OpenAI's shape: routed like chat (tiers, provider prefixes,
//! `:cloud`), sent through the provider's adapter (it must declare "embeddings").

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::formats::openai::OpenAi;
use super::pipeline::failed;
use super::pipeline::ms;
use super::served_by;
use super::{AppState, JsonBody, checked, log_failure, log_request, types};
use crate::contract::EmbeddingsRequest;
use crate::error::GatewayError;

const ENDPOINT: &str = "/v1/embeddings";

/// Fields accepted and not needed: they do not change the answer.
const IGNORED: &[&str] = &["user"];

/// The body of `POST /v1/embeddings`.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a JSON object")]
pub struct EmbeddingsBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default, deserialize_with = "types::token_count")]
    dimensions: Option<u64>,
    #[serde(default)]
    encoding_format: Option<String>,
    /// Everything else, passed through to providers that forward extra fields.
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// How the vectors are written: JSON numbers, or OpenAI's base64 of little-endian `f32`s
/// (the OpenAI SDKs ask for base64 unless told otherwise; it is a third of the size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Float,
    Base64,
}

impl EmbeddingsBody {
    fn into_contract(self) -> Result<(EmbeddingsRequest, Encoding, String), GatewayError> {
        let model = self.model.unwrap_or_default();
        if model.trim().is_empty() {
            return Err(GatewayError::bad_param("model", "model is required"));
        }
        let inputs = inputs(self.input)?;
        let dimensions =
            match self.dimensions {
                None => None,
                Some(0) => {
                    return Err(GatewayError::bad_param(
                        "dimensions",
                        "dimensions must be at least 1",
                    ));
                }
                Some(n) => Some(u32::try_from(n).map_err(|_| {
                    GatewayError::bad_param("dimensions", "dimensions is too large")
                })?),
            };
        let encoding = match self.encoding_format.as_deref() {
            None | Some("float") => Encoding::Float,
            Some("base64") => Encoding::Base64,
            Some(other) => {
                return Err(GatewayError::bad_param(
                    "encoding_format",
                    format!("encoding_format must be \"float\" or \"base64\", not {other:?}"),
                ));
            }
        };
        let request = EmbeddingsRequest {
            model: model.clone(),
            inputs,
            dimensions,
            extra: types::passthrough(self.extra, &[IGNORED]),
        };
        Ok((request, encoding, model))
    }
}

/// `input`: one text or a list of texts. Token arrays (OpenAI also takes those) mean a
/// tokenizer chatd does not know the upstream's for, so they are refused.
pub(crate) fn inputs(input: Option<Value>) -> Result<Vec<String>, GatewayError> {
    let tokens = |param: &str| {
        GatewayError::bad_param(
            param,
            format!("{param}: token arrays are not supported; send the text"),
        )
    };
    let texts = match input {
        None | Some(Value::Null) => {
            return Err(GatewayError::bad_param("input", "input is required"));
        }
        Some(Value::String(text)) => vec![text],
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(GatewayError::bad_param("input", "input must not be empty"));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(text) => Ok(text),
                    Value::Number(_) => Err(tokens("input")),
                    Value::Array(_) => Err(tokens(&format!("input[{i}]"))),
                    _ => Err(GatewayError::bad_param(
                        &format!("input[{i}]"),
                        format!("input[{i}] must be a string"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        Some(_) => {
            return Err(GatewayError::bad_param(
                "input",
                "input must be a string or an array of strings",
            ));
        }
    };
    if let Some(i) = texts.iter().position(String::is_empty) {
        let param = if texts.len() == 1 {
            "input".to_owned()
        } else {
            format!("input[{i}]")
        };
        return Err(GatewayError::bad_param(
            &param,
            format!("{param} must not be empty"),
        ));
    }
    Ok(texts)
}

#[derive(Serialize)]
struct Reply<'a> {
    object: &'static str,
    data: Vec<Datum>,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct Datum {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

/// A vector as JSON numbers (`f32`s, written as the shortest text that reads back the same)
/// or as base64.
#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u32,
    total_tokens: u32,
}

/// OpenAI's base64 form: the vector's `f32`s as little-endian bytes, standard base64.
fn base64_vector(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(state): State<AppState>,
    body: Result<JsonBody<EmbeddingsBody>, GatewayError>,
) -> Response {
    let started = std::time::Instant::now();
    let ((request, encoding, model), held) =
        match checked(body, |b| b.model.as_deref(), EmbeddingsBody::into_contract) {
            Ok(r) => r,
            Err((e, named)) => {
                log_failure(ENDPOINT, &named, &e, ms(started.elapsed()));
                return failed::<OpenAi>(&e);
            }
        };
    let answered = state.gateway.embeddings(request).await;
    drop(held);
    let out = match answered {
        Ok(out) => out,
        Err(e) => {
            log_failure(ENDPOINT, &model, &e, ms(started.elapsed()));
            return failed::<OpenAi>(&e);
        }
    };
    log_request(ENDPOINT, &out.route.provider, &model, ms(out.latency));
    let data = out
        .response
        .embeddings
        .into_iter()
        .enumerate()
        .map(|(index, vector)| Datum {
            object: "embedding",
            index,
            embedding: match encoding {
                Encoding::Float => Vector::Float(vector),
                Encoding::Base64 => Vector::Base64(base64_vector(&vector)),
            },
        })
        .collect();
    let reply = Reply {
        object: "list",
        data,
        model: &model,
        // Only what the upstream reported: chatd never invents counts.
        usage: out.response.input_tokens.map(|n| Usage {
            prompt_tokens: n,
            total_tokens: n,
        }),
    };
    match serde_json::to_vec(&reply) {
        Ok(body) => served_by(
            ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            &out.route.provider,
            &out.route.model,
        ),
        Err(e) => failed::<OpenAi>(&GatewayError::Internal(format!(
            "writing the embeddings: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<(EmbeddingsRequest, Encoding, String), GatewayError> {
        serde_json::from_value::<EmbeddingsBody>(v)
            .unwrap()
            .into_contract()
    }

    #[test]
    fn inputs_encodings_and_passthrough() {
        let (r, e, _) = parse(json!({"model": "m", "input": "hi"})).unwrap();
        assert_eq!(
            (r.inputs, e, r.extra),
            (vec!["hi".to_owned()], Encoding::Float, None)
        );
        let (r, e, _) = parse(
            json!({"model": "m", "input": ["a", "b"], "encoding_format": "base64",
            "dimensions": 64, "user": "u", "truncate": true}),
        )
        .unwrap();
        assert_eq!(r.inputs, ["a", "b"]);
        assert_eq!((e, r.dimensions), (Encoding::Base64, Some(64)));
        assert_eq!(r.extra.as_deref(), Some(r#"{"truncate":true}"#));
        for (body, param) in [
            (json!({"model": "m", "input": [1, 2]}), "input"),
            (json!({"model": "m", "input": [[1, 2]]}), "input[0]"),
            (json!({"model": "m", "input": []}), "input"),
            (json!({"model": "m", "input": ["a", ""]}), "input[1]"),
            (json!({"model": "m"}), "input"),
            (
                json!({"model": "m", "input": "x", "encoding_format": "int8"}),
                "encoding_format",
            ),
            (
                json!({"model": "m", "input": "x", "dimensions": 0}),
                "dimensions",
            ),
            (json!({"input": "x"}), "model"),
        ] {
            let err = parse(body.clone()).unwrap_err();
            assert_eq!(err.param(), Some(param), "{body}: {err}");
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn base64_is_little_endian_f32() {
        // 1.0f32 = 0x3f800000, little-endian 00 00 80 3f.
        assert_eq!(base64_vector(&[1.0]), "AACAPw==");
        assert_eq!(base64_vector(&[1.0, -2.5]), "AACAPwAAIMA=");
    }
}
