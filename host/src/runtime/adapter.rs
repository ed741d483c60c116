//! One loaded adapter ([`Adapter`]) and one per-request instance of it ([`AdapterInstance`]).

use std::path::PathBuf;
use std::time::SystemTime;

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::Store;
use wasmtime::component::{Component, types::ComponentItem};

use super::bindings::{
    AdapterError, AdapterInfo, ChatRequest, ChatResponse, ContractVersion, HttpRequest,
    HttpResponse, ModelInfo, PACKAGE, StreamChunk, StreamEvent, v0_1, v0_2,
};
use super::sandbox::Sandbox;
use super::{CallError, LoadError, Runtime};

/// Where an adapter's bytes came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterSource {
    /// Compiled into the chatd binary.
    Builtin,
    /// A `.wasm` file in `adapters_dir`.
    File(PathBuf),
}

impl std::fmt::Display for AdapterSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdapterSource::Builtin => f.write_str("built-in"),
            AdapterSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

enum Pre {
    V0_1(v0_1::PluginPre<Sandbox>),
    V0_2(v0_2::PluginPre<Sandbox>),
}

enum Bindings {
    V0_1(v0_1::Plugin),
    V0_2(v0_2::Plugin),
}

/// A validated, compiled and pre-linked adapter component.
pub struct Adapter {
    /// The name providers use to pick it (the built-in name or the file stem).
    pub name: String,
    /// Its self-description, read once at load.
    pub info: AdapterInfo,
    /// The contract version it was built against.
    pub contract: ContractVersion,
    /// Where it came from.
    pub source: AdapterSource,
    /// Hex SHA-256 of the component bytes.
    pub sha256: String,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    pre: Pre,
    runtime: Runtime,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("name", &self.name)
            .field("version", &self.info.version)
            .field("contract", &self.contract)
            .field("source", &self.source)
            .finish()
    }
}

impl Adapter {
    /// Compiles, links and validates a component: it must export a supported contract
    /// version and answer `describe` within its budget.
    pub async fn load(
        runtime: &Runtime,
        name: &str,
        bytes: &[u8],
        source: AdapterSource,
    ) -> Result<Adapter, LoadError> {
        let sha256 = super::library::sha256_hex(bytes);
        let component = runtime.compile(bytes)?;
        let contract = contract_version(runtime, &component)?;
        let instance_pre = runtime
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(error_chain(&e)))?;
        let pre = match contract {
            ContractVersion::V0_1 => v0_1::PluginPre::new(instance_pre).map(Pre::V0_1),
            ContractVersion::V0_2 => v0_2::PluginPre::new(instance_pre).map(Pre::V0_2),
        }
        .map_err(|e| LoadError::Exports {
            version: contract,
            message: error_chain(&e),
        })?;
        let mut adapter = Adapter {
            name: name.to_owned(),
            info: placeholder_info(),
            contract,
            source,
            sha256,
            loaded_at: SystemTime::now(),
            pre,
            runtime: runtime.clone(),
        };
        let mut instance = adapter.instance().await.map_err(|e| match e {
            // Type mismatches between the component and the contract surface here.
            CallError::Trap(message) => LoadError::Instantiate(message),
            other => LoadError::Describe(other.to_string()),
        })?;
        adapter.info = instance
            .describe()
            .await
            .map_err(|e| LoadError::Describe(e.to_string()))?;
        if adapter.info.name.trim().is_empty() || adapter.info.version.trim().is_empty() {
            return Err(LoadError::Describe(
                "describe() returned an empty name or version".into(),
            ));
        }
        Ok(adapter)
    }

    /// A fresh, isolated instance for one request (or one stream).
    pub async fn instance(&self) -> Result<AdapterInstance, CallError> {
        let permit = self.runtime.acquire_slot().await?;
        let mut store = self.runtime.new_store();
        let ticks = self.runtime.limits().call_ticks;
        let budget = self.runtime.call_budget();
        // Instantiation runs guest code too (start functions): it gets the same budget.
        store.data_mut().arm(ticks);
        store.set_epoch_deadline(1);
        let instantiate = async {
            match &self.pre {
                Pre::V0_1(pre) => pre.instantiate_async(&mut store).await.map(Bindings::V0_1),
                Pre::V0_2(pre) => pre.instantiate_async(&mut store).await.map(Bindings::V0_2),
            }
        };
        let bindings = match tokio::time::timeout(budget, instantiate).await {
            Ok(Ok(bindings)) => bindings,
            Ok(Err(e)) => return Err(CallError::from_trap(&e, store.data())),
            Err(_) => return Err(CallError::Timeout),
        };
        Ok(AdapterInstance {
            store,
            bindings,
            ticks,
            budget,
            _permit: permit,
        })
    }
}

/// One adapter instance: used for one request, then dropped. Its memory is never shared
/// with another request.
pub struct AdapterInstance {
    store: Store<Sandbox>,
    bindings: Bindings,
    ticks: u32,
    budget: std::time::Duration,
    _permit: OwnedSemaphorePermit,
}

/// Calls one export on whichever contract version the instance speaks.
macro_rules! call {
    ($self:ident, $iface:ident . $func:ident ( $($arg:expr),* )) => {{
        $self.arm();
        let (store, bindings) = (&mut $self.store, &$self.bindings);
        let fut = async move {
            match bindings {
                Bindings::V0_1(b) => b.$iface().$func(store, $($arg),*).await,
                Bindings::V0_2(b) => b.$iface().$func(store, $($arg),*).await,
            }
        };
        let outcome = tokio::time::timeout($self.budget, fut).await;
        $self.settle(outcome)
    }};
}

