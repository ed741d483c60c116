//! The model list: `GET /v1/models` and `GET /v1/models/{id}` (OpenAI's shape).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::formats::openai::openai_error;
use crate::error::GatewayError;
use crate::gateway::ModelListing;

/// `GET /v1/models`: tiers, then every registered provider's upstream models (prefixed so
/// each id routes back to its provider). A provider whose listing fails is reported in
/// `errors` and does not fail the list.
pub async fn models(State(state): State<AppState>) -> Response {
    let listing = state.gateway.list_models().await;
    let errors: Vec<Value> = listing
        .errors
        .iter()
        .map(|(provider, e)| json!({"provider": provider, "code": e.code(), "message": e.to_string()}))
        .collect();
    let data = model_objects(&listing);
    axum::Json(json!({"object": "list", "data": data, "errors": errors})).into_response()
}

/// `GET /v1/models/{id}`: one entry of the model list (the OpenAI SDK's `models.retrieve`).
pub async fn model(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let listing = state.gateway.list_models().await;
    if let Some(found) = model_objects(&listing)
        .into_iter()
        .find(|m| m["id"] == id.as_str())
    {
        return axum::Json(found).into_response();
    }
    // Not listed because its provider's listing failed: that failure is the answer.
    let failed = listing.errors.iter().find(|(provider, _)| {
        id.strip_prefix(provider.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    });
    if let Some((_, e)) = failed {
        return openai_error(e);
    }
    openai_error(&GatewayError::NotFound(format!(
        "model {id:?} is not in the model list (GET /v1/models); it may still be routable"
    )))
}

/// The model list's entries in OpenAI's shape: the tiers, then each provider's models with
/// the provider's name in front (so each id routes back to it).
fn model_objects(listing: &ModelListing) -> Vec<Value> {
    let mut data = Vec::new();
    for (tier, chain) in &listing.tiers {
        let mut entry = json!({"id": tier, "object": "model", "created": 0, "owned_by": "chatd", "target": chain[0]});
        if chain.len() > 1 {
            entry["fallbacks"] = json!(chain[1..]);
        }
        data.push(entry);
    }
    for (provider, models) in &listing.providers {
        for m in models.iter() {
            data.push(json!({
                "id": format!("{provider}/{}", m.id),
                "object": "model",
                "created": m.created.unwrap_or(0),
                "owned_by": m.owned_by.clone().unwrap_or_else(|| provider.clone()),
            }));
        }
    }
    data
}
