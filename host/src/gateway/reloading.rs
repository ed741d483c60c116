//! Reloading: re-reading the config and adapters and swapping the snapshot.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;

use super::{Gateway, Snapshot};
use crate::config::Config;
use crate::keys::Credentials;
use crate::runtime::library::AdapterSet;

/// What reloading keeps between reloads.
pub(super) struct Reloads {
    /// The config file, re-read by every config reload.
    config_path: PathBuf,
    /// The config chatd started with: what the settings a reload cannot change still are.
    initial: Arc<Config>,
    /// Serialises reloads: each one builds on the snapshot the previous one installed.
    lock: tokio::sync::Mutex<()>,
    last: Mutex<Option<ReloadReport>>,
    /// Publishes `adapters_dir` after every reload, so the file watcher can follow it.
    adapters_dir: watch::Sender<Option<PathBuf>>,
}

impl Reloads {
    pub(super) fn new(initial: Arc<Config>) -> Reloads {
        Reloads {
            config_path: initial.path.clone(),
            adapters_dir: watch::Sender::new(initial.chatd.adapters_dir.clone()),
            initial,
            lock: tokio::sync::Mutex::new(()),
            last: Mutex::new(None),
        }
    }

    pub(super) fn config_path(&self) -> &Path {
        &self.config_path
    }
}
/// What a reload re-reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadScope {
    /// Only `adapters_dir` (a file changed there).
    Adapters,
    /// `lakehouse.toml` and `adapters_dir` (SIGHUP, `POST /v1/admin/reload`).
    ConfigAndAdapters,
}

/// The outcome of one reload.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    /// Unix seconds when it finished.
    pub at: u64,
    /// What triggered it.
    pub trigger: String,
    /// False when the new config was rejected (the previous one stays).
    pub ok: bool,
    /// Why the config was rejected.
    pub error: Option<String>,
    /// Adapters now serving a different version (`name`).
    pub swapped: Vec<String>,
    /// The same swaps with their versions: `name old -> new`, or `name version (new)`.
    pub versions: Vec<String>,
    /// Adapters no longer loaded (their file was removed).
    pub removed: Vec<String>,
    /// Adapter files that failed validation (the previous version keeps serving).
    pub rejected: Vec<RejectedAdapter>,
    /// Registered providers after the reload.
    pub providers: Vec<String>,
    /// How long the reload took, in milliseconds.
    pub took_ms: f64,
}

/// An adapter file that failed validation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RejectedAdapter {
    pub adapter: String,
    pub path: String,
    pub error: String,
}

