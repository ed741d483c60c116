//! Who may call chatd, with which models, and how much: client keys, per-client limits and
//! usage (`[chatd.clients]`, `[chatd.limits]`).
//!
//! A request's way through it:
//! 1. the API's middleware finds the client by its key's digest in the [`ClientTable`] of the
//!    running config (401 without a known key) and runs the rest of the request — its handler
//!    and its response body — with that [`Caller`] in scope (a task-local: every wire format's
//!    handler gets metering without passing the caller along);
//! 2. when the gateway has routed the request, [`admit`] checks the model against the
//!    client's patterns (403) and its limits (429; `access.rs`, `limits.rs`, `store/`), and
//!    returns the exchange's [`Meter`];
//! 3. when the answer ends (a stream's last chunk included) the meter counts its tokens in
//!    the usage counters (`usage.rs`) and debits them from the token limits.
//!
//! With client keys off, none of this runs: no caller is in scope and [`admit`] returns at
//! once.

pub mod access;
pub mod keys;
pub mod limits;
pub mod store;
pub mod usage;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use crate::config::{ClientKey, Config, LimitsConfig};
use crate::error::GatewayError;
use crate::routing::Route;
use limits::{Clock, Kind, Limit, Verdict};
use store::Limiter;
use usage::{ModelUsage, Usage, refusal_reason};

/// One configured client, ready for the request path.
#[derive(Debug)]
pub struct Client {
    pub name: Arc<str>,
    /// The config entry it was built from.
    pub config: ClientKey,
    /// The client's own limits.
    pub limits: Vec<Limit>,
    /// Per-model limits: pattern → its limits.
    pub model_limits: Vec<(String, Vec<Limit>)>,
}

impl Client {
    fn new(name: &str, config: &ClientKey) -> Client {
        let name: Arc<str> = name.into();
        let model_limits = config
            .model_limits
            .iter()
            .map(|(pattern, l)| (pattern.clone(), limit_list(&name, l, Some(pattern))))
            .collect();
        Client {
            limits: limit_list(&name, &config.limits, None),
            model_limits,
            config: config.clone(),
            name,
        }
    }

    /// Whether one of the client's patterns allows `requested`, routed by `route`.
    pub fn may_use(&self, requested: &str, route: &Route) -> bool {
        self.config
            .models
            .iter()
            .any(|p| access::matches(p, requested, route))
    }

    /// The limits that apply to a request: the client's own, then those of every per-model
    /// pattern that matches it.
    pub fn limits_for(&self, requested: &str, route: &Route) -> Vec<Limit> {
        let mut all = self.limits.clone();
        for (pattern, limits) in &self.model_limits {
            if access::matches(pattern, requested, route) {
                all.extend(limits.iter().cloned());
            }
        }
        all
    }

    /// Every limit of the client, per-model ones included.
    pub fn all_limits(&self) -> Vec<Limit> {
        let mut all = self.limits.clone();
        for (_, limits) in &self.model_limits {
            all.extend(limits.iter().cloned());
        }
        all
    }
}

fn limit_list(client: &Arc<str>, l: &crate::config::Limits, pattern: Option<&str>) -> Vec<Limit> {
    let values = [
        (Kind::RequestsPerMinute, l.requests_per_minute),
        (Kind::TokensPerMinute, l.tokens_per_minute),
        (Kind::TokensPerDay, l.tokens_per_day),
        (Kind::TokensPerMonth, l.tokens_per_month),
    ];
    values
        .into_iter()
        .filter_map(|(kind, value)| {
            let limit = value?;
            let id = match pattern {
                Some(p) => format!("{client}:{}:{p}", kind.tag()),
                None => format!("{client}:{}", kind.tag()),
            };
            Some(Limit {
                client: client.clone(),
                id: id.into(),
                kind,
                limit,
                pattern: pattern.map(Arc::from),
            })
        })
        .collect()
}

