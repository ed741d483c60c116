//! One embeddings exchange: routed like a chat request, built and parsed by the provider's
//! adapter (which must declare "embeddings").

use std::time::{Duration, Instant};

use super::Gateway;
use super::capable::unforwarded;
use super::in_flight::Kind;
use super::provider::{Provider, retry_after};
use super::stream::{KEEP_INSTANCE_IDLE, hold_while};
use crate::contract::{Capability, EmbeddingsRequest, EmbeddingsResponse};
use crate::error::GatewayError;
use crate::routing::Route;

/// A finished embeddings exchange.
#[derive(Debug)]
pub struct EmbeddingsOutcome {
    /// How the model name was routed.
    pub route: Route,
    /// One vector per input, in input order.
    pub response: EmbeddingsResponse,
    /// Total time in chatd, upstream included.
    pub latency: Duration,
}

impl Gateway {
    /// Embeds `request.inputs` with the model the client named (routed like a chat model).
    pub async fn embeddings(
        &self,
        mut request: EmbeddingsRequest,
    ) -> Result<EmbeddingsOutcome, GatewayError> {
        let (route, mut exchange) = self.begin_exchange(&request.model, Kind::Request).await?;
        request.model = route.model.clone();
        let provider = exchange.provider.clone();
        let result = exchange.unless_cut(self.embed(&provider, &request)).await;
        if let Ok(response) = &result {
            exchange.tokens(response.input_tokens, None);
        }
        let latency = exchange.finish(result.is_ok());
        Ok(EmbeddingsOutcome {
            route,
            response: result?,
            latency,
        })
    }

    async fn embed(
        &self,
        provider: &Provider,
        request: &EmbeddingsRequest,
    ) -> Result<EmbeddingsResponse, GatewayError> {
        if !provider.can(Capability::Embeddings) {
            return Err(provider.not_capable(Capability::Embeddings));
        }
        if request.extra.is_some() && !provider.can(Capability::Passthrough) {
            return Err(unforwarded(provider, request.extra.as_deref()));
        }
        let mut builder = provider.instance().await?;
        let built = builder
            .build_embeddings_request(request)
            .await
            .map_err(|e| provider.call_failed(e))?
            .map_err(|e| provider.adapter_error(e, None))?;
        let send = self
            .upstream
            .send(&provider.target, provider.request(built)?);
        let (response, kept) = hold_while(builder, Instant::now() + KEEP_INSTANCE_IDLE, send).await;
        let response = response.map_err(|e| provider.upstream_failed(e))?;
        let mut parser = match kept {
            Some(instance) => instance,
            None => provider.instance().await?,
        };
        let parsed = parser.parse_embeddings_response(&response).await;
        parser.release();
        let parsed = parsed
            .map_err(|e| provider.call_failed(e))?
            .map_err(|e| provider.adapter_error(e, retry_after(&response)))?;
        if parsed.embeddings.len() != request.inputs.len() {
            return Err(provider.malformed(&format!(
                "{} embeddings for {} inputs",
                parsed.embeddings.len(),
                request.inputs.len()
            )));
        }
        Ok(parsed)
    }
}
