//! The contract's message list, built turn by turn by formats whose turns are shaped
//! otherwise (Anthropic content blocks, Responses input items, Ollama messages): a tool call
//! joins the assistant turn it belongs to, a tool result becomes a `tool` turn, reasoning
//! sent back goes with the assistant turn after it, empty turns are left out. Also the
//! images those formats carry, as content parts.

use serde_json::Value;

use super::tools::contract_call;
use crate::contract::{ContentPart, Image, ImageSource, InlineImage, Message};
use crate::error::GatewayError;

/// Messages being put together.
#[derive(Debug, Default)]
pub struct Conversation {
    messages: Vec<Message>,
    /// Whether the last message is an assistant turn that later calls may still join.
    open_assistant: bool,
    /// Reasoning sent back, waiting for the assistant turn it belongs to.
    reasoning: Option<String>,
}

impl Conversation {
    /// A system (or developer) turn.
    pub fn system(&mut self, text: String) {
        self.push("system", vec![ContentPart::Text(text)]);
    }

    /// A user turn.
    pub fn user(&mut self, content: Vec<ContentPart>) {
        self.push("user", content);
    }

    /// The model's reasoning for the assistant turn that follows.
    pub fn reasoning(&mut self, text: String) {
        if text.is_empty() {
            return;
        }
        match &mut self.reasoning {
            Some(pending) => {
                pending.push('\n');
                pending.push_str(&text);
            }
            None => self.reasoning = Some(text),
        }
    }

    /// Assistant text: a turn of its own, which calls that follow join.
    pub fn assistant(&mut self, text: String) {
        if text.is_empty() && self.reasoning.is_none() {
            self.open_assistant = false;
            return;
        }
        let mut turn = message("assistant", text_content(text));
        turn.reasoning = self.reasoning.take();
        self.messages.push(turn);
        self.open_assistant = true;
    }

    /// A tool call the assistant made: joins the assistant turn just before it, or starts one.
    pub fn call(&mut self, id: &str, name: &str, arguments: String) {
        if !self.open_assistant {
            self.assistant(String::new());
        }
        if !self.open_assistant {
            self.messages.push(message("assistant", Vec::new()));
            self.open_assistant = true;
        }
        let call = contract_call(id, name, arguments);
        let Some(last) = self.messages.last_mut() else {
            return;
        };
        let mut calls = match last.tool_calls.take() {
            Some(text) => match serde_json::from_str::<Value>(&text) {
                Ok(Value::Array(calls)) => calls,
                _ => Vec::new(),
            },
            None => Vec::new(),
        };
        calls.push(call);
        last.tool_calls = Some(Value::Array(calls).to_string());
    }

    /// The result of the call `id`.
    pub fn tool_result(&mut self, id: &str, name: Option<String>, content: Vec<ContentPart>) {
        let mut result = message("tool", content);
        result.tool_call_id = Some(id.to_owned());
        result.name = name;
        self.messages.push(result);
        self.open_assistant = false;
        self.reasoning = None;
    }

    fn push(&mut self, role: &str, content: Vec<ContentPart>) {
        self.open_assistant = false;
        // Reasoning belongs to the assistant turn right after it.
        self.reasoning = None;
        // A turn with nothing in it says nothing; the upstreams' APIs refuse some of them.
        if content.iter().any(|part| !is_empty_text(part)) {
            self.messages.push(message(role, content));
        }
    }

    /// The messages; a 400 naming `field` when there are none.
    pub fn finish(self, field: &str) -> Result<Vec<Message>, GatewayError> {
        if self.messages.is_empty() {
            return Err(GatewayError::bad_param(
                field,
                format!("{field} must not be empty"),
            ));
        }
        Ok(self.messages)
    }
}

fn message(role: &str, content: Vec<ContentPart>) -> Message {
    Message {
        role: role.to_owned(),
        content,
        tool_calls: None,
        tool_call_id: None,
        name: None,
        reasoning: None,
    }
}

fn is_empty_text(part: &ContentPart) -> bool {
    matches!(part, ContentPart::Text(text) if text.is_empty())
}

/// One text part, or none for empty text.
pub fn text_content(text: String) -> Vec<ContentPart> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![ContentPart::Text(text)]
    }
}

/// Text parts joined as the adapters join them ("\n" between parts).
pub fn join(texts: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let mut out = String::new();
    for text in texts {
        let text = text.as_ref();
        if text.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(text);
    }
    out
}

