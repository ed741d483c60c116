//! One loaded adapter ([`Adapter`]) and one per-request instance of it ([`AdapterInstance`]).

use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::SystemTime;

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::Store;
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, Instance, InstancePre, Lift, Lower,
    TypedFunc, types::ComponentItem,
};

use super::sandbox::{Sandbox, arm, within_budget};
use super::{CallError, LoadError, Runtime};
use crate::config::http_rules;
use crate::contract::{
    AdapterError, AdapterInfo, AuthScheme, Capabilities, ChatRequest, ChatResponse,
    ContractVersion, EmbeddingsRequest, EmbeddingsResponse, HttpRequest, HttpResponse, ModelPage,
    PACKAGE, StreamChunk, StreamEvent, v0_2,
};

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

/// The type of one export, as the calls use it.
trait Signature {
    type Params<'a>: ComponentNamedList + Lower + Send + Sync;
    type Results: ComponentNamedList + Lift + Send + Sync + Single + 'static;
}

/// Declares a marker type per export with its [`Signature`].
macro_rules! signatures {
    ($($name:ident: ($($param:ty),*) -> $result:ty;)*) => {$(
        struct $name;
        impl Signature for $name {
            type Params<'a> = ($(&'a $param,)*);
            type Results = ($result,);
        }
    )*};
}

// Contract 0.3.0.
signatures! {
    Describe: () -> AdapterInfo;
    Configure: (str) -> Result<(), String>;
    BuildRequest: (ChatRequest) -> Result<HttpRequest, AdapterError>;
    ParseResponse: (HttpResponse) -> Result<ChatResponse, AdapterError>;
    ParseStreamEvent: (StreamEvent) -> Result<Option<StreamChunk>, AdapterError>;
    BuildModelsRequest: (Option<String>) -> Option<HttpRequest>;
    ParseModelsResponse: (HttpResponse) -> Result<ModelPage, AdapterError>;
    BuildEmbeddingsRequest: (EmbeddingsRequest) -> Result<HttpRequest, AdapterError>;
    ParseEmbeddingsResponse: (HttpResponse) -> Result<EmbeddingsResponse, AdapterError>;
}

// Contracts 0.2.0 and 0.1.0: their own types where 0.3.0 changed them, 0.3.0's where not
// (`http-request`, `http-response`, `stream-event` are the same records).
signatures! {
    DescribeV0_2: () -> v0_2::AdapterInfo;
    BuildRequestV0_2: (v0_2::ChatRequest) -> Result<HttpRequest, v0_2::AdapterError>;
    ParseResponseV0_2: (HttpResponse) -> Result<v0_2::ChatResponse, v0_2::AdapterError>;
    ParseStreamEventV0_2: (StreamEvent) -> Result<Option<v0_2::StreamChunk>, v0_2::AdapterError>;
    BuildModelsRequestV0_2: () -> Option<HttpRequest>;
    ParseModelsResponseV0_2: (HttpResponse) -> Result<Vec<v0_2::ModelInfo>, v0_2::AdapterError>;
}

/// An export whose type was checked to be `S` when its adapter loaded. Only
/// [`Checker::check`] makes one, so a call through it needs no check of its own.
///
/// Per request only the raw [`InstancePre`] is instantiated and a function is looked up by
/// index when it is called; the typed wrappers `bindgen!` generates would instead look up
/// *and typecheck* every export on every instantiation (see bench/README.md for its cost).
/// A function's type is a property of the component, identical in every instance of it.
struct Export<S> {
    index: ComponentExportIndex,
    signature: PhantomData<S>,
}

impl<S> Clone for Export<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Export<S> {}

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

/// Finds a component's contract functions by name (their types not yet checked).
struct Lookup<'a> {
    component: &'a Component,
    version: &'static str,
}

/// A function of the contract, found in the component.
#[derive(Clone, Copy)]
struct Found {
    index: ComponentExportIndex,
    name: &'static str,
}

impl Lookup<'_> {
    fn interface(&self, name: &str) -> Result<ComponentExportIndex, String> {
        let full = format!("{PACKAGE}/{name}@{}", self.version);
        self.component
            .get_export_index(None, &full)
            .ok_or_else(|| format!("no exported instance named `{full}`"))
    }

    fn func(&self, interface: &ComponentExportIndex, name: &'static str) -> Result<Found, String> {
        let index = self
            .component
            .get_export_index(Some(interface), name)
            .ok_or_else(|| format!("the exported instance has no function `{name}`"))?;
        Ok(Found { index, name })
    }
}

