//! Stream chunks.

use crate::types::StreamChunk;

/// A stream chunk that carries nothing.
#[inline]
pub fn empty_chunk() -> StreamChunk {
    StreamChunk {
        content: None,
        reasoning: None,
        tool_calls: None,
        model: None,
        done_reason: None,
        finish: None,
        input_tokens: None,
        output_tokens: None,
        done: false,
    }
}

/// Whether a chunk is worth passing on. The model does not count: upstreams name it in every
/// event, so the model alone does not make an event worth passing on.
#[inline]
pub fn carries_something(chunk: &StreamChunk) -> bool {
    chunk.content.is_some()
        || chunk.reasoning.is_some()
        || chunk.tool_calls.is_some()
        || chunk.done_reason.is_some()
        || chunk.input_tokens.is_some()
        || chunk.output_tokens.is_some()
        || chunk.done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::FinishReason;

    #[test]
    fn the_model_alone_carries_nothing() {
        assert!(!carries_something(&empty_chunk()));
        assert!(!carries_something(&StreamChunk {
            model: Some("m".into()),
            ..empty_chunk()
        }));
        // A finish comes with its done reason; alone it does not count either.
        assert!(!carries_something(&StreamChunk {
            finish: Some(FinishReason::Stop),
            ..empty_chunk()
        }));
        for chunk in [
            StreamChunk {
                content: Some("x".into()),
                ..empty_chunk()
            },
            StreamChunk {
                reasoning: Some("x".into()),
                ..empty_chunk()
            },
            StreamChunk {
                tool_calls: Some("[]".into()),
                ..empty_chunk()
            },
            StreamChunk {
                done_reason: Some("stop".into()),
                ..empty_chunk()
            },
            StreamChunk {
                input_tokens: Some(0),
                ..empty_chunk()
            },
            StreamChunk {
                output_tokens: Some(0),
                ..empty_chunk()
            },
            StreamChunk {
                done: true,
                ..empty_chunk()
            },
        ] {
            assert!(carries_something(&chunk));
        }
    }
}
