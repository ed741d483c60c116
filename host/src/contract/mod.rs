//! The contract's types, the contract versions chatd serves, and what a request needs of an
//! adapter ([`Capabilities`]).
//!
//! The host speaks the newest version: its requests and responses are 0.3.0's generated
//! types. Adapters built against 0.2.0 (and 0.1.0, which is 0.2.0 without the `models`
//! interface and has identical types) are called with 0.2.0's types, converted in
//! [`v0_2`]: a request is turned into what 0.2.0 can carry (or refused, naming what it
//! cannot), and their answers into 0.3.0's. The types both versions share unchanged
//! (`http-request`, `http-response`, `stream-event`) are 0.3.0's for every version: the
//! component model compares types by structure, and the loader checks each export of each
//! adapter against the types chatd calls it with, once (`runtime::adapter`).

mod capabilities;
pub mod v0_2;

pub use capabilities::{Capabilities, Capability};

/// `lakehouse:provider@0.3.0`: content parts, response formats, sampling options,
/// passthrough, settings, capabilities, error codes, paged model listing, embeddings.
pub mod v0_3 {
    wasmtime::component::bindgen!({
        path: "../wit/0.3.0",
        world: "plugin",
    });
}

pub use v0_3::exports::lakehouse::provider::embeddings::{EmbeddingsRequest, EmbeddingsResponse};
pub use v0_3::exports::lakehouse::provider::models::{ModelInfo, ModelPage};
pub use v0_3::lakehouse::provider::types::{
    AdapterError, AdapterInfo, AuthScheme, ChatRequest, ChatResponse, ContentPart, FinishReason,
    HttpRequest, HttpResponse, Image, ImageSource, InlineImage, JsonSchema, Message, RateLimit,
    ResponseFormat, StreamChunk, StreamEvent, StreamFraming, UpstreamFailure, Usage,
};

/// A contract version chatd can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ContractVersion {
    V0_1,
    V0_2,
    V0_3,
}

impl ContractVersion {
    /// Every version this chatd serves, oldest first.
    pub const SUPPORTED: [ContractVersion; 3] = [
        ContractVersion::V0_1,
        ContractVersion::V0_2,
        ContractVersion::V0_3,
    ];

    /// The semver string of the WIT package.
    pub fn as_str(self) -> &'static str {
        match self {
            ContractVersion::V0_1 => "0.1.0",
            ContractVersion::V0_2 => "0.2.0",
            ContractVersion::V0_3 => "0.3.0",
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

impl Usage {
    /// No counts: the upstream reported none.
    pub const NONE: Usage = Usage {
        input_tokens: None,
        output_tokens: None,
        reasoning_tokens: None,
        cached_input_tokens: None,
    };
}

/// About how many bytes `request` takes in an adapter's memory: its text, images and JSON
/// fields (small fixed-size fields are not counted).
pub fn request_size(request: &ChatRequest) -> usize {
    let text = |t: &Option<String>| t.as_ref().map_or(0, String::len);
    let messages: usize = request
        .messages
        .iter()
        .map(|m| {
            let content: usize = m
                .content
                .iter()
                .map(|part| match part {
                    ContentPart::Text(t) => t.len(),
                    ContentPart::Image(image) => match &image.source {
                        ImageSource::Inline(inline) => inline.base64.len(),
                        ImageSource::Url(url) => url.len(),
                    },
                    ContentPart::Other((kind, json)) => kind.len() + json.len(),
                })
                .sum();
            content + text(&m.tool_calls) + text(&m.reasoning)
        })
        .sum();
    let schema = match &request.response_format {
        ResponseFormat::JsonSchema(s) => s.schema.len(),
        _ => 0,
    };
    messages + text(&request.tools) + text(&request.extra) + schema
}
