//! One loaded adapter ([`Adapter`]) and one per-request instance of it ([`AdapterInstance`]).

use std::path::PathBuf;
use std::time::SystemTime;

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::Store;
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, Instance, InstancePre, Lift, Lower,
    TypedFunc, types::ComponentItem,
};

use super::bindings::{
    AdapterError, AdapterInfo, AuthScheme, ChatRequest, ChatResponse, ContractVersion, HttpRequest,
    HttpResponse, ModelInfo, PACKAGE, StreamChunk, StreamEvent,
};
use super::sandbox::{Sandbox, arm, within_budget};
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

/// Where an adapter's exported functions are, resolved once at load.
///
/// Per request only the raw [`InstancePre`] is instantiated and a function is looked up by
/// this index when it is called; the typed wrappers `bindgen!` generates would instead look
/// up *and typecheck* every export on every instantiation (~10k instructions a request, 3% of
/// chatd's per-request CPU, measured with callgrind). The types are checked once, at load,
/// by [`Exports::typecheck`]: a function's type is a property of the component, identical in
/// every instance of it.
#[derive(Clone, Copy)]
struct Exports {
    describe: ComponentExportIndex,
    build_request: ComponentExportIndex,
    parse_response: ComponentExportIndex,
    parse_stream_event: ComponentExportIndex,
    /// `models` interface (contract 0.2.0 and later).
    models: Option<ModelsExports>,
}

#[derive(Clone, Copy)]
struct ModelsExports {
    build_models_request: ComponentExportIndex,
    parse_models_response: ComponentExportIndex,
}

// The typed signature of each export, shared by every contract version (0.1.0 reuses 0.2.0's
// types, see `bindings`).
type DescribeParams = ();
type DescribeResults = (AdapterInfo,);
type BuildRequestParams<'a> = (&'a ChatRequest,);
type BuildRequestResults = (Result<HttpRequest, AdapterError>,);
type ParseResponseParams<'a> = (&'a HttpResponse,);
type ParseResponseResults = (Result<ChatResponse, AdapterError>,);
type ParseStreamEventParams<'a> = (&'a StreamEvent,);
type ParseStreamEventResults = (Result<Option<StreamChunk>, AdapterError>,);
type BuildModelsRequestParams = ();
type BuildModelsRequestResults = (Option<HttpRequest>,);
type ParseModelsResponseParams<'a> = (&'a HttpResponse,);
type ParseModelsResponseResults = (Result<Vec<ModelInfo>, AdapterError>,);

/// A one-element result tuple (what every export returns), unwrapped.
trait Single {
    type Output;
    fn into_single(self) -> Self::Output;
}

impl<T> Single for (T,) {
    type Output = T;
    fn into_single(self) -> T {
        self.0
    }
}

impl Exports {
    /// Finds the contract's exports in `component`.
    fn resolve(component: &Component, contract: ContractVersion) -> Result<Exports, String> {
        let version = contract.as_str();
        let interface = |name: &str| {
            let full = format!("{PACKAGE}/{name}@{version}");
            component
                .get_export_index(None, &full)
                .ok_or_else(|| format!("no exported instance named `{full}`"))
        };
        let func = |instance: &ComponentExportIndex, name: &str| {
            component
                .get_export_index(Some(instance), name)
                .ok_or_else(|| format!("the exported instance has no function `{name}`"))
        };
        let adapter = interface("adapter")?;
        let describe = func(&adapter, "describe")?;
        let build_request = func(&adapter, "build-request")?;
        let parse_response = func(&adapter, "parse-response")?;
        let parse_stream_event = func(&adapter, "parse-stream-event")?;
        let models = if contract.has_models() {
            let models = interface("models")?;
            Some(ModelsExports {
                build_models_request: func(&models, "build-models-request")?,
                parse_models_response: func(&models, "parse-models-response")?,
            })
        } else {
            None
        };
        Ok(Exports {
            describe,
            build_request,
            parse_response,
            parse_stream_event,
            models,
        })
    }

