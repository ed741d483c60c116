//! What the one-shot commands report (`chatd check`, `chatd route`, `chatd adapters list`,
//! `chatd adapters check`): a config or a component loaded as `serve` would load it, without
//! listening, and described line by line. Kept here rather than in the binary so each report
//! is tested without spawning a process.

use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::contract::{AuthScheme, ContractVersion, StreamFraming};
use crate::gateway::Snapshot;
use crate::keys::Credentials;
use crate::routing;
use crate::runtime::library::AdapterSet;
use crate::runtime::{Adapter, AdapterSource, Runtime, RuntimeConfig};
use crate::telemetry::StatsRegistry;

/// A report: its lines, and whether what it found should fail a deploy.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub failed: bool,
}

impl Report {
    fn line(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    fn fail(&mut self, line: impl Into<String>) {
        self.failed = true;
        self.lines.push(line.into());
    }
}

/// A config loaded as `serve` would load it.
pub struct Loaded {
    pub snapshot: Snapshot,
    pub credentials: Credentials,
}

/// Loads what a config would serve: its adapters compiled and checked, its keys looked up.
pub async fn load(config_path: &Path) -> Result<Loaded, String> {
    let config = Config::load(config_path).map_err(|e| e.to_string())?;
    let runtime = Runtime::new(RuntimeConfig::from_config(&config.chatd.sandbox))?;
    let adapters = AdapterSet::load(
        &runtime,
        config.chatd.adapters_dir.as_deref(),
        &AdapterSet::default(),
    )
    .await;
    let credentials = Credentials::resolve(&config);
    let snapshot = Snapshot::build(
        Arc::new(config),
        Arc::new(adapters),
        &credentials,
        &StatsRegistry::default(),
        &crate::gateway::Lasting::default(),
    )
    .await;
    Ok(Loaded {
        snapshot,
        credentials,
    })
}

/// `chatd route`: where `model` goes and which rule decided, or why it cannot be routed.
pub fn route(snap: &Snapshot, model: &str) -> Result<String, String> {
    routing::resolve(&snap.routes, model)
        .map(|route| route.explain(model))
        .map_err(|e| format!("{model:?} cannot be routed: {e}"))
}

/// `chatd check`: every adapter, provider, key source (never a key), the admin token and each
/// tier's route. Fails on a rejected or missing adapter, an unreadable `adapters_dir`, and a
/// default provider that cannot register.
pub fn check(loaded: &Loaded) -> Report {
    let snap = &loaded.snapshot;
    let mut report = Report::default();
    report.line(format!("config {}: ok", snap.config.path.display()));
    for (name, entry) in &snap.adapters.entries {
        match (&entry.active, &entry.last_error) {
            (Some(a), None) => report.line(format!(
                "adapter {name}: ok ({} {}, contract {}, {})",
                a.info.name, a.info.version, a.contract, a.source
            )),
            (active, Some(err)) => {
                let fallback = active
                    .as_ref()
                    .map(|a| format!("; serving {} from {}", a.info.version, a.source))
                    .unwrap_or_default();
                report.fail(format!(
                    "adapter {name}: REJECTED {}: {}{fallback}",
                    err.path.display(),
                    err.error
                ));
            }
            (None, None) => {}
        }
    }
    if let Some(e) = &snap.adapters.dir_error {
        report.fail(format!("adapters_dir: {e}"));
    }
    for p in snap.providers.values() {
        let key = p
            .key_source
            .as_ref()
            .map_or("no key needed".to_owned(), |s| format!("key from {s}"));
        report.line(format!(
            "provider {}: registered (adapter {}, {}, {key})",
            p.name,
            p.adapter.name,
            p.target.base_url()
        ));
    }
    for (name, reason) in &snap.unregistered {
        // A missing key is the environment's business; refused settings are the config's.
        if snap.refused_settings.contains_key(name) {
            report.fail(format!("provider {name}: NOT registered: {reason}"));
        } else {
            report.line(format!("provider {name}: NOT registered: {reason}"));
        }
    }
    // `serve` starts without such a provider (as after its file was deleted); for a deploy's
    // check it is a typo or a missing file.
    if let Err(e) = Snapshot::check_adapters(&snap.config, &snap.adapters) {
        report.fail(e);
    }
    match &loaded.credentials.admin_token {
        Some(Ok((_, source))) => report.line(format!("admin API: enabled, token from {source}")),
        Some(Err(missing)) => report.line(format!(
            "admin API: enabled but NO token found (looked in {}): it refuses every request",
            missing.looked
        )),
        None => {}
    }
    // Like a provider without a key, a tier that cannot be served now fails only itself.
    for tier in snap.config.tiers.keys() {
        match routing::resolve(&snap.routes, tier) {
            Ok(route) => report.line(format!("tier {tier}: {}", route.explain(tier))),
            Err(e) => report.line(format!("tier {tier}: cannot be served: {e}")),
        }
    }
    // Another unregistered provider fails only its own prefix (keys may be added later); the
    // default one fails every bare model name, which is a broken deployment.
    let default = &snap.config.chatd.default_provider;
    if snap.unregistered.contains_key(default) {
        report.fail(format!(
            "default provider {default}: NOT registered, so bare model names cannot be served"
        ));
    }
    report
}

/// `chatd adapters check FILE`: whether a component is a valid adapter, and what it says
/// of itself.
pub async fn check_component(file: &Path) -> Report {
    let mut report = Report::default();
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) => {
            report.fail(format!("cannot read {}: {e}", file.display()));
            return report;
        }
    };
    let runtime = match Runtime::new(RuntimeConfig::default()) {
        Ok(runtime) => runtime,
        Err(e) => {
            report.fail(e);
            return report;
        }
    };
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("adapter");
    let a = match Adapter::load(&runtime, name, &bytes, AdapterSource::File(file.to_owned())).await
    {
        Ok(a) => a,
        Err(e) => {
            report.fail(format!("{}: rejected: {e}", file.display()));
            return report;
        }
    };
    let streaming = match (a.info.supports_streaming, a.info.stream_framing) {
        (false, _) => "no",
        (true, StreamFraming::Ndjson) => "yes (NDJSON)",
        (true, StreamFraming::Sse) => "yes (SSE)",
    };
    let listing = match a.instance().await {
        Ok(mut instance) => match instance.build_models_request(None).await {
            Ok(Some(req)) => format!("yes ({} {})", req.method, req.path),
            Ok(None) if a.contract.has_models() => "no".to_owned(),
            Ok(None) => "no (contract 0.1.0 has no model listing)".to_owned(),
            Err(e) => format!("fails: {e}"),
        },
        Err(e) => format!("fails: {e}"),
    };
    report.line(format!("{}: valid adapter", file.display()));
    report.line(format!("  name:              {}", a.info.name));
    report.line(format!("  version:           {}", a.info.version));
    report.line(format!(
        "  contract:          lakehouse:provider@{}",
        a.contract
    ));
    report.line(format!(
        "  auth:              {}",
        describe_auth(&a.info.auth)
    ));
    report.line(format!("  default base URL:  {}", a.info.default_base_url));
    report.line(format!("  streaming:         {streaming}"));
    let capabilities = if a.info.capabilities.is_empty() {
        "none".to_owned()
    } else {
        a.info.capabilities.join(", ")
    };
    let implied = if a.contract < ContractVersion::V0_3 {
        " (implied by its contract)"
    } else {
        ""
    };
    report.line(format!("  capabilities:      {capabilities}{implied}"));
    report.line(format!("  models listing:    {listing}"));
    report.line(format!("  sha256:            {}", a.sha256));
    report
}

