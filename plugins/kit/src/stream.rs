//! Stream chunks and usage records.

use crate::types::{StreamChunk, Usage};

/// A usage record that reports nothing.
pub fn no_usage() -> Usage {
    Usage {
        input_tokens: None,
        output_tokens: None,
        reasoning_tokens: None,
        cached_input_tokens: None,
    }
}

/// A stream chunk that carries nothing.
pub fn empty_chunk() -> StreamChunk {
    StreamChunk {
        content: None,
        reasoning: None,
        tool_calls: None,
        model: None,
        done_reason: None,
        finish: None,
        usage: no_usage(),
        done: false,
    }
}

/// The chunk of an upstream's terminal event that carries nothing else (`data: [DONE]`).
pub fn done_chunk() -> StreamChunk {
    StreamChunk {
        done: true,
        ..empty_chunk()
    }
}

/// Whether a chunk is worth passing on. The model does not count: upstreams name it in every
/// event, so the model alone does not make an event worth passing on.
pub fn carries_something(chunk: &StreamChunk) -> bool {
    let usage = &chunk.usage;
    chunk.content.is_some()
        || chunk.reasoning.is_some()
        || chunk.tool_calls.is_some()
        || chunk.done_reason.is_some()
        || usage.input_tokens.is_some()
        || usage.output_tokens.is_some()
        || usage.reasoning_tokens.is_some()
        || usage.cached_input_tokens.is_some()
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
        let usage = |set: fn(&mut Usage)| {
            let mut usage = no_usage();
            set(&mut usage);
            StreamChunk {
                usage,
                ..empty_chunk()
            }
        };
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
            usage(|usage| usage.input_tokens = Some(0)),
            usage(|usage| usage.output_tokens = Some(0)),
            usage(|usage| usage.reasoning_tokens = Some(0)),
            usage(|usage| usage.cached_input_tokens = Some(0)),
            done_chunk(),
        ] {
            assert!(carries_something(&chunk));
        }
    }
}