    /// Checks every export against the Rust types the calls use, naming the first that
    /// differs. Must succeed once (at load) before [`AdapterInstance::typed`] may skip the
    /// check.
    fn typecheck(&self, instance: &Instance, store: &mut Store<Sandbox>) -> Result<(), String> {
        fn check<P, R>(
            instance: &Instance,
            store: &mut Store<Sandbox>,
            index: &ComponentExportIndex,
            name: &str,
        ) -> Result<(), String>
        where
            P: ComponentNamedList + Lower,
            R: ComponentNamedList + Lift,
        {
            instance
                .get_typed_func::<P, R>(&mut *store, index)
                .map(drop)
                .map_err(|e| format!("function `{name}` has the wrong type: {}", error_chain(&e)))
        }
        check::<DescribeParams, DescribeResults>(instance, store, &self.describe, "describe")?;
        check::<BuildRequestParams, BuildRequestResults>(
            instance,
            store,
            &self.build_request,
            "build-request",
        )?;
        check::<ParseResponseParams, ParseResponseResults>(
            instance,
            store,
            &self.parse_response,
            "parse-response",
        )?;
        check::<ParseStreamEventParams, ParseStreamEventResults>(
            instance,
            store,
            &self.parse_stream_event,
            "parse-stream-event",
        )?;
        if let Some(m) = &self.models {
            check::<BuildModelsRequestParams, BuildModelsRequestResults>(
                instance,
                store,
                &m.build_models_request,
                "build-models-request",
            )?;
            check::<ParseModelsResponseParams, ParseModelsResponseResults>(
                instance,
                store,
                &m.parse_models_response,
                "parse-models-response",
            )?;
        }
        Ok(())
    }
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
    instance_pre: InstancePre<Sandbox>,
    exports: Exports,
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
        let exports_error = |message| LoadError::Exports {
            version: contract,
            message,
        };
        let exports = Exports::resolve(&component, contract).map_err(exports_error)?;
        let mut adapter = Adapter {
            name: name.to_owned(),
            info: placeholder_info(),
            contract,
            source,
            sha256,
            loaded_at: SystemTime::now(),
            instance_pre,
            exports,
            runtime: runtime.clone(),
        };
        let mut instance = adapter.instance().await.map_err(|e| match e {
            CallError::Trap(message) => LoadError::Instantiate(message),
            other => LoadError::Describe(other.to_string()),
        })?;
        // Calls skip the type check from now on, so it must pass before the adapter is used.
        let (store, instance_ref) = (&mut instance.store, &instance.instance);
        adapter
            .exports
            .typecheck(instance_ref, store)
            .map_err(exports_error)?;
        adapter.info = instance
            .describe()
            .await
            .map_err(|e| LoadError::Describe(e.to_string()))?;
        check_info(&adapter.info).map_err(LoadError::Description)?;
        Ok(adapter)
    }

    /// A fresh, isolated instance, used for the calls of one request at most.
    pub async fn instance(&self) -> Result<AdapterInstance, CallError> {
        let permit = self.runtime.acquire_slot().await?;
        let mut store = self.runtime.new_store();
        // Instantiation runs guest code too (start functions): it gets the same budget.
        let run = arm(&mut store);
        let instantiate = self.instance_pre.instantiate_async(&mut store);
        let instance = match within_budget(run, instantiate).await {
            Some(Ok(instance)) => instance,
            Some(Err(e)) => return Err(CallError::from_trap(&e, store.data())),
            None => return Err(CallError::Timeout),
        };
        Ok(AdapterInstance {
            store,
            instance,
            exports: self.exports,
            permit,
            slots: self.runtime.config().max_instances as usize,
        })
    }
}

/// One adapter instance: used for one request's calls, then dropped. Its memory is never
/// shared with another request.
pub struct AdapterInstance {
    store: Store<Sandbox>,
    instance: Instance,
    exports: Exports,
    /// This instance's slot, given back when it is dropped.
    permit: OwnedSemaphorePermit,
    /// Slots in all.
    slots: usize,
}

impl AdapterInstance {
    /// Whether this instance may be kept idle for a while (for a request's next call): only
    /// while at least half of all instance slots are free, so an idle instance never makes
    /// another call wait for a slot.
    pub fn may_idle(&self) -> bool {
        self.permit.semaphore().available_permits() * 2 >= self.slots
    }

    /// Gives the instance back once its request is done with it: it is dropped (memory reset,
    /// slot freed) after the response is written, off the request's path (see `retire.rs`).
    /// Dropping an instance instead does that work in place.
    pub fn release(self) {
        super::retire::retire(self);
    }

    /// The adapter's self-description.
    pub async fn describe(&mut self) -> Result<AdapterInfo, CallError> {
        let func = self.typed::<DescribeParams, DescribeResults>(self.exports.describe);
        self.call(func, ()).await
    }

    /// Builds the upstream request.
    pub async fn build_request(
        &mut self,
        request: &ChatRequest,
    ) -> Result<Result<HttpRequest, AdapterError>, CallError> {
        let func =
            self.typed::<BuildRequestParams, BuildRequestResults>(self.exports.build_request);
        self.call(func, (request,)).await
    }

    /// Parses a complete upstream response.
    pub async fn parse_response(
        &mut self,
        response: &HttpResponse,
    ) -> Result<Result<ChatResponse, AdapterError>, CallError> {
        let func =
            self.typed::<ParseResponseParams, ParseResponseResults>(self.exports.parse_response);
        self.call(func, (response,)).await
    }

    /// Parses one framed stream event.
    pub async fn parse_stream_event(
        &mut self,
        event: &StreamEvent,
    ) -> Result<Result<Option<StreamChunk>, AdapterError>, CallError> {
        let func = self.typed::<ParseStreamEventParams, ParseStreamEventResults>(
            self.exports.parse_stream_event,
        );
        self.call(func, (event,)).await
    }

    /// Whether this instance's contract has the `models` interface.
    pub fn has_models(&self) -> bool {
        self.exports.models.is_some()
    }

