//! Shared code of chatd's provider adapters (`plugins/*`).
//!
//! The kit owns the contract's types: it generates the `lakehouse:provider/types@0.2.0`
//! interface once, and every adapter reuses it from its own bindings with
//!
//! ```ignore
//! wit_bindgen::generate!({
//!     path: "../../wit/0.2.0",
//!     with: { "lakehouse:provider/types@0.2.0": chatd_adapter_kit::types },
//! });
//! chatd_adapter_kit::component!();
//! #[cfg(target_arch = "wasm32")]
//! export!(Component);
//! ```
//!
//! so the helpers here take and return the very types the adapters export.
//!
//! - The crate root holds what every adapter needs: error constructors and the error an
//!   upstream response stands for ([`json_body`], [`status_error`], [`ErrorShape`]), the
//!   finish-reason mapping, JSON and stream-chunk helpers, and request builders.
//! - [`ollama`] holds what the Ollama adapters (`/api/chat`, `/api/generate`) share.
//! - [`openai`] holds OpenAI Chat Completions shapes that adapters for other APIs produce.
//! - `testing` (feature `testing`, for the adapters' unit tests) builds requests and unpacks
//!   errors.
//! - The kit is `no_std` (with `alloc`), like the adapters: [`prelude`] has the `alloc` names
//!   they use, and the feature `runtime` supplies what a component without std needs on wasm
//!   (allocator, panic handler, `cabi_realloc`; see `guest.rs` for why the adapters go without).
//!
//! The public functions are `#[inline]`, from when the adapters were also `rlib`s, which cargo
//! builds without LTO: every helper would otherwise have stayed a call into this crate. The
//! adapters are `cdylib`-only now and built with LTO, so the attributes are no longer needed
//! for that, and harmless.

#![no_std]

extern crate alloc;
#[cfg(any(test, feature = "testing"))]
extern crate std;

mod bindings {
    // A world that only imports the types interface: the types get generated (none is used by
    // a function here, hence `generate_unused_types`), and no export glue is.
    wit_bindgen::generate!({
        path: "../../wit/0.2.0",
        inline: "package chatd:adapter-kit; world kit { import lakehouse:provider/types@0.2.0; }",
        generate_all,
        generate_unused_types: true,
    });
}

/// The contract's types (`lakehouse:provider/types@0.2.0`), shared with every adapter.
pub use bindings::lakehouse::provider::types;

mod errors;
mod finish;
#[cfg(all(target_arch = "wasm32", target_os = "wasi", feature = "runtime"))]
mod guest;
mod http;
mod json;
pub mod ollama;
pub mod openai;
mod stream;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use errors::{
    ErrorShape, MAX_ERROR_CHARS, error_message, invalid, json_body, malformed, retry_after,
    status_error, truncate, upstream,
};
pub use finish::{answer_finish, finish_reason};
pub use http::{accept, get_json, post_json};
pub use json::{
    finite, json_object, non_empty, parse_json, parse_json_array, take_text, token_count,
};
pub use stream::{carries_something, empty_chunk};

/// The `alloc` names a `#![no_std]` adapter uses where std code would use the std prelude's.
pub mod prelude {
    pub use alloc::borrow::ToOwned;
    pub use alloc::boxed::Box;
    pub use alloc::format;
    pub use alloc::string::{String, ToString};
    pub use alloc::vec;
    pub use alloc::vec::Vec;
}

/// Defines `struct Component` and implements the generated `adapter` and `models` export traits
/// for it, every call delegating to the adapter crate's plain functions of the same names:
///
/// ```ignore
/// pub fn describe() -> AdapterInfo;
/// pub fn build_request(request: &ChatRequest) -> Result<HttpRequest, AdapterError>;
/// pub fn parse_response(response: &HttpResponse) -> Result<ChatResponse, AdapterError>;
/// pub fn parse_stream_event(event: &StreamEvent) -> Result<Option<StreamChunk>, AdapterError>;
/// pub fn build_models_request() -> HttpRequest;
/// pub fn parse_models_response(response: &HttpResponse) -> Result<Vec<ModelInfo>, AdapterError>;
/// ```
///
/// Invoke it at the crate root, next to `wit_bindgen::generate!` (whose `exports` module it
/// names), and export the component with `export!(Component)`.
// `crate::` deliberately names the crate that invokes the macro: the adapter's functions.
#[allow(clippy::crate_in_macro_def)]
#[macro_export]
macro_rules! component {
    () => {
        /// The exported component; every call delegates to a plain function of this crate.
        struct Component;

        impl exports::lakehouse::provider::adapter::Guest for Component {
            fn describe() -> $crate::types::AdapterInfo {
                crate::describe()
            }

            fn build_request(
                request: $crate::types::ChatRequest,
            ) -> Result<$crate::types::HttpRequest, $crate::types::AdapterError> {
                crate::build_request(&request)
            }

            fn parse_response(
                response: $crate::types::HttpResponse,
            ) -> Result<$crate::types::ChatResponse, $crate::types::AdapterError> {
                crate::parse_response(&response)
            }

            fn parse_stream_event(
                event: $crate::types::StreamEvent,
            ) -> Result<Option<$crate::types::StreamChunk>, $crate::types::AdapterError> {
                crate::parse_stream_event(&event)
            }
        }

        impl exports::lakehouse::provider::models::Guest for Component {
            fn build_models_request() -> Option<$crate::types::HttpRequest> {
                Some(crate::build_models_request())
            }

            fn parse_models_response(
                response: $crate::types::HttpResponse,
            ) -> Result<
                Vec<exports::lakehouse::provider::models::ModelInfo>,
                $crate::types::AdapterError,
            > {
                crate::parse_models_response(&response)
            }
        }
    };
}
