//! Shared code of chatd's provider adapters (`plugins/*`), and everything an adapter crate
//! needs to become a component of contract 0.3.0 (`lakehouse:provider@0.3.0`).
//!
//! The kit generates the whole world's bindings once ([`bindings`]), so an adapter crate —
//! in this repository or outside it — has no `wit/` directory, no `wit-bindgen` dependency
//! and no glue of its own: it implements [`Adapter`] and exports it with [`export_adapter!`]:
//!
//! ```ignore
//! #![no_std]
//! use chatd_adapter_kit::prelude::*;
//! use chatd_adapter_kit::{Adapter, types::*};
//!
//! #[derive(Default)]
//! pub struct Acme;
//!
//! impl Adapter for Acme {
//!     fn describe() -> AdapterInfo { /* ... */ }
//!     fn build_request(&self, request: &ChatRequest) -> Result<HttpRequest, AdapterError> { /* ... */ }
//!     fn parse_response(&self, response: &HttpResponse) -> Result<ChatResponse, AdapterError> { /* ... */ }
//!     fn parse_stream_event(&self, event: &StreamEvent) -> Result<Option<StreamChunk>, AdapterError> { /* ... */ }
//! }
//!
//! chatd_adapter_kit::export_adapter!(Acme);
//! ```
//!
//! - [`Adapter`] has defaults for everything optional: no settings, no model listing, no
//!   embeddings. The exported `build-request` refuses a request that needs a capability the
//!   adapter does not declare ([`missing_capability`]) before the adapter sees it, so a
//!   feature is never silently dropped.
//! - [`Settings`] reads a provider's settings in `configure`, naming the key at fault.
//! - The crate root holds what every adapter needs: error constructors and the error an
//!   upstream response stands for ([`json_body`], [`status_error`], [`ErrorShape`],
//!   [`error_code`]), the finish-reason mapping, JSON, content-part, passthrough and
//!   stream-chunk helpers, and request builders.
//! - [`ollama`] holds what the Ollama adapters (`/api/chat`, `/api/generate`, `/api/embed`)
//!   share; [`openai`] OpenAI shapes that adapters for other APIs produce or read.
//! - `testing` (feature `testing`) builds requests, unpacks errors, and holds the
//!   conformance tests every adapter runs ([`conformance_tests!`]).
//! - The kit is `no_std` (with `alloc`), like the adapters: [`prelude`] has the `alloc` names
//!   they use, and the feature `runtime` supplies what a component without std needs on wasm
//!   (allocator, panic handler, `cabi_realloc`; see `guest.rs` for why the adapters go without).

#![no_std]

extern crate alloc;
#[cfg(any(test, feature = "testing"))]
extern crate std;

// The generated bindings name the kit by its crate name (`runtime_path` below), both here and
// in the adapter crates that expand the export macro; this makes that name resolve here too.
extern crate self as chatd_adapter_kit;

/// The generated bindings of the `plugin` world of `wit/0.3.0`: the contract's types, one
/// `Guest` trait per exported interface (implemented for every [`Export`]er below), and the
/// `export!` macro that [`export_adapter!`] invokes in the adapter crate. The macro is public
/// and writes the component-type section into the crate that invokes it, so the bindings
/// work across crates.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/0.3.0",
        world: "plugin",
        pub_export_macro: true,
        default_bindings_module: "chatd_adapter_kit::bindings",
        runtime_path: "chatd_adapter_kit::__private::wit_bindgen::rt",
    });
}

/// The contract's types: `lakehouse:provider/types@0.3.0`, plus the records of the `models`
/// and `embeddings` interfaces.
pub mod types {
    pub use crate::bindings::exports::lakehouse::provider::embeddings::{
        EmbeddingsRequest, EmbeddingsResponse,
    };
    pub use crate::bindings::exports::lakehouse::provider::models::{ModelInfo, ModelPage};
    pub use crate::bindings::lakehouse::provider::types::*;
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}

mod adapter;
mod capabilities;
mod content;
mod errors;
mod extra;
mod finish;
#[cfg(all(target_arch = "wasm32", target_os = "wasi", feature = "runtime"))]
mod guest;
mod http;
mod json;
pub mod ollama;
pub mod openai;
mod settings;
mod stream;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use adapter::{Adapter, Export, Instance, no_settings};
pub use capabilities::{CAPABILITIES, missing_capability, needs_capability};
pub use content::{joined_text, other_part, text_only};
pub use errors::{
    ErrorShape, MAX_ERROR_BYTES, error_code, error_message, invalid, json_body, malformed,
    retry_after, status_error, truncate, upstream, upstream_with_code,
};
pub use extra::merge_extra;
pub use finish::{answer_finish, finish_reason};
pub use http::{accept, get_json, percent_encode, post_json};
pub use json::{
    finite, json_object, non_empty, parse_json, parse_json_array, take_text, token_count,
};
pub use settings::Settings;
pub use stream::{carries_something, done_chunk, empty_chunk, no_usage};

/// The `alloc` names a `#![no_std]` adapter uses where std code would use the std prelude's.
pub mod prelude {
    pub use alloc::borrow::ToOwned;
    pub use alloc::boxed::Box;
    pub use alloc::format;
    pub use alloc::string::{String, ToString};
    pub use alloc::vec;
    pub use alloc::vec::Vec;
}

/// Exports an [`Adapter`] as the component: every function of the contract, each delegating
/// to the adapter (configured by `configure`, else its `Default`). Invoke it once, at the
/// crate root of a `#![no_std]` `cdylib`:
///
/// ```ignore
/// chatd_adapter_kit::export_adapter!(Ollama);
/// ```
///
/// It also links std into native builds (which exist for `cargo test`, and whose test
/// harness and panic handler need it). The export itself is wasm-only: export symbols are
/// named after WIT paths ("lakehouse:provider/adapter@0.3.0#..."), which only a wasm linker
/// accepts.
#[macro_export]
macro_rules! export_adapter {
    ($adapter:ty) => {
        #[cfg(not(target_arch = "wasm32"))]
        extern crate std;

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct Component;
            static INSTANCE: $crate::Instance<$adapter> = $crate::Instance::new();
            impl $crate::Export for Component {
                type Adapter = $adapter;
                fn instance() -> &'static $crate::Instance<$adapter> {
                    &INSTANCE
                }
            }
    $crate::bindings::export!(Component with_types_in $crate::bindings);
        };
    };
}
