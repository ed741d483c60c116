//! Admin endpoints: `POST /v1/admin/reload`, `GET /v1/admin/adapters`.
//!
//! Off unless `[chatd.admin] enabled = true` (then 404); when on, every request needs
//! `Authorization: Bearer <token>` with the token from `token_env` / `token_file`
//! (missing → 401, wrong → 403). With no token configured, nothing gets in.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::providers::adapter_json;
use crate::error::GatewayError;
use crate::gateway::ReloadScope;

/// Rejects requests unless the admin API is enabled and the bearer token matches.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let snap = state.gateway.snapshot();
    if !snap.config.chatd.admin.enabled {
        return GatewayError::NotFound(
            "the admin API is disabled; enable it with [chatd.admin] enabled = true".into(),
        )
        .into_response();
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let Some(presented) = presented else {
        let mut resp =
            GatewayError::Unauthorized("admin endpoints need Authorization: Bearer <token>".into())
                .into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return resp;
    };
    let Some(token) = &snap.admin_token else {
        return GatewayError::Forbidden(format!(
            "no admin token is configured (set ${} or token_file)",
            snap.config.chatd.admin.token_env
        ))
        .into_response();
    };
    if !constant_time_eq(presented.trim().as_bytes(), token.expose().as_bytes()) {
        return GatewayError::Forbidden("invalid admin token".into()).into_response();
    }
    next.run(req).await
}

/// Compares without an early exit, so response time does not reveal a matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST /v1/admin/reload`: re-read `lakehouse.toml` and `adapters_dir`. 200 with the
/// report when applied; 422 with the report when the config was rejected.
pub async fn reload(State(state): State<AppState>) -> Response {
    let report = state
        .gateway
        .reload(ReloadScope::ConfigAndAdapters, "POST /v1/admin/reload")
        .await;
    let status = if report.ok {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let mut body = serde_json::to_value(&report).unwrap_or(Value::Null);
    if let Some(error) = &report.error {
        body["error"] = json!({"code": "reload_rejected", "message": error});
    }
    (status, axum::Json(body)).into_response()
}

/// `GET /v1/admin/adapters`: every loaded adapter, used by a provider or not.
pub async fn adapters(State(state): State<AppState>) -> Response {
    let snap = state.gateway.snapshot();
    let adapters: Vec<Value> = snap
        .adapters
        .entries
        .iter()
        .map(|(name, entry)| {
            let used_by = snap.config.providers_using(name);
            let mut v = match &entry.active {
                Some(a) => adapter_json(a, entry.last_error.as_ref()),
                None => json!({"name": name, "loaded": false, "last_error": entry.last_error.as_ref().map(|f| f.error.to_string())}),
            };
            v["used_by"] = json!(used_by);
            v
        })
        .collect();
    axum::Json(json!({
        "adapters": adapters,
        "adapters_dir": snap.config.chatd.adapters_dir.as_ref().map(|d| d.display().to_string()),
        "adapters_dir_error": snap.adapters.dir_error,
        "last_reload": state.gateway.last_reload(),
        "instances": {
            "in_use": state.gateway.runtime().instances_in_use(),
            "max": state.gateway.runtime().config().max_instances,
        },
    }))
    .into_response()
}

/// The token of an `Authorization: Bearer <token>` value; the scheme name is
/// case-insensitive (RFC 9110, section 11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

#[cfg(test)]
mod tests {
    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(super::constant_time_eq(b"token", b"token"));
        assert!(!super::constant_time_eq(b"token", b"tokem"));
        assert!(!super::constant_time_eq(b"tok", b"token"));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer t0k", "bearer t0k", "BEARER  t0k"] {
            assert_eq!(super::bearer_token(value), Some("t0k"), "{value}");
        }
        for value in ["Basic t0k", "Bearert0k", "t0k"] {
            assert_eq!(super::bearer_token(value), None, "{value}");
        }
    }
}
