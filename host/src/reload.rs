//! What triggers a reload: changes in `adapters_dir` (watched, debounced) and `SIGHUP`.
//! (`POST /v1/admin/reload` is the third trigger, in the API.)

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_full::notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use crate::gateway::{Gateway, ReloadScope};

/// Quiet time after the last file event before reloading: long enough for a copy in
/// progress to finish, short enough that a deploy is live within a second.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// Catches `SIGHUP` from now on. Call it first thing at start: until a handler exists, a
/// `SIGHUP` (an operator reloading a chatd that is still compiling adapters) would kill the
/// process.
pub fn catch_sighup() -> Option<Signal> {
    match signal(SignalKind::hangup()) {
        Ok(hup) => Some(hup),
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reload with POST /v1/admin/reload");
            None
        }
    }
}

/// Starts the `SIGHUP` handler (for a signal caught by [`catch_sighup`]) and the
/// `adapters_dir` watcher. Both live as long as the gateway does.
pub fn spawn(gateway: Arc<Gateway>, hup: Option<Signal>) {
    if let Some(hup) = hup {
        tokio::spawn(sighup(gateway.clone(), hup));
    }
    tokio::spawn(watch_adapters_dir(gateway));
}

async fn sighup(gateway: Arc<Gateway>, mut hup: Signal) {
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading config and adapters");
        gateway
            .reload(ReloadScope::ConfigAndAdapters, "SIGHUP")
            .await;
    }
}

/// What the watcher saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// An adapter file in the directory changed.
    Files,
    /// The directory itself appeared, disappeared or was replaced (renamed over, a symlink
    /// switched): the watch on the old one sees nothing from now on.
    Dir,
}

/// Watches the current `adapters_dir` and follows it when a config reload moves it, or when
/// the directory at that path is replaced (its parent is watched for that).
async fn watch_adapters_dir(gateway: Arc<Gateway>) {
    let mut dir_rx = gateway.watch_adapters_dir();
    let (tx, mut events) = mpsc::unbounded_channel::<Change>();
    let mut replaced = false;
    loop {
        let dir = dir_rx.borrow_and_update().clone();
        // Dropping the previous debouncer (on the next loop turn) stops its watch.
        let _debouncer = dir.as_deref().and_then(|d| start_watcher(d, tx.clone()));
        // Armed first, then reloaded: a file deployed in between is not missed.
        if std::mem::take(&mut replaced) {
            gateway
                .reload(ReloadScope::Adapters, "adapters_dir replaced")
                .await;
        }
        loop {
            tokio::select! {
                changed = dir_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if *dir_rx.borrow() != dir {
                        break;
                    }
                }
                Some(change) = events.recv() => {
                    // Coalesce events that queued up during the previous reload.
                    replaced = change == Change::Dir;
                    while let Ok(change) = events.try_recv() {
                        replaced |= change == Change::Dir;
                    }
                    if replaced {
                        break;
                    }
                    gateway.reload(ReloadScope::Adapters, "adapters_dir changed").await;
                }
            }
        }
    }
}

type Watcher = notify_debouncer_full::Debouncer<
    notify_debouncer_full::notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

fn start_watcher(dir: &Path, tx: mpsc::UnboundedSender<Change>) -> Option<Watcher> {
    // Absolute, so that event paths (absolute) compare with it; symlinks are kept (a
    // symlink switched to another release directory is a replacement of this path).
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    let parent = dir.parent().map(Path::to_owned);
    let watched = dir.clone();
    let handler = move |result: DebounceEventResult| match result {
        Ok(events) => {
            let relevant = events
                .iter()
                .filter(|e| !matches!(e.kind, EventKind::Access(_)));
            let mut change = None;
            for event in relevant {
                for path in &event.paths {
                    if *path == watched {
                        change = Some(Change::Dir);
                    } else if path.parent() == Some(watched.as_path()) && is_adapter_file(path) {
                        change = change.or(Some(Change::Files));
                    }
                }
            }
            if let Some(change) = change {
                let _ = tx.send(change);
            }
        }
        Err(errors) => {
            for e in errors {
                tracing::warn!(error = %e, "adapters_dir watch error");
            }
        }
    };
    let mut debouncer = match new_debouncer(DEBOUNCE, None, handler) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch adapters_dir; reload with SIGHUP instead");
            return None;
        }
    };
    if let Some(parent) = &parent
        && let Err(e) = debouncer.watch(parent, RecursiveMode::NonRecursive)
    {
        tracing::warn!(dir = %parent.display(), error = %e, "cannot watch adapters_dir's parent: replacing the directory will need a SIGHUP");
    }
    match debouncer.watch(&dir, RecursiveMode::NonRecursive) {
        Ok(()) => tracing::info!(dir = %dir.display(), "watching adapters_dir"),
        // A missing directory is the common case (no drop-ins yet), so not a warning.
        Err(e) => {
            tracing::info!(dir = %dir.display(), error = %e, "adapters_dir does not exist (yet): its files are loaded once it is created")
        }
    }
    Some(debouncer)
}

/// `<name>.wasm`, not a dotfile: deploy tools write temporaries as dotfiles or other
/// extensions and rename them into place, which then shows up as an event on the final name.
fn is_adapter_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".wasm") && !name.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_wasm_files_count() {
        assert!(is_adapter_file(Path::new("/a/ollama.wasm")));
        assert!(!is_adapter_file(Path::new("/a/.ollama.wasm")));
        assert!(!is_adapter_file(Path::new("/a/ollama.wasm.part")));
        assert!(!is_adapter_file(Path::new("/a/notes.txt")));
    }
}