impl Gateway {
    /// Re-reads adapters (and the config, for [`ReloadScope::ConfigAndAdapters`]) and swaps
    /// the result in atomically. New components are compiled and validated off the request
    /// path; requests already running keep the snapshot they started with. A config that
    /// fails to parse or validate is rejected whole; an adapter file that fails validation is
    /// rejected alone and its previous version keeps serving.
    pub async fn reload(&self, scope: ReloadScope, trigger: &str) -> ReloadReport {
        let reloads = &self.reloads;
        let _serial = reloads.lock.lock().await;
        let started = Instant::now();
        let current = self.snapshot();
        let config = match scope {
            ReloadScope::Adapters => Ok(current.config.clone()),
            ReloadScope::ConfigAndAdapters => Config::load(&reloads.config_path)
                .map(Arc::new)
                .map_err(|e| e.to_string()),
        };
        let outcome = match config {
            Ok(config) => {
                warn_restart_only_changes(&reloads.initial, &config);
                let adapters = AdapterSet::load(
                    &self.runtime,
                    config.chatd.adapters_dir.as_deref(),
                    &current.adapters,
                )
                .await;
                match Snapshot::check_new_adapters(&config, Some(&current.config), &adapters) {
                    Ok(()) => {
                        let credentials = Credentials::resolve(&config);
                        let next = Snapshot::build(
                            config,
                            Arc::new(adapters),
                            &credentials,
                            &self.stats,
                            &self.lasting,
                        )
                        .await;
                        new_settings_refusal(&current, &next).map_or(Ok(next), Err)
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        let report = match outcome {
            Ok(next) => {
                let report = ReloadReport::new(trigger, &current, &next, None, started);
                reloads
                    .adapters_dir
                    .send_replace(next.config.chatd.adapters_dir.clone());
                let next = Arc::new(next);
                self.state.store(next.clone());
                // Logged once in effect: a reader of the log (or a test) may act on it at once.
                next.log_unregistered();
                report
            }
            Err(error) => ReloadReport::new(trigger, &current, &current, Some(error), started),
        };
        if report.ok {
            tracing::info!(
                trigger,
                swapped = ?report.versions,
                removed = ?report.removed,
                rejected = report.rejected.len(),
                took_ms = format_args!("{:.1}", report.took_ms),
                "reloaded"
            );
        } else {
            tracing::error!(
                trigger,
                error = report.error.as_deref().unwrap_or("-"),
                "reload rejected; previous config stays active"
            );
        }
        *reloads.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(report.clone());
        report
    }

    /// The outcome of the most recent reload, if any.
    pub fn last_reload(&self) -> Option<ReloadReport> {
        self.reloads
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Follows `adapters_dir` across config reloads.
    pub fn watch_adapters_dir(&self) -> watch::Receiver<Option<PathBuf>> {
        self.reloads.adapters_dir.subscribe()
    }
}

impl ReloadReport {
    fn new(
        trigger: &str,
        before: &Snapshot,
        after: &Snapshot,
        error: Option<String>,
        started: Instant,
    ) -> Self {
        let mut swapped = Vec::new();
        let mut versions = Vec::new();
        for (name, entry) in &after.adapters.entries {
            let Some(new) = entry.active.as_ref() else {
                continue;
            };
            let old = before.adapters.get(name);
            if old.is_some_and(|old| Arc::ptr_eq(old, new)) {
                continue;
            }
            swapped.push(name.clone());
            versions.push(match old {
                // A rebuild that kept its version: the hashes tell the files apart.
                Some(old) if old.info.version == new.info.version => format!(
                    "{name} {} (sha256 {} -> {})",
                    new.info.version,
                    short_hash(&old.sha256),
                    short_hash(&new.sha256)
                ),
                Some(old) => format!("{name} {} -> {}", old.info.version, new.info.version),
                None => format!("{name} {} (new)", new.info.version),
            });
        }
        let removed = before
            .adapters
            .entries
            .iter()
            .filter(|(name, entry)| entry.active.is_some() && after.adapters.get(name).is_none())
            .map(|(name, _)| name.clone())
            .collect();
        let rejected = after
            .adapters
            .entries
            .iter()
            .filter_map(|(name, entry)| {
                let f = entry.last_error.as_ref()?;
                Some(RejectedAdapter {
                    adapter: name.clone(),
                    path: f.path.display().to_string(),
                    error: f.error.to_string(),
                })
            })
            .collect();
        ReloadReport {
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            trigger: trigger.to_owned(),
            ok: error.is_none(),
            error,
            swapped,
            versions,
            removed,
            rejected,
            providers: after.providers.keys().cloned().collect(),
            took_ms: started.elapsed().as_secs_f64() * 1000.0,
        }
    }
}

/// A refusal of a provider's settings that `next` brings and `current` did not have: a
/// reload must not unregister a provider that serves (or one the operator is configuring)
/// over settings its adapter refuses; the running config stays, and the error says why. A
/// refusal that was there before (chatd started with it) does not block other changes.
fn new_settings_refusal(current: &Snapshot, next: &Snapshot) -> Option<String> {
    next.refused_settings
        .iter()
        .find(|(name, why)| current.refused_settings.get(*name) != Some(*why))
        .map(|(name, why)| {
            format!(
                "config {}: provider {name}: {why}",
                next.config.path.display()
            )
        })
}

/// Settings fixed at start: say so when a reloaded config differs from what is running.
fn warn_restart_only_changes(old: &Config, new: &Config) {
    if old.chatd.bind != new.chatd.bind {
        tracing::warn!(old = %old.chatd.bind, new = %new.chatd.bind, "chatd.bind changed: takes effect after a restart");
    }
    if old.chatd.cors_origins != new.chatd.cors_origins {
        tracing::warn!("chatd.cors_origins changed: takes effect after a restart");
    }
    if old.server_threads() != new.server_threads() {
        tracing::warn!(
            running = old.server_threads(),
            new = new.server_threads(),
            "chatd.threads changed: takes effect after a restart"
        );
    }
    if old.chatd.limits.store != new.chatd.limits.store
        || old.chatd.limits.key_prefix != new.chatd.limits.key_prefix
    {
        tracing::warn!("chatd.limits.store or key_prefix changed: takes effect after a restart");
    }
    let (a, b) = (&old.chatd.sandbox, &new.chatd.sandbox);
    if (a.memory_mib, a.cpu_ms, a.max_instances) != (b.memory_mib, b.cpu_ms, b.max_instances) {
        tracing::warn!("chatd.sandbox changed: takes effect after a restart");
    }
    if old.chatd.otel != new.chatd.otel {
        tracing::warn!("chatd.otel changed: takes effect after a restart");
    }
}

/// The first 12 hex digits of a SHA-256, enough to tell two builds apart in a log line.
fn short_hash(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}