/// An image given inline; `field` names it in a refusal of text that is not base64.
pub fn inline_image(
    media_type: &str,
    base64: &str,
    field: &str,
) -> Result<ContentPart, GatewayError> {
    let base64 = base64.trim();
    let valid = !base64.is_empty()
        && base64
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if !valid {
        return Err(GatewayError::bad_param(
            field,
            format!("{field}: the image data is not base64"),
        ));
    }
    Ok(image(
        ImageSource::Inline(InlineImage {
            media_type: media_type.to_owned(),
            base64: base64.to_owned(),
        }),
        None,
    ))
}

/// An image given by URL: a `data:` URL is inline data, an http(s) URL is passed on as such.
pub fn image_url(
    url: &str,
    detail: Option<String>,
    field: &str,
) -> Result<ContentPart, GatewayError> {
    if let Some(data) = url.strip_prefix("data:") {
        let (media_type, base64) = data.split_once(";base64,").ok_or_else(|| {
            GatewayError::bad_param(
                field,
                format!("{field}: a data URL must be data:<media type>;base64,<data>"),
            )
        })?;
        let mut part = inline_image(media_type, base64, field)?;
        if let ContentPart::Image(image) = &mut part {
            image.detail = detail;
        }
        return Ok(part);
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(image(ImageSource::Url(url.to_owned()), detail));
    }
    Err(GatewayError::bad_param(
        field,
        format!("{field}: an image URL must be an http(s) or data: URL"),
    ))
}

fn image(source: ImageSource, detail: Option<String>) -> ContentPart {
    ContentPart::Image(Image { source, detail })
}

/// The text of content, joined as adapters join it (for tests).
#[cfg(test)]
pub(crate) fn text_of(content: &[ContentPart]) -> String {
    join(content.iter().filter_map(|part| match part {
        ContentPart::Text(text) => Some(text.as_str()),
        _ => None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(m: &Message) -> Vec<String> {
        m.content
            .iter()
            .map(|p| match p {
                ContentPart::Text(t) => t.clone(),
                _ => "<image>".into(),
            })
            .collect()
    }

    #[test]
    fn calls_join_their_assistant_turn_and_results_follow() {
        let mut c = Conversation::default();
        c.user(text_content("weather?".into()));
        c.assistant(String::new());
        c.call("c0", "f", "{}".into());
        c.tool_result("c0", None, text_content("r".into()));
        c.reasoning("Let me check.".into());
        c.assistant("Checking.".into());
        c.call("c1", "get_weather", "{}".into());
        c.call("c2", "get_time", "{}".into());
        c.tool_result("c1", None, text_content("18C".into()));
        c.call("c3", "f", "{}".into());
        let m = c.finish("messages").unwrap();
        let roles: Vec<&str> = m.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(
            roles,
            [
                "user",
                "assistant",
                "tool",
                "assistant",
                "tool",
                "assistant"
            ]
        );
        assert!(m[1].content.is_empty() && m[1].tool_calls.is_some());
        assert_eq!(texts(&m[3]), ["Checking."]);
        assert_eq!(m[3].reasoning.as_deref(), Some("Let me check."));
        let calls: Value = serde_json::from_str(m[3].tool_calls.as_deref().unwrap()).unwrap();
        assert_eq!(calls.as_array().unwrap().len(), 2);
        assert_eq!(m[4].tool_call_id.as_deref(), Some("c1"));
        assert!(m[5].content.is_empty() && m[5].tool_calls.is_some());
        assert!(Conversation::default().finish("input").is_err());
        assert_eq!(join(["a", "", "b"]), "a\nb");
    }

    #[test]
    fn images_from_urls_and_data() {
        let png = "iVBORw0KGgoAAAANSUhEUg==";
        let ContentPart::Image(inline) = image_url(
            &format!("data:image/png;base64,{png}"),
            Some("low".into()),
            "f",
        )
        .unwrap() else {
            panic!()
        };
        assert!(
            matches!(&inline.source, ImageSource::Inline(i) if i.base64 == png && i.media_type == "image/png")
        );
        assert_eq!(inline.detail.as_deref(), Some("low"));
        assert!(matches!(
            image_url("https://x/y.png", None, "f").unwrap(),
            ContentPart::Image(Image {
                source: ImageSource::Url(_),
                ..
            })
        ));
        for bad in [
            "data:image/png,raw",
            "ftp://x",
            "data:image/png;base64,not base64!",
        ] {
            assert_eq!(
                image_url(bad, None, "f").unwrap_err().param(),
                Some("f"),
                "{bad}"
            );
        }
    }
}