/// The clients of one config, indexed by key digest.
#[derive(Debug)]
pub struct ClientTable {
    by_digest: HashMap<[u8; 32], Arc<Client>>,
    /// By name, for listings.
    pub clients: BTreeMap<String, Arc<Client>>,
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` or `x-api-key` header.
    Missing,
    /// A key that is not configured (or not a key at all).
    Unknown,
}

impl ClientTable {
    pub fn build(config: &Config) -> ClientTable {
        let mut by_digest = HashMap::new();
        let mut clients = BTreeMap::new();
        for (name, entry) in &config.chatd.clients.keys {
            let client = Arc::new(Client::new(name, entry));
            for digest in &entry.digests {
                by_digest.insert(*digest, client.clone());
            }
            clients.insert(name.clone(), client);
        }
        ClientTable { by_digest, clients }
    }

    /// The client whose key the request presents.
    pub fn authenticate(&self, headers: &http::HeaderMap) -> Result<Arc<Client>, Refusal> {
        let presented = keys::presented(headers);
        if presented.is_empty() {
            return Err(Refusal::Missing);
        }
        // Every presented key is hashed, known or not: the path is the same for all.
        let mut found = None;
        for key in presented {
            let client = self.by_digest.get(&keys::digest(key));
            found = found.or(client);
        }
        found.cloned().ok_or(Refusal::Unknown)
    }
}

/// What lives as long as the process: the limiter (counters survive reloads) and the usage
/// counters. The client table belongs to the config's snapshot (`Snapshot::clients`).
pub struct Service {
    pub limiter: Arc<Limiter>,
    pub usage: Usage,
}

impl Service {
    /// The service for `config`'s `[chatd.limits]`, on the system clock.
    pub fn new(config: &LimitsConfig) -> Result<Service, String> {
        Service::with_clock(config, Arc::new(limits::SystemClock))
    }

    pub fn with_clock(config: &LimitsConfig, clock: Arc<dyn Clock>) -> Result<Service, String> {
        Ok(Service {
            limiter: Arc::new(Limiter::new(config, clock)?),
            usage: Usage::default(),
        })
    }
}

/// An authenticated request's client, in scope while the request runs.
pub struct Caller {
    pub client: Arc<Client>,
    service: Arc<Service>,
    /// What the limits said, for the answer's `x-ratelimit-*` headers.
    verdict: OnceLock<Verdict>,
}

impl Caller {
    pub fn new(client: Arc<Client>, service: Arc<Service>) -> Caller {
        Caller {
            client,
            service,
            verdict: OnceLock::new(),
        }
    }

    /// What the limits said about the request, once it was checked.
    pub fn verdict(&self) -> Option<&Verdict> {
        self.verdict.get()
    }
}

tokio::task_local! {
    static CALLER: Arc<Caller>;
}

/// Runs `work` with `caller` in scope.
pub async fn scope<F: Future>(caller: Arc<Caller>, work: F) -> F::Output {
    CALLER.scope(caller, work).await
}

/// Runs `work` synchronously with `caller` in scope (a response body's poll).
pub fn sync_scope<R>(caller: Arc<Caller>, work: impl FnOnce() -> R) -> R {
    CALLER.sync_scope(caller, work)
}

/// The caller in scope, if any.
pub fn current() -> Option<Arc<Caller>> {
    CALLER.try_with(Arc::clone).ok()
}

/// The name of the caller in scope, for log lines (which write `-` without one).
pub fn current_name() -> Option<Arc<str>> {
    CALLER.try_with(|c| c.client.name.clone()).ok()
}

/// Checks a routed request against its client's models and limits (the caller in scope)
/// and returns the meter that counts what the exchange uses. With client keys off, or for
/// requests that reach the gateway without the API (tests, tools), there is no caller and
/// nothing to check.
pub async fn admit(
    config: &Arc<Config>,
    requested: &str,
    route: &Route,
) -> Result<Option<Meter>, GatewayError> {
    let Some(caller) = current() else {
        return Ok(None);
    };
    let client = &caller.client;
    let usage = &caller.service.usage;
    if !client.may_use(requested, route) {
        usage.refused(&client.name, refusal_reason(None));
        return Err(GatewayError::ModelNotAllowed {
            client: client.name.to_string(),
            model: requested.trim().to_owned(),
        });
    }
    let limits = client.limits_for(requested, route);
    if !limits.is_empty() {
        let limits_config = &config.chatd.limits;
        let verdict = caller
            .service
            .limiter
            .check(&limits, limits_config)
            .await
            .map_err(|_| GatewayError::LimitsUnavailable)?;
        let _ = caller.verdict.set(verdict);
        if let Some((kind, wait)) = verdict.refused {
            usage.refused(&client.name, refusal_reason(Some(kind)));
            let limit = limits
                .iter()
                .filter(|l| l.kind == kind)
                .map(|l| l.limit)
                .min()
                .unwrap_or(0);
            return Err(GatewayError::LimitExceeded {
                client: client.name.to_string(),
                limit: kind.name(),
                value: limit,
                budget: matches!(kind, Kind::TokensPerDay | Kind::TokensPerMonth),
                retry_after: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
                    .max(1)
                    .to_string(),
                retry_after_ms: wait.as_millis() as u64,
            });
        }
    }
    let model = usage.model(&client.name, requested.trim());
    model.request();
    Ok(Some(Meter {
        caller: caller.clone(),
        limits,
        model,
        config: config.clone(),
        input: None,
        output: None,
    }))
}

/// Counts one admitted exchange: its tokens, once its answer ends (or it is dropped).
pub struct Meter {
    caller: Arc<Caller>,
    limits: Vec<Limit>,
    model: Arc<ModelUsage>,
    /// The config the request was admitted under (its `[chatd.limits]`).
    config: Arc<Config>,
    input: Option<u32>,
    output: Option<u32>,
}

impl Meter {
    /// The token counts the answer reported so far (the last reported value wins).
    pub fn tokens(&mut self, input: Option<u32>, output: Option<u32>) {
        self.input = input.or(self.input);
        self.output = output.or(self.output);
    }

    /// The client's name.
    pub fn client(&self) -> &str {
        &self.caller.client.name
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        let (input, output) = (
            u64::from(self.input.unwrap_or(0)),
            u64::from(self.output.unwrap_or(0)),
        );
        if input + output == 0 {
            return;
        }
        self.model.tokens(input, output);
        self.caller.service.limiter.debit(
            std::mem::take(&mut self.limits),
            input + output,
            &self.config.chatd.limits,
        );
    }
}

/// Says what the client keys of a newly loaded config are: at start and after each reload.
pub fn log_config(config: &Config) {
    let clients = &config.chatd.clients;
    if !clients.enabled {
        return;
    }
    if clients.keys.is_empty() {
        tracing::warn!(
            "client keys are on but none is configured: every API request is refused \
             (add one with `chatd keys add NAME`)"
        );
    } else {
        tracing::info!(
            clients = clients.keys.len(),
            keys_file = clients.keys_file.as_ref().map(|f| f.display().to_string()),
            limits_store = %config.chatd.limits.store_display(),
            "client keys on"
        );
    }
}

/// The warning `chatd serve` logs when it listens beyond this machine with client keys off.
pub fn exposure_warning(addr: SocketAddr, config: &Config) -> Option<String> {
    if addr.ip().is_loopback() || config.chatd.clients.enabled {
        return None;
    }
    Some(format!(
        "listening on {addr}, reachable from other machines, without client keys: anyone who \
         can reach it can spend the providers' keys; enable [chatd.clients] (README: Client keys)"
    ))
}