/// Checks found functions' types in one instance of their component.
struct Checker<'a> {
    instance: &'a Instance,
    store: &'a mut Store<Sandbox>,
}

impl Checker<'_> {
    /// The export `found`, if its type is `S`.
    fn check<S: Signature>(&mut self, found: Found) -> Result<Export<S>, String> {
        self.instance
            .get_typed_func::<S::Params<'static>, S::Results>(&mut *self.store, found.index)
            .map_err(|e| {
                format!(
                    "function `{}` has the wrong type: {}",
                    found.name,
                    error_chain(&e)
                )
            })?;
        Ok(Export {
            index: found.index,
            signature: PhantomData,
        })
    }
}

/// Where a component's contract functions are, per contract version; types not yet checked.
enum ExportIndices {
    V0_3([Found; 9]),
    V0_2 {
        adapter: [Found; 4],
        /// The `models` interface (0.2.0; 0.1.0 has none).
        models: Option<[Found; 2]>,
    },
}

/// An adapter's exports, each checked to have the type chatd calls it with.
#[derive(Clone, Copy)]
enum Exports {
    V0_3(ExportsV0_3),
    V0_2(ExportsV0_2),
}

#[derive(Clone, Copy)]
struct ExportsV0_3 {
    describe: Export<Describe>,
    configure: Export<Configure>,
    build_request: Export<BuildRequest>,
    parse_response: Export<ParseResponse>,
    parse_stream_event: Export<ParseStreamEvent>,
    build_models_request: Export<BuildModelsRequest>,
    parse_models_response: Export<ParseModelsResponse>,
    build_embeddings_request: Export<BuildEmbeddingsRequest>,
    parse_embeddings_response: Export<ParseEmbeddingsResponse>,
}

#[derive(Clone, Copy)]
struct ExportsV0_2 {
    describe: Export<DescribeV0_2>,
    build_request: Export<BuildRequestV0_2>,
    parse_response: Export<ParseResponseV0_2>,
    parse_stream_event: Export<ParseStreamEventV0_2>,
    models: Option<(
        Export<BuildModelsRequestV0_2>,
        Export<ParseModelsResponseV0_2>,
    )>,
}

impl ExportIndices {
    /// Finds the contract's exports in `component`.
    fn resolve(component: &Component, contract: ContractVersion) -> Result<ExportIndices, String> {
        let find = Lookup {
            component,
            version: contract.as_str(),
        };
        let adapter = find.interface("adapter")?;
        let chat = [
            find.func(&adapter, "describe")?,
            find.func(&adapter, "build-request")?,
            find.func(&adapter, "parse-response")?,
            find.func(&adapter, "parse-stream-event")?,
        ];
        let models = |find: &Lookup| -> Result<[Found; 2], String> {
            let models = find.interface("models")?;
            Ok([
                find.func(&models, "build-models-request")?,
                find.func(&models, "parse-models-response")?,
            ])
        };
        if contract < ContractVersion::V0_3 {
            return Ok(ExportIndices::V0_2 {
                adapter: chat,
                models: if contract.has_models() {
                    Some(models(&find)?)
                } else {
                    None
                },
            });
        }
        let configure = find.func(&adapter, "configure")?;
        let [build_models, parse_models] = models(&find)?;
        let embeddings = find.interface("embeddings")?;
        let [describe, build, parse, stream] = chat;
        Ok(ExportIndices::V0_3([
            describe,
            configure,
            build,
            parse,
            stream,
            build_models,
            parse_models,
            find.func(&embeddings, "build-embeddings-request")?,
            find.func(&embeddings, "parse-embeddings-response")?,
        ]))
    }

    /// Checks every export's type in `instance`, naming the first that differs.
    fn typecheck(
        &self,
        instance: &Instance,
        store: &mut Store<Sandbox>,
    ) -> Result<Exports, String> {
        let mut c = Checker { instance, store };
        Ok(match *self {
            ExportIndices::V0_3([d, cf, b, p, s, bm, pm, be, pe]) => Exports::V0_3(ExportsV0_3 {
                describe: c.check(d)?,
                configure: c.check(cf)?,
                build_request: c.check(b)?,
                parse_response: c.check(p)?,
                parse_stream_event: c.check(s)?,
                build_models_request: c.check(bm)?,
                parse_models_response: c.check(pm)?,
                build_embeddings_request: c.check(be)?,
                parse_embeddings_response: c.check(pe)?,
            }),
            ExportIndices::V0_2 {
                adapter: [d, b, p, s],
                models,
            } => Exports::V0_2(ExportsV0_2 {
                describe: c.check(d)?,
                build_request: c.check(b)?,
                parse_response: c.check(p)?,
                parse_stream_event: c.check(s)?,
                models: match models {
                    Some([bm, pm]) => Some((c.check(bm)?, c.check(pm)?)),
                    None => None,
                },
            }),
        })
    }
}

