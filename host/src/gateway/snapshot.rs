//! The immutable snapshot a request runs on: config, adapters, registered providers.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::endpoints::Lasting;
use super::provider::{Provider, Registration, Unregistered, unknown_adapter};
use crate::config::Config;
use crate::error::GatewayError;
use crate::keys::{Credentials, Secret};
use crate::routing::{self, Candidates, Route, RouteTable};
use crate::runtime::library::AdapterSet;
use crate::scrub::Scrubber;
use crate::telemetry::StatsRegistry;

/// Everything one request needs, immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    /// The config this snapshot was built from.
    pub config: Arc<Config>,
    /// The loaded adapters.
    pub adapters: Arc<AdapterSet>,
    /// Registered providers by name.
    pub providers: BTreeMap<String, Arc<Provider>>,
    /// Configured but unregistered providers, with the reason.
    pub unregistered: BTreeMap<String, String>,
    /// The providers of `unregistered` whose adapter refused their settings, with its
    /// message: `chatd check` fails on them, and a reload that brings a new one is rejected.
    pub refused_settings: BTreeMap<String, String>,
    /// What routing needs.
    pub routes: RouteTable,
    /// The admin bearer token, when the admin API is enabled and a token was found.
    pub admin_token: Option<Secret>,
    /// The config's client keys, indexed by digest: built with the snapshot, looked up on
    /// every request when client keys are on.
    pub clients: Arc<crate::clients::ClientTable>,
}

impl Snapshot {
    /// Checks that every provider names an adapter that exists (built-in or a file in
    /// `adapters_dir`), for `chatd check`: a typo there should fail a deploy's check. `serve`
    /// starts anyway, with that provider unregistered and the reason logged.
    pub fn check_adapters(config: &Config, adapters: &AdapterSet) -> Result<(), String> {
        Self::check_new_adapters(config, None, adapters)
    }

    /// Like [`Snapshot::check_adapters`], but only for providers whose adapter differs from
    /// `previous`: on reload, a provider whose adapter file was deleted is unregistered
    /// (deleting a file is how an operator unloads it) instead of blocking every reload.
    pub(super) fn check_new_adapters(
        config: &Config,
        previous: Option<&Config>,
        adapters: &AdapterSet,
    ) -> Result<(), String> {
        for (name, pc) in &config.chatd.providers {
            let unchanged = previous
                .and_then(|p| p.chatd.providers.get(name))
                .is_some_and(|old| old.adapter == pc.adapter);
            if !unchanged && !adapters.entries.contains_key(&pc.adapter) {
                return Err(format!(
                    "config {}: provider {name}: {}",
                    config.path.display(),
                    unknown_adapter(&pc.adapter, config, adapters)
                ));
            }
        }
        Ok(())
    }

    /// Registers every configured provider whose adapter loaded, whose key (if its adapter
    /// needs one) was found and whose settings (if any) its adapter accepts; the others are
    /// listed in `unregistered` with the reason. Does no I/O: the keys were looked up into
    /// `credentials` before.
    pub async fn build(
        config: Arc<Config>,
        adapters: Arc<AdapterSet>,
        credentials: &Credentials,
        stats: &StatsRegistry,
        lasting: &Lasting,
    ) -> Snapshot {
        let scrubber = Scrubber::new(credentials.secrets());
        let registration = Registration {
            config: &config,
            adapters: &adapters,
            stats,
            scrubber: &scrubber,
            credentials,
            lasting,
        };
        let mut providers = BTreeMap::new();
        let mut unregistered = BTreeMap::new();
        let mut refused_settings = BTreeMap::new();
        for (name, pc) in &config.chatd.providers {
            match registration
                .register(name, pc, credentials.providers.get(name))
                .await
            {
                Ok(p) => {
                    providers.insert(name.clone(), Arc::new(p));
                }
                Err(Unregistered::Other(reason)) => {
                    unregistered.insert(name.clone(), reason);
                }
                Err(Unregistered::Settings(reason)) => {
                    refused_settings.insert(name.clone(), reason.clone());
                    unregistered.insert(name.clone(), reason);
                }
            }
        }
        let routes = RouteTable {
            tiers: config.tiers.clone(),
            configured: config.chatd.providers.keys().cloned().collect(),
            registered: providers.keys().cloned().collect(),
            default_provider: config.chatd.default_provider.clone(),
        };
        let admin_token = match &credentials.admin_token {
            Some(Ok((token, _))) => Some(token.clone()),
            _ => None,
        };
        Snapshot {
            clients: Arc::new(crate::clients::ClientTable::build(&config)),
            config,
            adapters,
            providers,
            unregistered,
            refused_settings,
            routes,
            admin_token,
        }
    }

    /// Says once what a newly built snapshot could not register, and why: at start, and
    /// after a reload that installed it.
    pub fn log_unregistered(&self) {
        crate::clients::log_config(&self.config);
        for (name, reason) in &self.unregistered {
            tracing::warn!(provider = %name, %reason, "provider not registered");
        }
        let admin = &self.config.chatd.admin;
        if admin.enabled && self.admin_token.is_none() {
            tracing::warn!(
                token_env = %admin.token_env,
                "admin API enabled but no token found: it refuses every request"
            );
        }
    }

    /// A model name's candidates, in the order to try them (see [`routing::resolve`]).
    pub fn candidates(&self, model: &str) -> Result<Candidates, GatewayError> {
        Ok(routing::resolve(&self.routes, model)?)
    }

    /// A model name's first candidate and its provider: where a request goes when nothing
    /// fails (what `/api/show` describes, what counts a request's tokens against).
    pub fn route(&self, model: &str) -> Result<(Route, Arc<Provider>), GatewayError> {
        let route = self.candidates(model)?.first().clone();
        let provider = self
            .providers
            .get(&route.provider)
            .cloned()
            .ok_or_else(|| {
                GatewayError::Internal(format!("route to unknown provider {}", route.provider))
            })?;
        Ok((route, provider))
    }
}
