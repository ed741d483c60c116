//! Host bindings for every contract version chatd serves.
//!
//! The newest version's types are chatd's own; older versions whose types are structurally
//! identical reuse them through `with`, so serving an old adapter needs no conversion code.
//! A future version that changes a type gets its own module plus `From` conversions here.

/// `lakehouse:provider@0.2.0`: 0.1.0 plus upstream model discovery.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/0.2.0",
        world: "plugin",
        exports: { default: async },
    });
}

/// `lakehouse:provider@0.1.0`: chat request/response and stream events.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "plugin",
        exports: { default: async },
        with: {
            "lakehouse:provider/types@0.1.0": super::v0_2::lakehouse::provider::types,
        },
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