    /// Builds the model-listing request; `None` when the adapter has none (0.1.0 adapters
    /// never do).
    pub async fn build_models_request(&mut self) -> Result<Option<HttpRequest>, CallError> {
        let Some(models) = self.exports.models else {
            return Ok(None);
        };
        let func = self.typed::<BuildModelsRequestParams, BuildModelsRequestResults>(
            models.build_models_request,
        );
        self.call(func, ()).await
    }

    /// Parses the model-listing response.
    pub async fn parse_models_response(
        &mut self,
        response: &HttpResponse,
    ) -> Result<Result<Vec<ModelInfo>, AdapterError>, CallError> {
        let Some(models) = self.exports.models else {
            return Ok(Ok(Vec::new()));
        };
        let func = self.typed::<ParseModelsResponseParams, ParseModelsResponseResults>(
            models.parse_models_response,
        );
        self.call(func, (response,)).await
    }

    /// The export at `index` as a typed function, without a typecheck.
    fn typed<P, R>(&mut self, index: ComponentExportIndex) -> Result<TypedFunc<P, R>, CallError>
    where
        P: ComponentNamedList + Lower,
        R: ComponentNamedList + Lift,
    {
        let func = self
            .instance
            .get_func(&mut self.store, index)
            .ok_or_else(|| CallError::Trap("adapter export disappeared".into()))?;
        // SAFETY: `index` came from `Exports::resolve` on this instance's component, and
        // `Exports::typecheck` verified at load that the export at `index` has exactly the
        // type `P -> R` (every `typed` call site passes the same type aliases as `typecheck`);
        // an export's type is fixed by the component, so it holds for every instance.
        Ok(unsafe { TypedFunc::new_unchecked(func) })
    }

    /// Calls `func` under the time budget (see [`within_budget`]).
    async fn call<P, R>(
        &mut self,
        func: Result<TypedFunc<P, R>, CallError>,
        params: P,
    ) -> Result<R::Output, CallError>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentNamedList + Lift + Send + Sync + Single + 'static,
    {
        let func = func?;
        let run = arm(&mut self.store);
        let outcome = within_budget(run, func.call_async(&mut self.store, params)).await;
        self.settle(outcome).map(Single::into_single)
    }

    /// Maps a guarded call's outcome.
    fn settle<T>(&self, outcome: Option<wasmtime::Result<T>>) -> Result<T, CallError> {
        match outcome {
            Some(Ok(value)) => Ok(value),
            Some(Err(e)) => Err(CallError::from_trap(&e, self.store.data())),
            None => Err(CallError::Timeout),
        }
    }
}

/// What `describe` declares must be usable before the adapter may serve: a provider that
/// fails to register with it later would turn a hot deploy into an outage, where a rejected
/// file leaves the previous version serving.
fn check_info(info: &AdapterInfo) -> Result<(), String> {
    if info.name.trim().is_empty() || info.version.trim().is_empty() {
        return Err("empty name or version".into());
    }
    if let AuthScheme::Header(h) = &info.auth {
        let name = http::HeaderName::from_bytes(h.as_bytes())
            .map_err(|_| format!("auth header {h:?} is not a valid header name"))?;
        if crate::upstream::CONNECTION_HEADERS.contains(&name.as_str())
            || name == http::header::CONTENT_TYPE
        {
            return Err(format!(
                "auth header {h:?} is one chatd's HTTP client sets itself; the key cannot go there"
            ));
        }
    }
    let url = url::Url::parse(&info.default_base_url)
        .map_err(|e| format!("default base URL {:?}: {e}", info.default_base_url))?;
    crate::config::check_base_url(&url).map_err(|e| format!("default base URL {url}: {e}"))
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
        // Some causes span lines (wasmparser prints its expected and actual magic bytes as a
        // pretty list): keep all of it, as one line.
        let joined = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let first = joined.trim_end_matches(':');
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::bindings::StreamFraming;

    #[test]
    fn descriptions_that_could_not_serve_are_refused() {
        let good = AdapterInfo {
            name: "acme".into(),
            version: "0.1.0".into(),
            auth: AuthScheme::Header("x-api-key".into()),
            default_base_url: "https://api.acme.example/v1".into(),
            supports_streaming: true,
            stream_framing: StreamFraming::Sse,
        };
        assert_eq!(check_info(&good), Ok(()));
        let with = |f: fn(&mut AdapterInfo)| {
            let mut info = good.clone();
            f(&mut info);
            check_info(&info).unwrap_err()
        };
        assert!(with(|i| i.version = " ".into()).contains("empty name or version"));
        assert!(
            with(|i| i.auth = AuthScheme::Header("bad name".into()))
                .contains("not a valid header name")
        );
        for owned in [
            "Host",
            "transfer-encoding",
            "Content-Length",
            "Connection",
            "content-type",
        ] {
            let mut info = good.clone();
            info.auth = AuthScheme::Header(owned.into());
            assert!(
                check_info(&info).unwrap_err().contains("sets itself"),
                "{owned}"
            );
        }
        assert!(
            with(|i| i.default_base_url = "https://u:p@x.example".into())
                .contains("default base URL")
        );
        assert!(with(|i| i.default_base_url = "not a url".into()).contains("default base URL"));
    }
}
