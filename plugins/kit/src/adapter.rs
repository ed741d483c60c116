//! The [`Adapter`] trait an adapter crate implements, and the component exports the kit
//! derives from it.

use crate::prelude::*;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::bindings::exports::lakehouse::provider::{adapter, embeddings, models};
use crate::capabilities::missing_capability;
use crate::errors::invalid;
use crate::settings::Settings;
use crate::types::{
    AdapterError, AdapterInfo, ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse,
    HttpRequest, HttpResponse, ModelPage, StreamChunk, StreamEvent,
};

/// A provider adapter: a pure translator between chatd's types and one upstream's HTTP API.
///
/// A value of the type is one provider's configuration: `configure` makes it from the
/// provider's settings, and every other call of the instance is made on it (on
/// `Default::default()` when the provider has no settings). Adapters without settings are
/// unit structs. Only `describe` and the four chat functions are required.
pub trait Adapter: Default + Send + Sync + 'static {
    /// Self-description; cheap, and must not fail. `capabilities` lists what the adapter
    /// carries: the exported `build-request` refuses requests needing anything else.
    fn describe() -> AdapterInfo;

    /// The adapter configured with a provider's settings (a JSON object's text). The default
    /// takes no settings: `{}` and nothing else. Read settings with [`Settings`], whose errors
    /// name the key at fault.
    fn configure(settings: &str) -> Result<Self, String> {
        no_settings(settings)
    }

    /// Builds the upstream request for a chat request.
    fn build_request(&self, request: &ChatRequest) -> Result<HttpRequest, AdapterError>;

    /// Parses a complete upstream response, of any status.
    fn parse_response(&self, response: &HttpResponse) -> Result<ChatResponse, AdapterError>;

    /// Parses one framed event of a streamed 2xx response; `None` for events that carry
    /// nothing.
    fn parse_stream_event(&self, event: &StreamEvent) -> Result<Option<StreamChunk>, AdapterError>;

    /// The request for one page of the upstream's models (`cursor` is `None` for the first
    /// page); `None`, the default, when the upstream has no listing.
    fn build_models_request(&self, cursor: Option<&str>) -> Option<HttpRequest> {
        let _ = cursor;
        None
    }

    /// Parses one page of the model listing, of any status. Never called when
    /// `build_models_request` returns `None`.
    fn parse_models_response(&self, response: &HttpResponse) -> Result<ModelPage, AdapterError> {
        let _ = response;
        Ok(ModelPage {
            models: Vec::new(),
            next_cursor: None,
        })
    }

    /// Builds an embeddings request; the default, for adapters without the "embeddings"
    /// capability, refuses.
    fn build_embeddings_request(
        &self,
        request: &EmbeddingsRequest,
    ) -> Result<HttpRequest, AdapterError> {
        let _ = request;
        Err(no_embeddings())
    }

    /// Parses an embeddings response, of any status; the default refuses.
    fn parse_embeddings_response(
        &self,
        response: &HttpResponse,
    ) -> Result<EmbeddingsResponse, AdapterError> {
        let _ = response;
        Err(no_embeddings())
    }
}

fn no_embeddings() -> AdapterError {
    invalid("embeddings are not supported by this adapter")
}

/// The default `configure`: an adapter without settings accepts an empty object only.
pub fn no_settings<A: Default>(settings: &str) -> Result<A, String> {
    let settings = Settings::parse(settings)?;
    settings.finish()?;
    Ok(A::default())
}

/// The configured adapter of a component instance. An instance serves one provider and its
/// calls never overlap (wasm has no threads here), but a `static` must be `Sync`, so the
/// adapter is published through an atomic pointer.
#[doc(hidden)]
pub struct Instance<A> {
    configured: AtomicPtr<A>,
}

impl<A: Adapter> Instance<A> {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Instance {
            configured: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// Configures the instance; on an error the previous configuration stays.
    pub fn configure(&self, settings: &str) -> Result<(), String> {
        let adapter = Box::into_raw(Box::new(A::configure(settings)?));
        // A replaced adapter is leaked, never freed: a reference `with` handed out cannot
        // then dangle, whatever calls it made. The host configures an instance once.
        self.configured.swap(adapter, Ordering::AcqRel);
        Ok(())
    }

    /// Runs `f` on the configured adapter, or on the default one before any `configure`.
    pub fn with<R>(&self, f: impl FnOnce(&A) -> R) -> R {
        let configured = self.configured.load(Ordering::Acquire);
        // SAFETY: a non-null pointer came from `Box::into_raw` in `configure` and is never
        // freed, so it stays valid for the program's life; `A: Sync` makes sharing it sound.
        match unsafe { configured.as_ref() } {
            Some(adapter) => f(adapter),
            None => f(&A::default()),
        }
    }
}

/// What [`export_adapter!`](crate::export_adapter) implements for the exported type: which
/// adapter it is and where its instance's configuration lives.
#[doc(hidden)]
pub trait Export {
    type Adapter: Adapter;
    fn instance() -> &'static Instance<Self::Adapter>;
}

/// The exported `build-request`: refused when the request needs a capability the adapter
/// does not declare, else the adapter's.
pub(crate) fn build_request<A: Adapter>(
    adapter: &A,
    request: &ChatRequest,
) -> Result<HttpRequest, AdapterError> {
    if let Some(missing) = missing_capability(request, || A::describe().capabilities) {
        return Err(invalid(format!(
            "{missing} is not supported by the {} adapter",
            A::describe().name
        )));
    }
    adapter.build_request(request)
}

impl<E: Export> adapter::Guest for E {
    fn describe() -> AdapterInfo {
        E::Adapter::describe()
    }

    fn configure(settings: String) -> Result<(), String> {
        E::instance().configure(&settings)
    }

    fn build_request(request: ChatRequest) -> Result<HttpRequest, AdapterError> {
        E::instance().with(|adapter| build_request(adapter, &request))
    }

    fn parse_response(response: HttpResponse) -> Result<ChatResponse, AdapterError> {
        E::instance().with(|adapter| adapter.parse_response(&response))
    }

    fn parse_stream_event(event: StreamEvent) -> Result<Option<StreamChunk>, AdapterError> {
        E::instance().with(|adapter| adapter.parse_stream_event(&event))
    }
}

impl<E: Export> models::Guest for E {
    fn build_models_request(cursor: Option<String>) -> Option<HttpRequest> {
        E::instance().with(|adapter| adapter.build_models_request(cursor.as_deref()))
    }

    fn parse_models_response(response: HttpResponse) -> Result<ModelPage, AdapterError> {
        E::instance().with(|adapter| adapter.parse_models_response(&response))
    }
}

impl<E: Export> embeddings::Guest for E {
    fn build_embeddings_request(request: EmbeddingsRequest) -> Result<HttpRequest, AdapterError> {
        E::instance().with(|adapter| {
            let info = E::Adapter::describe();
            let declares = |name: &str| info.capabilities.iter().any(|have| have == name);
            if !declares("embeddings") {
                return Err(no_embeddings());
            }
            if request.extra.is_some() && !declares("passthrough") {
                return Err(invalid(format!(
                    "passthrough is not supported by the {} adapter",
                    info.name
                )));
            }
            adapter.build_embeddings_request(&request)
        })
    }

    fn parse_embeddings_response(
        response: HttpResponse,
    ) -> Result<EmbeddingsResponse, AdapterError> {
        E::instance().with(|adapter| adapter.parse_embeddings_response(&response))
    }
}
