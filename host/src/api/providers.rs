//! `GET /v1/chat/providers`: the registered providers, their adapters and telemetry.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use crate::runtime::Adapter;

/// `GET /v1/chat/providers`: exactly the registered providers, plus why others are not.
pub async fn providers(State(state): State<AppState>) -> Response {
    let snap = state.gateway.snapshot();
    let default = &snap.config.chatd.default_provider;
    let providers: Vec<Value> = snap
        .providers
        .values()
        .map(|p| {
            let last_error = snap
                .adapters
                .entries
                .get(&p.adapter.name)
                .and_then(|e| e.last_error.as_ref());
            let endpoints: Vec<Value> = p
                .endpoints
                .iter()
                .map(|e| {
                    json!({
                        "url": e.target.base_url(),
                        "weight": e.weight,
                        "health": e.state.snapshot(),
                    })
                })
                .collect();
            let mut entry = json!({
                "name": p.name,
                "adapter": adapter_json(&p.adapter, last_error),
                "base_url": p.target.base_url(),
                "endpoints": endpoints,
                "default": &p.name == default,
                "key_source": p.key_source.as_ref().map(|s| s.to_string()),
                "retries": p.retry.retries,
                "telemetry": p.stats.snapshot(),
                "attempts": p.stats.attempts(),
            });
            if let Some((in_use, max)) = p.admission.usage() {
                entry["concurrency"] = json!({"in_use": in_use, "max": max});
            }
            entry
        })
        .collect();
    let unregistered: Vec<Value> = snap
        .unregistered
        .iter()
        .map(|(name, reason)| json!({"name": name, "reason": reason}))
        .collect();
    axum::Json(json!({"providers": providers, "unregistered": unregistered})).into_response()
}

/// An adapter as the API shows it.
pub fn adapter_json(
    a: &Adapter,
    last_error: Option<&crate::runtime::library::LoadFailure>,
) -> Value {
    json!({
        "name": a.name,
        "version": a.info.version,
        "contract": a.contract.as_str(),
        "source": a.source.to_string(),
        "sha256": a.sha256,
        "loaded_at": unix_secs(a.loaded_at),
        "streaming": a.info.supports_streaming,
        "capabilities": a.info.capabilities,
        "last_error": last_error.map(|f| json!({
            "path": f.path.display().to_string(),
            "message": f.error.to_string(),
            "at": unix_secs(f.at),
        })),
    })
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
