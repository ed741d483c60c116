//! Capabilities (`adapter-info.capabilities`): what an adapter declares it carries to its
//! upstream, and what a request needs.
//!
//! The host checks every request against its provider's adapter before `build-request`. The
//! rules are the adapter kit's (`needs_capability`), so an adapter and the host never
//! disagree about what a request needs: `think = some(false)` needs nothing (an upstream
//! without reasoning does not reason anyway), and `tool-choice` alone needs "tools".

use super::{ChatRequest, ContentPart, ImageSource, ResponseFormat};

/// One capability of contract 0.3.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    Tools,
    Images,
    ImageUrls,
    JsonSchema,
    JsonObject,
    Reasoning,
    Seed,
    TopK,
    PresencePenalty,
    FrequencyPenalty,
    RepeatPenalty,
    Passthrough,
    Embeddings,
    Settings,
}

impl Capability {
    /// Every capability, in the contract's order (the order a refusal names the first
    /// missing one in).
    pub const ALL: [Capability; 14] = [
        Capability::Tools,
        Capability::Images,
        Capability::ImageUrls,
        Capability::JsonSchema,
        Capability::JsonObject,
        Capability::Reasoning,
        Capability::Seed,
        Capability::TopK,
        Capability::PresencePenalty,
        Capability::FrequencyPenalty,
        Capability::RepeatPenalty,
        Capability::Passthrough,
        Capability::Embeddings,
        Capability::Settings,
    ];

    /// The capability's name in `adapter-info.capabilities`.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Tools => "tools",
            Capability::Images => "images",
            Capability::ImageUrls => "image-urls",
            Capability::JsonSchema => "json-schema",
            Capability::JsonObject => "json-object",
            Capability::Reasoning => "reasoning",
            Capability::Seed => "seed",
            Capability::TopK => "top-k",
            Capability::PresencePenalty => "presence-penalty",
            Capability::FrequencyPenalty => "frequency-penalty",
            Capability::RepeatPenalty => "repeat-penalty",
            Capability::Passthrough => "passthrough",
            Capability::Embeddings => "embeddings",
            Capability::Settings => "settings",
        }
    }

    /// What a client asked for that needs this capability, in the words of its request.
    pub fn feature(self) -> &'static str {
        match self {
            Capability::Tools => "tools (tools, tool_choice, tool calls and tool results)",
            Capability::Images => "images",
            Capability::ImageUrls => "images by URL",
            Capability::JsonSchema => "a JSON schema response format",
            Capability::JsonObject => "JSON mode (a json_object response format)",
            Capability::Reasoning => "reasoning (think / reasoning_effort)",
            Capability::Seed => "seed",
            Capability::TopK => "top_k",
            Capability::PresencePenalty => "presence_penalty",
            Capability::FrequencyPenalty => "frequency_penalty",
            Capability::RepeatPenalty => "repeat_penalty",
            Capability::Passthrough => "extra request fields (passthrough)",
            Capability::Embeddings => "embeddings",
            Capability::Settings => "settings",
        }
    }

    /// The capability of a name; `None` for names this contract does not define (the host
    /// ignores them).
    pub fn from_name(name: &str) -> Option<Capability> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// A set of capabilities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities(u16);

impl Capabilities {
    /// The empty set.
    pub const NONE: Capabilities = Capabilities(0);

    /// What adapters of contracts 0.1.0 and 0.2.0 carry, which declare nothing: their
    /// request has tools, a JSON mode and reasoning on/off, and text alone.
    pub const IMPLIED_V0_2: Capabilities = Capabilities(
        (1 << Capability::Tools as u16)
            | (1 << Capability::JsonObject as u16)
            | (1 << Capability::Reasoning as u16),
    );

