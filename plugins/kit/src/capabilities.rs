//! Capability names (see `adapter-info.capabilities` in the WIT) and what in a chat request
//! needs each.

use crate::types::{ChatRequest, ContentPart, ImageSource, ResponseFormat};

/// Every capability name contract 0.3.0 defines.
pub const CAPABILITIES: &[&str] = &[
    "tools",
    "images",
    "image-urls",
    "json-schema",
    "json-object",
    "reasoning",
    "seed",
    "top-k",
    "presence-penalty",
    "frequency-penalty",
    "repeat-penalty",
    "passthrough",
    "embeddings",
    "settings",
];

/// Whether `request` needs the capability `name`. `think: Some(false)` needs nothing: an
/// upstream without reasoning does not reason anyway.
pub fn needs_capability(request: &ChatRequest, name: &str) -> bool {
    let any_image = |inline: bool| {
        request.messages.iter().any(|message| {
            message.content.iter().any(|part| match part {
                ContentPart::Image(image) => {
                    matches!(image.source, ImageSource::Inline(_)) == inline
                }
                _ => false,
            })
        })
    };
    match name {
        "tools" => {
            request.tools.is_some()
                || request.tool_choice.is_some()
                || request
                    .messages
                    .iter()
                    .any(|message| message.tool_calls.is_some() || message.role == "tool")
        }
        "images" => any_image(true),
        "image-urls" => any_image(false),
        "json-schema" => matches!(request.response_format, ResponseFormat::JsonSchema(_)),
        "json-object" => matches!(request.response_format, ResponseFormat::JsonObject),
        "reasoning" => request.think == Some(true) || request.reasoning_effort.is_some(),
        "seed" => request.seed.is_some(),
        "top-k" => request.top_k.is_some(),
        "presence-penalty" => request.presence_penalty.is_some(),
        "frequency-penalty" => request.frequency_penalty.is_some(),
        "repeat-penalty" => request.repeat_penalty.is_some(),
        "passthrough" => request.extra.is_some(),
        _ => false,
    }
}

/// The first capability `request` needs that `declared` (called only when the request needs
/// some capability, so plain requests cost nothing) does not list.
pub fn missing_capability<D>(
    request: &ChatRequest,
    declared: impl FnOnce() -> D,
) -> Option<&'static str>
where
    D: AsRef<[alloc::string::String]>,
{
    let mut needed = CAPABILITIES
        .iter()
        .copied()
        .filter(|name| needs_capability(request, name))
        .peekable();
    needed.peek()?;
    let declared = declared();
    let declared = declared.as_ref();
    needed.find(|name| !declared.iter().any(|have| have == name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;
    use crate::testing::{chat_request, image_part, message};
    use crate::types::{ImageSource, JsonSchema};

    fn declared(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn a_plain_request_needs_nothing_and_does_not_ask() {
        let request = chat_request("m");
        let mut asked = false;
        let missing = missing_capability(&request, || {
            asked = true;
            Vec::new()
        });
        assert_eq!(missing, None);
        assert!(!asked);
        // think off needs nothing either.
        let mut request = chat_request("m");
        request.think = Some(false);
        assert_eq!(missing_capability(&request, Vec::new), None);
    }

    #[test]
    fn each_feature_needs_its_capability() {
        let mut request = chat_request("m");
        request.seed = Some(1);
        request.top_k = Some(2);
        request.response_format = ResponseFormat::JsonSchema(JsonSchema {
            name: "r".into(),
            schema: "{}".into(),
            strict: false,
        });
        let mut user = message("user", "look");
        user.content
            .push(image_part(ImageSource::Url("https://x/y.png".into())));
        request.messages = vec![user];
        assert_eq!(
            missing_capability(&request, || declared(&["seed", "top-k", "json-schema"])),
            Some("image-urls")
        );
        assert_eq!(
            missing_capability(&request, || declared(&[
                "image-urls",
                "seed",
                "json-schema"
            ])),
            Some("top-k")
        );
        assert_eq!(
            missing_capability(&request, || declared(&[
                "image-urls",
                "seed",
                "top-k",
                "json-schema"
            ])),
            None
        );
    }

    #[test]
    fn tool_turns_need_tools() {
        let mut request = chat_request("m");
        request.messages.push(message("tool", "42"));
        assert!(needs_capability(&request, "tools"));
        let mut request = chat_request("m");
        request.reasoning_effort = Some("low".into());
        assert!(needs_capability(&request, "reasoning"));
        assert!(!needs_capability(&request, "tools"));
    }
}
