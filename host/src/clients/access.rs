//! Which models a client may use: its `models` patterns.
//!
//! The rules, exactly:
//! - A pattern is literal text in which each `*` stands for any run of characters (none
//!   included, `/` included). Matching is case-sensitive and covers the whole name:
//!   `ollama/*` matches `ollama/qwen3:8b` and `ollama/library/x`, not `my-ollama/x`;
//!   `*` alone matches every model.
//! - A request is allowed when one of the client's patterns matches **either** the model as
//!   the request names it (trimmed): a tier (`fast`), or a name such as `kimi-k2.6:cloud`;
//!   **or** where it routes: `<provider>/<upstream model>` (`ollama_cloud/kimi-k2.6`,
//!   `ollama/qwen3:8b` for a bare `qwen3:8b` sent to the default provider `ollama`, the tier
//!   `fast`'s target `ollama/qwen3:8b`).
//! - So `"<provider>/*"` grants a whole provider however its models are named in requests;
//!   a tier name grants that tier only (not its target under another name).
//! - Per-model limits (`model_limits`) use the same patterns and the same two names: a limit
//!   applies to every request one of its patterns matches, counted together.

use crate::routing::Route;

/// Whether `pattern` matches `name` (see the module's rules).
pub fn glob(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*`: the whole name must be the pattern.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether `pattern` matches a request for `requested`, routed by `route`.
pub fn matches(pattern: &str, requested: &str, route: &Route) -> bool {
    glob(pattern, requested.trim()) || glob_routed(pattern, route)
}

/// `pattern` against `<provider>/<model>`, without building that string.
fn glob_routed(pattern: &str, route: &Route) -> bool {
    // Most patterns start with a provider name: skip the work when it is another one.
    let head = pattern.split('*').next().unwrap_or("");
    let provider = route.provider.as_str();
    let comparable = head.len().min(provider.len());
    if head.as_bytes()[..comparable] != provider.as_bytes()[..comparable] {
        return false;
    }
    glob(pattern, &format!("{provider}/{}", route.model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Rule;

    fn route(provider: &str, model: &str) -> Route {
        Route {
            provider: provider.into(),
            model: model.into(),
            rule: Rule::Prefix,
            tier: None,
        }
    }

    #[test]
    fn a_star_stands_for_any_run_of_characters() {
        for (pattern, name, wanted) in [
            ("*", "anything/at:all", true),
            ("*", "", true),
            ("fast", "fast", true),
            ("fast", "faster", false),
            ("ollama/*", "ollama/qwen3:8b", true),
            ("ollama/*", "ollama/library/x", true),
            ("ollama/*", "my-ollama/x", false),
            ("ollama/*", "ollama", false),
            (
                "openrouter/anthropic/*",
                "openrouter/anthropic/claude-x",
                true,
            ),
            ("openrouter/anthropic/*", "openrouter/openai/gpt", false),
            ("*:cloud", "kimi-k2.6:cloud", true),
            ("qwen*:8b", "qwen3:8b", true),
            ("qwen*:8b", "qwen3:8b-q4", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "a-b-c", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
            ("OLLAMA/*", "ollama/x", false),
        ] {
            assert_eq!(glob(pattern, name), wanted, "{pattern} vs {name}");
        }
    }

    #[test]
    fn patterns_match_the_requested_name_or_the_routed_provider_and_model() {
        // A bare name routed to the default provider.
        assert!(matches(
            "ollama/*",
            "qwen3:8b",
            &route("ollama", "qwen3:8b")
        ));
        // A tier: its name, or its target.
        let fast = route("ollama", "qwen3:8b");
        assert!(matches("fast", "fast", &fast));
        assert!(matches("ollama/qwen3:*", "fast", &fast));
        // The tier's name does not grant its target under another name.
        assert!(!matches("fast", "ollama/qwen3:8b", &fast));
        // `:cloud` names: as requested, or as routed.
        let cloud = route("ollama_cloud", "kimi-k2.6");
        assert!(matches("*:cloud", "kimi-k2.6:cloud", &cloud));
        assert!(matches("ollama_cloud/*", "kimi-k2.6:cloud", &cloud));
        assert!(!matches("ollama/*", "kimi-k2.6:cloud", &cloud));
        assert!(!matches("openrouter/*", "qwen3:8b", &fast));
    }
}
