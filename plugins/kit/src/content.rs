//! Message content parts.

use crate::prelude::*;

use crate::errors::invalid;
use crate::types::{AdapterError, ContentPart};

/// The text parts of `content` joined with "\n" (the contract keeps consecutive text parts
/// apart; upstreams that take one string want them on separate lines). Other parts are
/// skipped: the caller handles or refuses them.
pub fn joined_text(content: &[ContentPart]) -> String {
    let mut text = String::new();
    let mut first = true;
    for part in content {
        if let ContentPart::Text(part) = part {
            if !first {
                text.push('\n');
            }
            text.push_str(part);
            first = false;
        }
    }
    text
}

/// The text of `content`, for an upstream that takes text only; an image or other part is an
/// invalid request naming `field` and the part's kind.
pub fn text_only(field: &str, content: &[ContentPart]) -> Result<String, AdapterError> {
    for (index, part) in content.iter().enumerate() {
        match part {
            ContentPart::Text(_) => {}
            ContentPart::Image(_) => {
                return Err(invalid(format!(
                    "{field}[{index}]: image parts are not supported by this upstream"
                )));
            }
            ContentPart::Other((kind, _)) => return Err(other_part(field, index, kind)),
        }
    }
    Ok(joined_text(content))
}

/// The refusal of a content part of a kind the upstream has no form for.
pub fn other_part(field: &str, index: usize, kind: &str) -> AdapterError {
    invalid(format!(
        "{field}[{index}]: content parts of type {kind:?} are not supported by this upstream"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{image_part, invalid_request, text_part};
    use crate::types::{ImageSource, InlineImage};

    #[test]
    fn text_parts_are_joined_with_newlines_around_other_parts() {
        let image = image_part(ImageSource::Inline(InlineImage {
            media_type: "image/png".into(),
            base64: "AAAA".into(),
        }));
        let content = [text_part("a"), image, text_part("b"), text_part("c")];
        assert_eq!(joined_text(&content), "a\nb\nc");
        assert_eq!(joined_text(&[]), "");
        assert_eq!(
            invalid_request(text_only("messages[1].content", &content)),
            "messages[1].content[1]: image parts are not supported by this upstream"
        );
        let content = [
            text_part("x"),
            ContentPart::Other(("input_audio".into(), "{}".into())),
        ];
        assert_eq!(
            invalid_request(text_only("messages[0].content", &content)),
            "messages[0].content[1]: content parts of type \"input_audio\" are not supported by this upstream"
        );
        assert_eq!(
            text_only("m", &[text_part("x"), text_part("y")]).unwrap(),
            "x\ny"
        );
    }
}
