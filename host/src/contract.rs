//! The contract's types, and the contract versions chatd serves.
//!
//! The types are generated from the newest version's WIT. Every served version whose types
//! are structurally identical (0.1.0 is 0.2.0 without the `models` interface) is called with
//! them directly: the component model compares types by structure, and the loader checks
//! each export of each adapter against them once (`adapter::Exports::typecheck`). A future
//! version that changes a type gets its own generated module plus conversions here.

/// `lakehouse:provider@0.2.0`: 0.1.0 plus upstream model discovery.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/0.2.0",
        world: "plugin",
    });
}

pub use v0_2::exports::lakehouse::provider::models::ModelInfo;
pub use v0_2::lakehouse::provider::types::{
    AdapterError, AdapterInfo, AuthScheme, ChatRequest, ChatResponse, FinishReason, HttpRequest,
    HttpResponse, Message, RateLimit, StreamChunk, StreamEvent, StreamFraming, UpstreamFailure,
};

/// A contract version chatd can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ContractVersion {
    V0_1,
    V0_2,
}

impl ContractVersion {
    /// Every version this chatd serves, oldest first.
    pub const SUPPORTED: [ContractVersion; 2] = [ContractVersion::V0_1, ContractVersion::V0_2];

    /// The semver string of the WIT package.
    pub fn as_str(self) -> &'static str {
        match self {
            ContractVersion::V0_1 => "0.1.0",
            ContractVersion::V0_2 => "0.2.0",
        }
    }

    /// Parses the version part of an export name such as `lakehouse:provider/adapter@0.2.0`.
    pub fn from_version(v: &str) -> Option<ContractVersion> {
        Self::SUPPORTED.into_iter().find(|c| c.as_str() == v)
    }

    /// Whether adapters of this version can list upstream models.
    pub fn has_models(self) -> bool {
        self >= ContractVersion::V0_2
    }
}

impl std::fmt::Display for ContractVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The WIT package every adapter exports from (its world is `plugin`).
pub const PACKAGE: &str = "lakehouse:provider";