/// A validated, compiled and pre-linked adapter component.
pub struct Adapter {
    /// The name providers use to pick it (the built-in name or the file stem).
    pub name: String,
    /// Its self-description, read once at load (an adapter of contract 0.2.0 or older
    /// declares the capabilities that contract implies).
    pub info: AdapterInfo,
    /// `info.capabilities`, the names chatd knows.
    pub capabilities: Capabilities,
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
    /// version with the contract's types, and answer `describe` within its budget.
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
        let indices = ExportIndices::resolve(&component, contract).map_err(exports_error)?;
        let (mut store, instance, permit) =
            instantiate(runtime, &instance_pre)
                .await
                .map_err(|e| match e {
                    CallError::Trap(message) => LoadError::Instantiate(message),
                    other => LoadError::Describe(other.to_string()),
                })?;
        let exports = indices
            .typecheck(&instance, &mut store)
            .map_err(exports_error)?;
        let mut first = AdapterInstance::new(store, instance, exports, permit, runtime);
        let info = first
            .describe()
            .await
            .map_err(|e| LoadError::Describe(e.to_string()))?;
        check_info(&info).map_err(LoadError::Description)?;
        Ok(Adapter {
            name: name.to_owned(),
            capabilities: Capabilities::from_names(&info.capabilities),
            info,
            contract,
            source,
            sha256,
            loaded_at: SystemTime::now(),
            instance_pre,
            exports,
            runtime: runtime.clone(),
        })
    }

    /// A fresh, isolated instance, used for the calls of one request at most.
    pub async fn instance(&self) -> Result<AdapterInstance, CallError> {
        let (store, instance, permit) = instantiate(&self.runtime, &self.instance_pre).await?;
        Ok(AdapterInstance::new(
            store,
            instance,
            self.exports,
            permit,
            &self.runtime,
        ))
    }
}

/// A new instance in a fresh store and a slot of its own. Instantiation runs guest code too
/// (start functions): it gets a call's budget.
async fn instantiate(
    runtime: &Runtime,
    pre: &InstancePre<Sandbox>,
) -> Result<(Store<Sandbox>, Instance, OwnedSemaphorePermit), CallError> {
    let permit = runtime.acquire_slot().await?;
    let mut store = runtime.new_store();
    let run = arm(&mut store);
    match within_budget(run, pre.instantiate_async(&mut store)).await {
        Some(Ok(instance)) => Ok((store, instance, permit)),
        Some(Err(e)) => Err(CallError::from_trap(&e, store.data())),
        None => Err(CallError::Timeout),
    }
}

/// Memory beyond which an instance is not kept idle (see [`AdapterInstance::may_idle`]). The
/// built-in adapters start with about 1 MiB and stay there for requests of ordinary size; a
/// 4 MiB body grows them to 21-25 MiB.
const IDLE_MEMORY_MAX: usize = 4 << 20;

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
    /// For its heavy calls' budget (see [`Runtime::weigh`]).
    runtime: Runtime,
    /// Its share of the heavy-call budget, held until it is dropped: its memory, which the
    /// input filled, is given back then.
    heavy: Option<OwnedSemaphorePermit>,
}

impl AdapterInstance {
    fn new(
        store: Store<Sandbox>,
        instance: Instance,
        exports: Exports,
        permit: OwnedSemaphorePermit,
        runtime: &Runtime,
    ) -> AdapterInstance {
        AdapterInstance {
            store,
            instance,
            exports,
            permit,
            slots: runtime.config().max_instances as usize,
            runtime: runtime.clone(),
            heavy: None,
        }
    }

    /// Waits, for a call whose input is `bytes` long, until the heavy-call budget has room
    /// (at once for an ordinary call).
    async fn weigh(&mut self, bytes: usize) -> Result<(), CallError> {
        let held = self.heavy.as_ref().map_or(0, |p| p.num_permits());
        if let Some(more) = self.runtime.weigh(bytes, held).await? {
            match &mut self.heavy {
                Some(permit) => permit.merge(more),
                None => self.heavy = Some(more),
            }
        }
        Ok(())
    }