    /// The capabilities of `names`; unknown names are ignored.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Capabilities {
        names
            .iter()
            .filter_map(|n| Capability::from_name(n.as_ref()))
            .fold(Capabilities::NONE, Capabilities::with)
    }

    /// This set and `c`.
    #[must_use]
    pub fn with(self, c: Capability) -> Capabilities {
        Capabilities(self.0 | c.bit())
    }

    /// This set without `c`.
    #[must_use]
    pub fn without(self, c: Capability) -> Capabilities {
        Capabilities(self.0 & !c.bit())
    }

    pub fn contains(self, c: Capability) -> bool {
        self.0 & c.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// What of this set `declared` lacks.
    #[must_use]
    pub fn missing_from(self, declared: Capabilities) -> Capabilities {
        Capabilities(self.0 & !declared.0)
    }

    /// The first capability of the set, in the contract's order.
    pub fn first(self) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| self.contains(*c))
    }

    /// The names of the set, in the contract's order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Capability::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
            .map(Capability::name)
    }

    /// What a chat request needs of its adapter.
    pub fn needed_by(request: &ChatRequest) -> Capabilities {
        let mut needed = Capabilities::NONE;
        let mut add = |yes: bool, c: Capability| {
            if yes {
                needed = needed.with(c);
            }
        };
        add(
            request.tools.is_some() || request.tool_choice.is_some(),
            Capability::Tools,
        );
        for message in &request.messages {
            add(
                message.tool_calls.is_some() || message.role == "tool",
                Capability::Tools,
            );
            for part in &message.content {
                if let ContentPart::Image(image) = part {
                    add(
                        true,
                        match image.source {
                            ImageSource::Inline(_) => Capability::Images,
                            ImageSource::Url(_) => Capability::ImageUrls,
                        },
                    );
                }
            }
        }
        add(
            matches!(request.response_format, ResponseFormat::JsonSchema(_)),
            Capability::JsonSchema,
        );
        add(
            matches!(request.response_format, ResponseFormat::JsonObject),
            Capability::JsonObject,
        );
        add(
            request.think == Some(true) || request.reasoning_effort.is_some(),
            Capability::Reasoning,
        );
        add(request.seed.is_some(), Capability::Seed);
        add(request.top_k.is_some(), Capability::TopK);
        add(
            request.presence_penalty.is_some(),
            Capability::PresencePenalty,
        );
        add(
            request.frequency_penalty.is_some(),
            Capability::FrequencyPenalty,
        );
        add(request.repeat_penalty.is_some(), Capability::RepeatPenalty);
        add(request.extra.is_some(), Capability::Passthrough);
        needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Image, InlineImage, JsonSchema, Message};

    fn request() -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages: vec![Message {
                role: "user".into(),
                content: vec![ContentPart::Text("hi".into())],
                tool_calls: None,
                tool_call_id: None,
                name: None,
                reasoning: None,
            }],
            max_tokens: Some(5),
            temperature: Some(0.5),
            top_p: None,
            top_k: None,
            seed: None,
            presence_penalty: None,
            frequency_penalty: None,
            repeat_penalty: None,
            stop: vec![],
            response_format: ResponseFormat::Text,
            think: None,
            reasoning_effort: None,
            stream: false,
            tools: None,
            tool_choice: None,
            extra: None,
        }
    }

    #[test]
    fn a_text_request_needs_nothing_and_think_off_needs_nothing_either() {
        let mut r = request();
        assert!(Capabilities::needed_by(&r).is_empty());
        r.think = Some(false);
        assert!(Capabilities::needed_by(&r).is_empty());
        r.think = Some(true);
        assert_eq!(
            Capabilities::needed_by(&r).first(),
            Some(Capability::Reasoning)
        );
    }

    #[test]
    fn each_feature_needs_its_capability_named_as_the_kit_names_it() {
        let mut r = request();
        r.tool_choice = Some("\"auto\"".into());
        r.seed = Some(1);
        r.top_k = Some(3);
        r.extra = Some("{}".into());
        r.response_format = ResponseFormat::JsonSchema(JsonSchema {
            name: "r".into(),
            schema: "{}".into(),
            strict: true,
        });
        r.messages[0].content.push(ContentPart::Image(Image {
            source: ImageSource::Url("https://x.example/a.png".into()),
            detail: None,
        }));
        r.messages[0].content.push(ContentPart::Image(Image {
            source: ImageSource::Inline(InlineImage {
                media_type: "image/png".into(),
                base64: "AAAA".into(),
            }),
            detail: None,
        }));
        let needed = Capabilities::needed_by(&r);
        assert_eq!(
            needed.names().collect::<Vec<_>>(),
            [
                "tools",
                "images",
                "image-urls",
                "json-schema",
                "seed",
                "top-k",
                "passthrough"
            ]
        );
        let declared = Capabilities::from_names(&["tools", "images", "json-schema", "bogus"]);
        let missing = needed.missing_from(declared);
        assert_eq!(missing.first(), Some(Capability::ImageUrls));
        assert_eq!(
            missing.names().collect::<Vec<_>>(),
            ["image-urls", "seed", "top-k", "passthrough"]
        );
    }

    #[test]
    fn tool_turns_need_tools_and_old_contracts_imply_three() {
        let mut r = request();
        r.messages[0].role = "tool".into();
        assert!(Capabilities::needed_by(&r).contains(Capability::Tools));
        assert_eq!(
            Capabilities::IMPLIED_V0_2.names().collect::<Vec<_>>(),
            ["tools", "json-object", "reasoning"]
        );
        for c in Capability::ALL {
            assert_eq!(Capability::from_name(c.name()), Some(c));
        }
    }
}
