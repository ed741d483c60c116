//! The set of loaded adapters: built-ins compiled into chatd, plus `<name>.wasm` files from
//! `adapters_dir` that add to or override them.
//!
//! [`AdapterSet::load`] is both the initial load and the reload: given the previous set, it
//! reuses adapters whose bytes did not change, and when a file fails validation it keeps the
//! previous adapter of that name and records the error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::{Adapter, AdapterSource, LoadError, Runtime};

/// The adapters compiled into this binary: `(name, component bytes)`.
pub const BUILTIN: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/builtin_adapters.rs"));

/// A failed load of one adapter file.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    /// The file that failed.
    pub path: PathBuf,
    /// Why.
    pub error: LoadError,
    /// When the attempt was made.
    pub at: SystemTime,
    /// SHA-256 of the bytes that failed (absent when the file could not be read): the same
    /// bytes are not validated again on the next reload.
    pub sha256: Option<String>,
}

/// One adapter name: what serves it now and what last went wrong loading it.
#[derive(Debug, Clone)]
pub struct AdapterEntry {
    /// The adapter serving this name, if any version ever loaded.
    pub active: Option<Arc<Adapter>>,
    /// The most recent failed load of this name's file, cleared by a successful one.
    pub last_error: Option<LoadFailure>,
}

/// All adapter names chatd knows, built-in or from files.
#[derive(Debug, Clone, Default)]
pub struct AdapterSet {
    /// Adapter name → entry.
    pub entries: BTreeMap<String, AdapterEntry>,
    /// A problem with `adapters_dir` itself (unreadable), if any.
    pub dir_error: Option<String>,
}

impl AdapterSet {
    /// The active adapter of a name.
    pub fn get(&self, name: &str) -> Option<&Arc<Adapter>> {
        self.entries.get(name).and_then(|e| e.active.as_ref())
    }

    /// Loads the built-ins and `dir`'s `*.wasm` files, reusing unchanged adapters from
    /// `previous`.
    pub async fn load(runtime: &Runtime, dir: Option<&Path>, previous: &AdapterSet) -> AdapterSet {
        let mut set = AdapterSet::default();
        let files = match dir.map(scan_dir).transpose() {
            Ok(files) => files.unwrap_or_default(),
            Err(e) => {
                set.dir_error = Some(e);
                // An unreadable directory must not unload adapters that were serving: keep
                // every file-backed adapter of the previous set.
                previous
                    .entries
                    .iter()
                    .filter_map(|(name, e)| match e.active.as_ref().map(|a| &a.source) {
                        Some(AdapterSource::File(p)) => Some((name.clone(), p.clone())),
                        _ => None,
                    })
                    .collect()
            }
        };

        for (name, bytes) in BUILTIN {
            if files.contains_key(*name) {
                continue;
            }
            let entry = load_one(runtime, name, bytes, AdapterSource::Builtin, previous).await;
            set.entries.insert((*name).to_owned(), entry);
        }
        for (name, path) in files {
            let entry = match std::fs::read(&path) {
                Ok(bytes) => {
                    load_one(runtime, &name, &bytes, AdapterSource::File(path), previous).await
                }
                Err(e) => failed(
                    &name,
                    path.clone(),
                    LoadError::Read {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    },
                    None,
                    previous,
                ),
            };
            // A file that never loaded falls back to the built-in of the same name, if any.
            let entry = match (entry.active.is_none(), builtin_bytes(&name)) {
                (true, Some(bytes)) => {
                    let mut builtin =
                        load_one(runtime, &name, bytes, AdapterSource::Builtin, previous).await;
                    builtin.last_error = entry.last_error;
                    builtin
                }
                _ => entry,
            };
            set.entries.insert(name, entry);
        }
        set
    }
}

fn builtin_bytes(name: &str) -> Option<&'static [u8]> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

async fn load_one(
    runtime: &Runtime,
    name: &str,
    bytes: &[u8],
    source: AdapterSource,
    previous: &AdapterSet,
) -> AdapterEntry {
    let sha256 = sha256_hex(bytes);
    let old = previous.get(name);
    if let Some(old) = old
        && old.source == source
        && old.sha256 == sha256
    {
        return AdapterEntry {
            active: Some(old.clone()),
            last_error: None,
        };
    }
    // The very file that was rejected last time: rejected again, without compiling it (or
    // logging it) once more on every reload.
    if let Some(entry) = previous.entries.get(name)
        && let Some(failure) = &entry.last_error
        && failure.sha256.as_deref() == Some(sha256.as_str())
        && matches!(&source, AdapterSource::File(p) if *p == failure.path)
    {
        return entry.clone();
    }
    let loaded = {
        let runtime = runtime.clone();
        let name = name.to_owned();
        let bytes = bytes.to_vec();
        let source = source.clone();
        // Compiling takes tens of milliseconds of CPU: keep it off the request threads.
        tokio::task::spawn_blocking(move || {
            tokio::runtime::Handle::current()
                .block_on(async move { Adapter::load(&runtime, &name, &bytes, source).await })
        })
        .await
    };
    match loaded {
        Ok(Ok(adapter)) => AdapterEntry {
            active: Some(Arc::new(adapter)),
            last_error: None,
        },
        Ok(Err(error)) => {
            let path = match &source {
                AdapterSource::File(p) => p.clone(),
                AdapterSource::Builtin => PathBuf::from(format!("<built-in {name}>")),
            };
            failed(name, path, error, Some(sha256), previous)
        }
        Err(join) => failed(
            name,
            PathBuf::from(name),
            LoadError::Describe(format!("loader task failed: {join}")),
            None,
            previous,
        ),
    }
}

/// An entry for a failed load: the previous adapter (if any) keeps serving.
fn failed(
    name: &str,
    path: PathBuf,
    error: LoadError,
    sha256: Option<String>,
    previous: &AdapterSet,
) -> AdapterEntry {
    tracing::error!(adapter = name, path = %path.display(), %error, "adapter rejected");
    AdapterEntry {
        active: previous.get(name).cloned(),
        last_error: Some(LoadFailure {
            path,
            error,
            at: SystemTime::now(),
            sha256,
        }),
    }
}

/// `<name>.wasm` files in a directory. A missing directory is empty, not an error.
fn scan_dir(dir: &Path) -> Result<BTreeMap<String, PathBuf>, String> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("cannot read adapters_dir {}: {e}", dir.display())),
    };
    let mut files = BTreeMap::new();
    for entry in read.flatten() {
        let path = entry.path();
        let is_wasm = path.extension().is_some_and(|ext| ext == "wasm");
        // Dotfiles are editors' and deploy tools' temporaries, not adapters.
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if is_wasm && !stem.is_empty() && !stem.starts_with('.') && path.is_file() {
            files.insert(stem.to_owned(), path);
        }
    }
    Ok(files)
}

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
