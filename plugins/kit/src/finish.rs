//! Normalising upstream stop reasons.

use crate::types::FinishReason;

/// Maps an upstream stop reason (OpenAI's, Ollama's, and the common Anthropic ones) onto the
/// contract's enum.
pub fn finish_reason(raw: &str) -> FinishReason {
    match raw {
        "stop" | "end_turn" | "stop_sequence" => FinishReason::Stop,
        "length" | "max_tokens" => FinishReason::Length,
        "tool_calls" | "tool_use" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

/// The finish reason of a complete answer: [`finish_reason`] of its stop reason, except that
/// an answer with tool calls ends in tool calls unless the stop reason says otherwise (Ollama
/// and some OpenAI-compatible servers say "stop" when a turn ends in tool calls).
pub fn answer_finish(done_reason: Option<&str>, has_tool_calls: bool) -> Option<FinishReason> {
    let finish = done_reason.map(finish_reason);
    match finish {
        None | Some(FinishReason::Stop | FinishReason::Other) if has_tool_calls => {
            Some(FinishReason::ToolCalls)
        }
        _ => finish,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reasons_are_normalised() {
        for (raw, expected) in [
            ("stop", FinishReason::Stop),
            ("end_turn", FinishReason::Stop),
            ("stop_sequence", FinishReason::Stop),
            ("length", FinishReason::Length),
            ("max_tokens", FinishReason::Length),
            ("tool_calls", FinishReason::ToolCalls),
            ("tool_use", FinishReason::ToolCalls),
            ("function_call", FinishReason::ToolCalls),
            ("content_filter", FinishReason::ContentFilter),
            ("unload", FinishReason::Other),
        ] {
            assert_eq!(finish_reason(raw), expected, "{raw}");
        }
    }

    #[test]
    fn tool_calls_upgrade_a_plain_or_unknown_finish() {
        let tool_calls = Some(FinishReason::ToolCalls);
        assert_eq!(answer_finish(None, true), tool_calls);
        assert_eq!(answer_finish(Some("stop"), true), tool_calls);
        assert_eq!(answer_finish(Some("unload"), true), tool_calls);
        assert_eq!(
            answer_finish(Some("length"), true),
            Some(FinishReason::Length)
        );
        assert_eq!(
            answer_finish(Some("content_filter"), true),
            Some(FinishReason::ContentFilter)
        );
        assert_eq!(answer_finish(None, false), None);
        assert_eq!(answer_finish(Some("stop"), false), Some(FinishReason::Stop));
    }
}
