//! What a request needs of its provider's adapter, checked before the adapter sees it.

use serde_json::Value;

use super::provider::Provider;
use crate::contract::{Capabilities, Capability, ChatRequest};
use crate::error::GatewayError;

/// Refuses a request that needs a capability the provider's adapter does not declare
/// (400 naming the feature and the provider), so that nothing a client asked for is dropped
/// on the way. A plain text request needs none and costs one pass over its messages.
pub(super) fn check(provider: &Provider, request: &ChatRequest) -> Result<(), GatewayError> {
    let missing = Capabilities::needed_by(request).missing_from(provider.adapter.capabilities);
    match missing.first() {
        None => Ok(()),
        Some(Capability::Passthrough) => Err(unforwarded(provider, request.extra.as_deref())),
        // An image given by URL to an adapter that takes no images at all: it is images the
        // adapter lacks, however they are given.
        Some(Capability::ImageUrls) if !provider.can(Capability::Images) => {
            Err(provider.not_capable(Capability::Images))
        }
        Some(capability) => Err(provider.not_capable(capability)),
    }
}

/// The refusal of passthrough fields by an adapter that forwards none: the fields are what
/// the client sent beyond the API's own, so the error names the first of them as the field
/// at fault (a misspelt `temprature` is caught here, as it was before passthrough).
pub(super) fn unforwarded(provider: &Provider, extra: Option<&str>) -> GatewayError {
    let fields = extra.and_then(|e| serde_json::from_str::<serde_json::Map<String, Value>>(e).ok());
    let field = fields.as_ref().and_then(|f| {
        let (key, value) = f.iter().next()?;
        // The native API's unknown `options` arrive as one `options` object.
        Some(match value {
            Value::Object(inner) if key == "options" && !inner.is_empty() => {
                format!("options.{}", inner.keys().next().map_or("", String::as_str))
            }
            _ => key.clone(),
        })
    });
    let field = field.unwrap_or_else(|| "extra".to_owned());
    GatewayError::bad_param(
        &field,
        format!(
            "unrecognized request field {field:?}: provider {} passes no extra fields to its \
             upstream (its adapter {} does not declare the \"passthrough\" capability)",
            provider.name, provider.adapter.name
        ),
    )
}