    /// Whether this instance may be kept idle for a while (for a request's next call): only
    /// while at least half of all instance slots are free, so an idle instance never makes
    /// another call wait for a slot, and while its memory is small: a big request's
    /// instance (megabytes, several copies of its body) is worth giving back at once more
    /// than the instantiation keeping it would save.
    pub fn may_idle(&self) -> bool {
        self.permit.semaphore().available_permits() * 2 >= self.slots
            && self.store.data().memory_size() <= IDLE_MEMORY_MAX
            // Nor while it holds a share of the heavy-call budget: kept for a stream, it
            // would hold that share for the stream's life.
            && self.heavy.is_none()
    }

    /// Gives the instance back once its request is done with it: it is dropped (memory reset,
    /// slot freed) after the response is written, off the request's path (see `retire.rs`).
    /// Dropping an instance instead does that work in place.
    pub fn release(self) {
        super::retire::retire(self);
    }

    /// The adapter's self-description.
    pub async fn describe(&mut self) -> Result<AdapterInfo, CallError> {
        match self.exports {
            Exports::V0_3(e) => self.call(e.describe, ()).await,
            Exports::V0_2(e) => Ok(self.call(e.describe, ()).await?.into()),
        }
    }

    /// Hands the instance its provider's settings (a JSON object's text); `Err` with the
    /// adapter's message when it refuses them. Adapters of contracts before 0.3.0 take none.
    pub async fn configure(&mut self, settings: &str) -> Result<Result<(), String>, CallError> {
        match self.exports {
            Exports::V0_3(e) => self.call(e.configure, (settings,)).await,
            Exports::V0_2(_) => Ok(Err(
                "the adapter takes no settings: it is built against contract 0.2.0 or older \
                 (settings came with 0.3.0)"
                    .into(),
            )),
        }
    }

    /// Builds the upstream request. For an adapter of an older contract the request is first
    /// converted; what that contract cannot carry is an `invalid-request` naming it.
    pub async fn build_request(
        &mut self,
        request: &ChatRequest,
    ) -> Result<Result<HttpRequest, AdapterError>, CallError> {
        self.weigh(crate::contract::request_size(request)).await?;
        match self.exports {
            Exports::V0_3(e) => self.call(e.build_request, (request,)).await,
            Exports::V0_2(e) => {
                let old = match v0_2::request(request) {
                    Ok(old) => old,
                    Err(refusal) => {
                        return Ok(Err(AdapterError::InvalidRequest(refusal.to_string())));
                    }
                };
                Ok(self
                    .call(e.build_request, (&old,))
                    .await?
                    .map_err(Into::into))
            }
        }
    }

    /// Parses a complete upstream response.
    pub async fn parse_response(
        &mut self,
        response: &HttpResponse,
    ) -> Result<Result<ChatResponse, AdapterError>, CallError> {
        self.weigh(response.body.len()).await?;
        match self.exports {
            Exports::V0_3(e) => self.call(e.parse_response, (response,)).await,
            Exports::V0_2(e) => Ok(self
                .call(e.parse_response, (response,))
                .await?
                .map(Into::into)
                .map_err(Into::into)),
        }
    }

    /// Parses one framed stream event.
    pub async fn parse_stream_event(
        &mut self,
        event: &StreamEvent,
    ) -> Result<Result<Option<StreamChunk>, AdapterError>, CallError> {
        match self.exports {
            Exports::V0_3(e) => self.call(e.parse_stream_event, (event,)).await,
            Exports::V0_2(e) => Ok(self
                .call(e.parse_stream_event, (event,))
                .await?
                .map(|chunk| chunk.map(Into::into))
                .map_err(Into::into)),
        }
    }

    /// Builds the request for one page of the model listing (`cursor`: `None` for the
    /// first); `None` when the adapter has no listing (0.1.0 adapters never do) or, for an
    /// adapter before 0.3.0, which lists one page only, when asked for a later page.
    pub async fn build_models_request(
        &mut self,
        cursor: Option<&str>,
    ) -> Result<Option<HttpRequest>, CallError> {
        match self.exports {
            Exports::V0_3(e) => {
                let cursor = cursor.map(str::to_owned);
                self.call(e.build_models_request, (&cursor,)).await
            }
            Exports::V0_2(ExportsV0_2 {
                models: Some((build, _)),
                ..
            }) if cursor.is_none() => self.call(build, ()).await,
            Exports::V0_2(_) => Ok(None),
        }
    }

