//! The model list: `GET /v1/models` and `GET /v1/models/{id}` (OpenAI's shape), and the
//! entries other formats list the same models from (Ollama's `/api/tags`).

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
    let data: Vec<Value> = super::clients::visible(&state, entries(&listing))
        .iter()
        .map(Entry::openai)
        .collect();
    axum::Json(json!({"object": "list", "data": data, "errors": errors})).into_response()
}

/// `GET /v1/models/{id}`: one entry of the model list (the OpenAI SDK's `models.retrieve`).
pub async fn model(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let listing = state.gateway.list_models().await;
    // A client's key sees only its own models; another's is not listed, for it.
    let found = find(&listing, &id).and_then(|entry| {
        super::clients::visible(&state, vec![entry])
            .pop()
            .ok_or_else(|| GatewayError::ModelNotListed(id.clone()))
    });
    match found {
        Ok(entry) => axum::Json(entry.openai()).into_response(),
        Err(e) => openai_error(&e),
    }
}

/// One routable model of the list.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The id a client routes by: a tier, or `provider/upstream-id`.
    pub id: String,
    /// Unix seconds, when the upstream says.
    pub created: Option<u64>,
    pub owned_by: String,
    /// A tier's model ID (its chain's first).
    pub target: Option<String>,
    /// The rest of a tier's chain, tried in order when the one before fails.
    pub fallbacks: Vec<String>,
    /// The context window in tokens, when the upstream's listing says (a tier's is its
    /// target's).
    pub context_length: Option<u32>,
}

impl Entry {
    fn openai(&self) -> Value {
        let mut object = json!({
            "id": self.id, "object": "model", "created": self.created.unwrap_or(0),
            "owned_by": self.owned_by,
        });
        if let Some(target) = &self.target {
            object["target"] = json!(target);
        }
        if !self.fallbacks.is_empty() {
            object["fallbacks"] = json!(self.fallbacks);
        }
        if let Some(context_length) = self.context_length {
            object["context_length"] = context_length.into();
        }
        object
    }
}

/// The model list's entries: the tiers, then each provider's models with the provider's name
/// in front (so each id routes back to it).
pub fn entries(listing: &ModelListing) -> Vec<Entry> {
    let mut listed = Vec::new();
    for (provider, models) in &listing.providers {
        for m in models.iter() {
            listed.push(Entry {
                id: format!("{provider}/{}", m.id),
                created: m.created,
                owned_by: m.owned_by.clone().unwrap_or_else(|| provider.clone()),
                target: None,
                fallbacks: Vec::new(),
                context_length: m.context_length,
            });
        }
    }
    let tiers = listing.tiers.iter().map(|(tier, chain)| Entry {
        id: tier.clone(),
        created: None,
        owned_by: "chatd".to_owned(),
        target: chain.first().cloned(),
        fallbacks: chain.iter().skip(1).cloned().collect(),
        context_length: listed
            .iter()
            .find(|e| chain.first() == Some(&e.id))
            .and_then(|e| e.context_length),
    });
    tiers
        .collect::<Vec<_>>()
        .into_iter()
        .chain(listed)
        .collect()
}

/// The entry `id`; a 404 when it is not listed (it may still be routable), or the failure of
/// its provider's listing when that is why.
pub fn find(listing: &ModelListing, id: &str) -> Result<Entry, GatewayError> {
    if let Some(found) = entries(listing).into_iter().find(|m| m.id == id) {
        return Ok(found);
    }
    let failed = listing.errors.iter().find(|(provider, _)| {
        id.strip_prefix(provider.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    });
    if let Some((_, e)) = failed {
        return Err(e.clone());
    }
    Err(GatewayError::ModelNotListed(id.to_owned()))
}