impl AdapterInstance {
    /// The adapter's self-description.
    pub async fn describe(&mut self) -> Result<AdapterInfo, CallError> {
        call!(self, lakehouse_provider_adapter.call_describe())
    }

    /// Builds the upstream request.
    pub async fn build_request(
        &mut self,
        request: &ChatRequest,
    ) -> Result<Result<HttpRequest, AdapterError>, CallError> {
        call!(self, lakehouse_provider_adapter.call_build_request(request))
    }

    /// Parses a complete upstream response.
    pub async fn parse_response(
        &mut self,
        response: &HttpResponse,
    ) -> Result<Result<ChatResponse, AdapterError>, CallError> {
        call!(
            self,
            lakehouse_provider_adapter.call_parse_response(response)
        )
    }

    /// Parses one framed stream event.
    pub async fn parse_stream_event(
        &mut self,
        event: &StreamEvent,
    ) -> Result<Result<Option<StreamChunk>, AdapterError>, CallError> {
        call!(
            self,
            lakehouse_provider_adapter.call_parse_stream_event(event)
        )
    }

    /// Whether this instance's contract has the `models` interface.
    pub fn has_models(&self) -> bool {
        matches!(self.bindings, Bindings::V0_2(_))
    }

    /// Builds the model-listing request; `None` when the adapter has none (0.1.0 adapters
    /// never do).
    pub async fn build_models_request(&mut self) -> Result<Option<HttpRequest>, CallError> {
        self.arm();
        let outcome = match &self.bindings {
            Bindings::V0_1(_) => return Ok(None),
            Bindings::V0_2(b) => {
                let fut = b
                    .lakehouse_provider_models()
                    .call_build_models_request(&mut self.store);
                tokio::time::timeout(self.budget, fut).await
            }
        };
        self.settle(outcome)
    }

    /// Parses the model-listing response.
    pub async fn parse_models_response(
        &mut self,
        response: &HttpResponse,
    ) -> Result<Result<Vec<ModelInfo>, AdapterError>, CallError> {
        self.arm();
        let outcome = match &self.bindings {
            Bindings::V0_1(_) => return Ok(Ok(Vec::new())),
            Bindings::V0_2(b) => {
                let fut = b
                    .lakehouse_provider_models()
                    .call_parse_models_response(&mut self.store, response);
                tokio::time::timeout(self.budget, fut).await
            }
        };
        self.settle(outcome)
    }

    fn arm(&mut self) {
        self.store.data_mut().arm(self.ticks);
        self.store.set_epoch_deadline(1);
    }

    /// Maps a guarded call's outcome: the epoch budget stops busy guests, the timeout also
    /// covers a guest parked in a host-side wait (e.g. polling a WASI timer).
    fn settle<T>(
        &self,
        outcome: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, CallError> {
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(CallError::from_trap(&e, self.store.data())),
            Err(_) => Err(CallError::Timeout),
        }
    }
}

/// Finds which supported contract version a component exports.
fn contract_version(
    runtime: &Runtime,
    component: &Component,
) -> Result<ContractVersion, LoadError> {
    let ty = component.component_type();
    let prefix = format!("{PACKAGE}/adapter@");
    let mut found = Vec::new();
    for (name, item) in ty.exports(runtime.engine()) {
        if let (Some(version), ComponentItem::ComponentInstance(_)) =
            (name.strip_prefix(&prefix), item.ty)
        {
            found.push(version.to_owned());
        }
    }
    let supported = || {
        ContractVersion::SUPPORTED
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Prefer the newest version when a component exports several.
    let mut best = None;
    for v in &found {
        if let Some(c) = ContractVersion::from_version(v) {
            best = best.max(Some(c));
        }
    }
    match (best, found.is_empty()) {
        (Some(c), _) => Ok(c),
        (None, true) => Err(LoadError::NotAnAdapter(format!(
            "it exports no `{PACKAGE}/adapter` interface (this chatd serves contract versions {})",
            supported()
        ))),
        (None, false) => Err(LoadError::UnsupportedContract {
            found: found.join(", "),
            supported: supported(),
        }),
    }
}

fn placeholder_info() -> AdapterInfo {
    AdapterInfo {
        name: String::new(),
        version: String::new(),
        auth: super::bindings::AuthScheme::None,
        default_base_url: String::new(),
        supports_streaming: false,
        stream_framing: super::bindings::StreamFraming::Ndjson,
    }
}

/// Renders an error and its causes on one line, without backtraces or byte dumps (the
/// full error goes to the debug log): "wasm trap: wasm `unreachable` instruction executed".
pub(crate) fn error_chain(e: &wasmtime::Error) -> String {
    tracing::debug!(error = ?e, "adapter error detail");
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let first = text
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .trim_end_matches(':');
        if first.is_empty()
            || first.starts_with("error while executing at wasm backtrace")
            || parts.iter().any(|p| p.contains(first))
        {
            continue;
        }
        parts.push(first.to_owned());
    }
    let line = parts.join(": ");
    match line.char_indices().nth(400) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line,
    }
}