    /// Parses one page of the model listing.
    pub async fn parse_models_response(
        &mut self,
        response: &HttpResponse,
    ) -> Result<Result<ModelPage, AdapterError>, CallError> {
        match self.exports {
            Exports::V0_3(e) => self.call(e.parse_models_response, (response,)).await,
            Exports::V0_2(ExportsV0_2 {
                models: Some((_, parse)),
                ..
            }) => Ok(self
                .call(parse, (response,))
                .await?
                .map(|models| ModelPage {
                    models: models.into_iter().map(Into::into).collect(),
                    next_cursor: None,
                })
                .map_err(Into::into)),
            Exports::V0_2(_) => Ok(Ok(ModelPage {
                models: Vec::new(),
                next_cursor: None,
            })),
        }
    }

    /// Builds the upstream embeddings request (adapters before 0.3.0 have none: refused).
    pub async fn build_embeddings_request(
        &mut self,
        request: &EmbeddingsRequest,
    ) -> Result<Result<HttpRequest, AdapterError>, CallError> {
        self.weigh(request.inputs.iter().map(String::len).sum())
            .await?;
        match self.exports {
            Exports::V0_3(e) => self.call(e.build_embeddings_request, (request,)).await,
            Exports::V0_2(_) => Ok(Err(no_embeddings())),
        }
    }

    /// Parses the upstream embeddings response.
    pub async fn parse_embeddings_response(
        &mut self,
        response: &HttpResponse,
    ) -> Result<Result<EmbeddingsResponse, AdapterError>, CallError> {
        self.weigh(response.body.len()).await?;
        match self.exports {
            Exports::V0_3(e) => self.call(e.parse_embeddings_response, (response,)).await,
            Exports::V0_2(_) => Ok(Err(no_embeddings())),
        }
    }

    /// Calls `export` under the time budget (see [`within_budget`]).
    async fn call<'a, S: Signature>(
        &mut self,
        export: Export<S>,
        params: S::Params<'a>,
    ) -> Result<<S::Results as Single>::Output, CallError> {
        let func = self
            .instance
            .get_func(&mut self.store, export.index)
            .ok_or_else(|| CallError::Trap("adapter export disappeared".into()))?;
        // SAFETY: an `Export<S>` exists only if `Checker::check` verified, on an instance of
        // this instance's component, that the function at `export.index` has type `S`; an
        // export's type is fixed by the component, so it holds for every instance of it.
        let func = unsafe { TypedFunc::<S::Params<'a>, S::Results>::new_unchecked(func) };
        let run = arm(&mut self.store);
        let outcome = within_budget(run, func.call_async(&mut self.store, params)).await;
        match outcome {
            Some(Ok(value)) => Ok(value.into_single()),
            Some(Err(e)) => Err(CallError::from_trap(&e, self.store.data())),
            None => Err(CallError::Timeout),
        }
    }
}

fn no_embeddings() -> AdapterError {
    AdapterError::InvalidRequest(
        "embeddings cannot be carried: the adapter is built against contract 0.2.0 or older \
         (embeddings came with 0.3.0)"
            .into(),
    )
}

/// What `describe` declares must be usable before the adapter may serve: a provider that
/// fails to register with it later would turn a hot deploy into an outage, where a rejected
/// file leaves the previous version serving.
fn check_info(info: &AdapterInfo) -> Result<(), String> {
    if info.name.trim().is_empty() || info.version.trim().is_empty() {
        return Err("empty name or version".into());
    }
    if let AuthScheme::Header(h) = &info.auth {
        http_rules::auth_header(h)?;
    }
    let url = url::Url::parse(&info.default_base_url)
        .map_err(|e| format!("default base URL {:?}: {e}", info.default_base_url))?;
    http_rules::check_base_url(&url).map_err(|e| format!("default base URL {url}: {e}"))
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
    use crate::contract::StreamFraming;

    #[test]
    fn descriptions_that_could_not_serve_are_refused() {
        let good = AdapterInfo {
            name: "acme".into(),
            version: "0.1.0".into(),
            auth: AuthScheme::Header("x-api-key".into()),
            default_base_url: "https://api.acme.example/v1".into(),
            supports_streaming: true,
            stream_framing: StreamFraming::Sse,
            capabilities: vec![],
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
