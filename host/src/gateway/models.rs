//! The routable models: tiers, and every registered provider's upstream list, fetched through
//! its adapter, cached, and shared by concurrent callers.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::provider::{Provider, retry_after};
use super::{Gateway, Snapshot};
use crate::contract::ModelInfo;
use crate::error::GatewayError;

/// How long fetching one provider's model list may take, at most (less when the provider's
/// own timeout is shorter). A listing is metadata: one hung provider must not hold
/// `GET /v1/models` for the minutes a generation may take.
const LISTING_TIMEOUT: Duration = Duration::from_secs(10);

/// Pages of one provider's listing chatd follows at most (the contract's bound).
const MAX_PAGES: usize = 20;

/// How long a failed listing is remembered: clients that poll `/v1/models` during an outage
/// get the error at once instead of each waiting out [`LISTING_TIMEOUT`].
const FAILED_LISTING_TTL: Duration = Duration::from_secs(10);

/// The answer of [`Gateway::list_models`].
#[derive(Debug, Default)]
pub struct ModelListing {
    /// Tier name → its model IDs, in the order they are tried.
    pub tiers: BTreeMap<String, Vec<String>>,
    /// Provider → its upstream models.
    pub providers: Vec<(String, Arc<Vec<ModelInfo>>)>,
    /// Providers whose listing failed.
    pub errors: Vec<(String, GatewayError)>,
}

/// Each provider's last listing, and one lock per provider so concurrent listings wait for
/// one fetch instead of each making one.
#[derive(Default)]
pub(super) struct ModelCatalog {
    cache: Mutex<HashMap<String, CachedModels>>,
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// One provider's upstream model list, remembered for `models_cache_secs`; or why it could
/// not be fetched, remembered for [`FAILED_LISTING_TTL`] at most.
struct CachedModels {
    /// Adapter hash + base URL the list was fetched with; a reload that changes either
    /// invalidates it.
    key: String,
    fetched: Instant,
    models: Result<Arc<Vec<ModelInfo>>, GatewayError>,
}

type Listed = Result<Arc<Vec<ModelInfo>>, GatewayError>;

impl ModelCatalog {
    fn lock_for(&self, provider: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(provider.to_owned()).or_default().clone()
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedModels>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self, provider: &str, key: &str, ttl: Duration) -> Option<Listed> {
        let cache = self.cache();
        let hit = cache.get(provider)?;
        let ttl = match hit.models {
            Ok(_) => ttl,
            Err(_) => ttl.min(FAILED_LISTING_TTL),
        };
        (hit.key == key && hit.fetched.elapsed() < ttl).then(|| hit.models.clone())
    }

    fn remember(&self, provider: &str, key: String, models: Listed) {
        self.cache().insert(
            provider.to_owned(),
            CachedModels {
                key,
                fetched: Instant::now(),
                models,
            },
        );
    }
}

impl Gateway {
    /// The routable models: tiers and every registered provider's upstream list, fetched
    /// through the adapters concurrently and cached. One provider failing does not fail
    /// the listing.
    pub async fn list_models(&self) -> ModelListing {
        let snap = self.snapshot();
        let ttl = Duration::from_secs(snap.config.chatd.models_cache_secs);
        let fetches = snap
            .providers
            .values()
            .map(|p| async move { (p.name.clone(), self.listing(p, ttl).await) });
        let mut listing = ModelListing {
            tiers: servable_tiers(&snap),
            ..ModelListing::default()
        };
        for (name, result) in futures_util::future::join_all(fetches).await {
            match result {
                Ok(models) => listing.providers.push((name, models)),
                Err(e) => {
                    tracing::warn!(provider = %name, error = %e, "listing upstream models failed");
                    listing.errors.push((name, e));
                }
            }
        }
        listing
    }

    /// One provider's list: cached, or fetched by one caller while the others wait for it.
    async fn listing(&self, p: &Provider, ttl: Duration) -> Listed {
        let catalog = &self.models;
        let key = format!("{}|{}", p.adapter.sha256, p.target.base_url());
        if let Some(hit) = catalog.cached(&p.name, &key, ttl) {
            return hit;
        }
        let lock = catalog.lock_for(&p.name);
        let _fetching = lock.lock().await;
        // Another call may have fetched the list while this one waited.
        if let Some(hit) = catalog.cached(&p.name, &key, ttl) {
            return hit;
        }
        let limit = LISTING_TIMEOUT.min(p.target.timeout);
        let result = match tokio::time::timeout(limit, self.fetch_models(p)).await {
            Ok(result) => result.map(Arc::new),
            Err(_) => Err(GatewayError::UpstreamTimeout {
                provider: p.name.clone(),
                timeout: limit,
            }),
        };
        catalog.remember(&p.name, key, result.clone());
        result
    }

    /// Every page of a provider's listing, following the adapter's cursor for at most
    /// [`MAX_PAGES`] pages (a listing that pages on past that, or hands back the cursor it
    /// was given, ends there: what was listed so far is the list).
    async fn fetch_models(&self, provider: &Provider) -> Result<Vec<ModelInfo>, GatewayError> {
        let mut models = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let Some(built) = provider
                .instance()
                .await?
                .build_models_request(cursor.as_deref())
                .await
                .map_err(|e| provider.call_failed(e))?
            else {
                break;
            };
            let request = provider.request(built)?;
            let response = self
                .upstream
                .send(&provider.target, request)
                .await
                .map_err(|e| provider.upstream_failed(e))?;
            let page = provider
                .instance()
                .await?
                .parse_models_response(&response)
                .await
                .map_err(|e| provider.call_failed(e))?
                .map_err(|e| provider.adapter_error(e, retry_after(&response)))?;
            models.extend(page.models);
            match page.next_cursor {
                Some(next) if cursor.as_ref() != Some(&next) => cursor = Some(next),
                _ => break,
            }
        }
        Ok(models)
    }
}

/// The tiers whose provider can take requests now: a tier that cannot is not a model one can
/// use.
fn servable_tiers(snap: &Snapshot) -> BTreeMap<String, Vec<String>> {
    snap.config
        .tiers
        .iter()
        .filter(|(tier, _)| crate::routing::resolve(&snap.routes, tier).is_ok())
        .map(|(tier, model)| (tier.clone(), model.clone()))
        .collect()
}