fn describe_auth(auth: &AuthScheme) -> String {
    match auth {
        AuthScheme::None => "none".into(),
        AuthScheme::Bearer => "bearer token (Authorization header, added by chatd)".into(),
        AuthScheme::Header(h) => format!("key in header {h} (added by chatd)"),
    }
}

/// `chatd adapters list`: every adapter a config would load, its version, contract, users and
/// source, and the adapters it names that exist nowhere; as a table.
pub fn adapters_table(snap: &Snapshot) -> Vec<String> {
    struct Row {
        name: String,
        version: String,
        contract: String,
        used: String,
        source: String,
        rejected: Option<String>,
    }
    let mut rows: Vec<Row> = snap
        .adapters
        .entries
        .iter()
        .map(|(name, entry)| {
            let used = snap.config.providers_using(name);
            let (version, contract, source) = match &entry.active {
                Some(a) => (
                    a.info.version.clone(),
                    a.contract.as_str().to_owned(),
                    a.source.to_string(),
                ),
                None => ("-".into(), "-".into(), "(not loaded)".into()),
            };
            Row {
                name: name.clone(),
                version,
                contract,
                used: if used.is_empty() {
                    "-".into()
                } else {
                    used.join(",")
                },
                source,
                rejected: entry
                    .last_error
                    .as_ref()
                    .map(|e| format!("rejected {}: {}", e.path.display(), e.error)),
            }
        })
        .collect();
    // Adapters the config names that exist nowhere: their providers are not registered.
    let mut missing: Vec<&str> = snap
        .config
        .chatd
        .providers
        .values()
        .map(|p| p.adapter.as_str())
        .filter(|name| !snap.adapters.entries.contains_key(*name))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    rows.extend(missing.into_iter().map(|name| Row {
        name: name.to_owned(),
        version: "-".into(),
        contract: "-".into(),
        used: snap.config.providers_using(name).join(","),
        source: format!("(missing: no built-in, no {name}.wasm in adapters_dir)"),
        rejected: None,
    }));
    // Columns as wide as their longest cell, so long provider lists do not shift the rest.
    let width = |header: &str, cell: fn(&Row) -> &str| {
        rows.iter()
            .map(|r| cell(r).chars().count())
            .chain([header.len()])
            .max()
            .unwrap_or(0)
    };
    let w_name = width("ADAPTER", |r| &r.name);
    let w_version = width("VERSION", |r| &r.version);
    let w_contract = width("CONTRACT", |r| &r.contract);
    let w_used = width("USED BY", |r| &r.used);
    let mut lines = vec![format!(
        "{:<w_name$}  {:<w_version$}  {:<w_contract$}  {:<w_used$}  SOURCE",
        "ADAPTER", "VERSION", "CONTRACT", "USED BY"
    )];
    for r in &rows {
        lines.push(format!(
            "{:<w_name$}  {:<w_version$}  {:<w_contract$}  {:<w_used$}  {}",
            r.name, r.version, r.contract, r.used, r.source
        ));
        if let Some(rejected) = &r.rejected {
            lines.push(format!("  {rejected}"));
        }
    }
    lines
}
