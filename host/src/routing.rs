//! Model name → the ordered candidates that may serve it. One pure function, [`resolve`],
//! over a [`RouteTable`].
//!
//! Rules, first match wins:
//! 1. a tier name from `[models]` is replaced by its model IDs (one, or a fallback chain),
//!    each then routed by 2–4;
//! 2. `<provider>/<rest>` where `<provider>` is configured → that provider, model `<rest>`;
//! 3. `<m>:cloud` → `ollama_cloud`, model `<m>` (`:cloud` is the Ollama app's marker;
//!    ollama.com's API names the model without it);
//! 4. anything else, unknown prefixes included → the default provider, model unchanged.
//!
//! A rule that picks a configured provider that is not registered (no key, say) is an error,
//! never a silent fall-through to another provider. In a chain such an entry is skipped (the
//! chain names its fallbacks explicitly); only a chain none of whose entries can serve is an
//! error.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The provider `<m>:cloud` routes to.
pub const CLOUD_PROVIDER: &str = "ollama_cloud";
const CLOUD_SUFFIX: &str = ":cloud";

/// What routing needs to know about the configuration.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// Tier name → its model IDs, in the order they are tried.
    pub tiers: BTreeMap<String, Vec<String>>,
    /// Every provider named in the config.
    pub configured: BTreeSet<String>,
    /// Providers that can take requests (adapter loaded, key present).
    pub registered: BTreeSet<String>,
    /// Provider for bare names.
    pub default_provider: String,
}

/// Where a model name goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The provider that takes the request.
    pub provider: String,
    /// The model name sent upstream.
    pub model: String,
    /// Which rule matched.
    pub rule: Rule,
    /// The tier the request named, if it named one.
    pub tier: Option<String>,
}

/// Where a model name may go, in the order to try: one route, or the entries of a tier's
/// chain whose provider can take requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidates {
    /// Never empty.
    pub routes: Vec<Route>,
    /// The chain's entries that cannot be served now, and why.
    pub skipped: Vec<RouteError>,
}

impl Candidates {
    /// The first candidate.
    pub fn first(&self) -> &Route {
        &self.routes[0]
    }

    /// A one-line explanation, as `chatd route` prints it.
    pub fn explain(&self, requested: &str) -> String {
        let mut line = match self.routes.as_slice() {
            [only] => only.explain(requested),
            routes => {
                let tried: Vec<String> = routes
                    .iter()
                    .enumerate()
                    .map(|(i, r)| format!("{}. {}", i + 1, r.explain(requested)))
                    .collect();
                format!(
                    "{requested:?} → a chain, tried in order: {}",
                    tried.join(" ")
                )
            }
        };
        for skipped in &self.skipped {
            line.push_str(&format!(" [skipped: {skipped}]"));
        }
        line
    }
}

/// The routing rule that decided a [`Route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `<provider>/<model>`.
    Prefix,
    /// `<model>:cloud`.
    CloudSuffix,
    /// No other rule matched.
    Default,
}

/// Why a model name cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("model is required")]
    EmptyModel,
    #[error("model {0:?} contains a control character")]
    ControlCharacter(String),
    #[error("model {model:?} names provider {provider:?} but no model after the prefix")]
    EmptyAfterPrefix { model: String, provider: String },
    #[error(
        "model {model:?} routes to provider {provider:?}, which is not registered ({})",
        if *configured { "configured, but its adapter or key is missing: see GET /v1/chat/providers" } else { "not configured" }
    )]
    NotRegistered {
        model: String,
        provider: String,
        configured: bool,
    },
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::Prefix => "provider prefix",
            Rule::CloudSuffix => "':cloud' suffix",
            Rule::Default => "default provider",
        })
    }
}

impl Route {
    /// A one-line explanation, as `chatd route` prints it.
    pub fn explain(&self, requested: &str) -> String {
        let via = match &self.tier {
            Some(tier) => format!("tier {tier:?} → model id, then "),
            None => String::new(),
        };
        // A `vendor/model` name that reached the default rule has a prefix that names no
        // configured provider: usually a provider missing from the config, or a typo.
        let note = match (self.rule, self.model.split_once('/')) {
            (Rule::Default, Some((prefix, _))) => format!(
                "; {prefix:?} is not a configured provider, so the whole name goes to the default one"
            ),
            _ => String::new(),
        };
        format!(
            "{requested:?} → provider {:?}, upstream model {:?} ({via}{}{note})",
            self.provider, self.model, self.rule
        )
    }
}

/// Resolves a requested model name to its candidates: a tier's model IDs in order (those
/// whose provider cannot serve now are skipped), or the one route of any other name.
pub fn resolve(table: &RouteTable, model: &str) -> Result<Candidates, RouteError> {
    let model = model.trim();
    if model.is_empty() {
        return Err(RouteError::EmptyModel);
    }
    // No model name has one, and a NUL or newline passed upstream only confuses the error.
    if model.chars().any(char::is_control) {
        return Err(RouteError::ControlCharacter(model.to_owned()));
    }
    let Some(chain) = table.tiers.get(model) else {
        return Ok(Candidates {
            routes: vec![route_one(table, model, model, None)?],
            skipped: Vec::new(),
        });
    };
    let mut routes = Vec::with_capacity(chain.len());
    let mut skipped = Vec::new();
    for target in chain {
        match route_one(table, model, target.trim(), Some(model)) {
            Ok(route) => routes.push(route),
            Err(e) => skipped.push(e),
        }
    }
    if routes.is_empty() {
        // The first entry's reason stands for the chain: it is what was wanted most.
        return Err(skipped.swap_remove(0));
    }
    Ok(Candidates { routes, skipped })
}

/// Routes one model ID (a tier's entry, or the requested name itself) by rules 2–4.
fn route_one(
    table: &RouteTable,
    requested: &str,
    target: &str,
    tier: Option<&str>,
) -> Result<Route, RouteError> {
    if target.chars().any(char::is_control) {
        return Err(RouteError::ControlCharacter(target.to_owned()));
    }
    let (provider, upstream, rule) = match target.split_once('/') {
        Some((prefix, rest)) if table.configured.contains(prefix) => {
            let rest = rest.trim();
            if rest.is_empty() {
                return Err(RouteError::EmptyAfterPrefix {
                    model: target.to_owned(),
                    provider: prefix.to_owned(),
                });
            }
            (prefix, rest, Rule::Prefix)
        }
        _ => match target.strip_suffix(CLOUD_SUFFIX) {
            Some(base) if !base.is_empty() => (CLOUD_PROVIDER, base, Rule::CloudSuffix),
            _ => (table.default_provider.as_str(), target, Rule::Default),
        },
    };
    if !table.registered.contains(provider) {
        return Err(RouteError::NotRegistered {
            model: if tier.is_some() {
                target.to_owned()
            } else {
                requested.to_owned()
            },
            provider: provider.to_owned(),
            configured: table.configured.contains(provider),
        });
    }
    Ok(Route {
        provider: provider.to_owned(),
        model: upstream.to_owned(),
        rule,
        tier: tier.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(registered: &[&str]) -> RouteTable {
        let names = ["ollama", "ollama_cloud", "openrouter", "opencode", "kimi"];
        RouteTable {
            tiers: [
                ("fast", vec!["ollama/qwen3:8b"]),
                ("judge", vec!["kimi-k2.6:cloud"]),
                ("smart", vec!["openrouter/anthropic/claude-x"]),
                (
                    "coder",
                    vec![
                        "ollama/qwen3-coder:30b",
                        "qwen3-coder:480b:cloud",
                        "kimi/k2",
                    ],
                ),
            ]
            .into_iter()
            .map(|(t, chain)| (t.to_string(), chain.iter().map(|m| m.to_string()).collect()))
            .collect(),
            configured: names.iter().map(|s| s.to_string()).collect(),
            registered: registered.iter().map(|s| s.to_string()).collect(),
            default_provider: "ollama".into(),
        }
    }

    fn all() -> RouteTable {
        table(&["ollama", "ollama_cloud", "openrouter", "opencode", "kimi"])
    }

    fn route(t: &RouteTable, m: &str) -> (String, String, Rule) {
        let r = resolve(t, m).unwrap().routes.remove(0);
        (r.provider, r.model, r.rule)
    }

    fn r(p: &str, m: &str, rule: Rule) -> (String, String, Rule) {
        (p.into(), m.into(), rule)
    }

    #[test]
    fn every_prefix_is_stripped() {
        let t = all();
        assert_eq!(
            route(&t, "ollama/qwen3:8b"),
            r("ollama", "qwen3:8b", Rule::Prefix)
        );
        assert_eq!(
            route(&t, "ollama_cloud/gpt-oss:120b"),
            r("ollama_cloud", "gpt-oss:120b", Rule::Prefix)
        );
        assert_eq!(
            route(&t, "openrouter/anthropic/claude-x"),
            r("openrouter", "anthropic/claude-x", Rule::Prefix)
        );
        assert_eq!(
            route(&t, "opencode/grok-code"),
            r("opencode", "grok-code", Rule::Prefix)
        );
        assert_eq!(
            route(&t, "kimi/kimi-for-coding"),
            r("kimi", "kimi-for-coding", Rule::Prefix)
        );
    }

    #[test]
    fn cloud_suffix_goes_to_ollama_cloud_without_the_suffix() {
        let t = all();
        assert_eq!(
            route(&t, "kimi-k2.6:cloud"),
            r("ollama_cloud", "kimi-k2.6", Rule::CloudSuffix)
        );
        // A prefix is more specific than the suffix: the local Ollama app proxies :cloud itself.
        assert_eq!(
            route(&t, "ollama/kimi-k2.6:cloud"),
            r("ollama", "kimi-k2.6:cloud", Rule::Prefix)
        );
        // ":cloud" alone is not a model name with a suffix.
        assert_eq!(route(&t, ":cloud"), r("ollama", ":cloud", Rule::Default));
    }

    #[test]
    fn tiers_resolve_then_route() {
        let t = all();
        let fast = resolve(&t, "fast").unwrap().routes.remove(0);
        assert_eq!(
            (fast.provider.as_str(), fast.model.as_str()),
            ("ollama", "qwen3:8b")
        );
        assert_eq!(fast.tier.as_deref(), Some("fast"));
        assert_eq!(
            route(&t, "judge"),
            r("ollama_cloud", "kimi-k2.6", Rule::CloudSuffix)
        );
        assert_eq!(
            route(&t, "smart"),
            r("openrouter", "anthropic/claude-x", Rule::Prefix)
        );
        assert!(
            resolve(&t, "judge")
                .unwrap()
                .explain("judge")
                .contains("tier \"judge\"")
        );
        let unknown = resolve(&t, "acme/m").unwrap().explain("acme/m");
        assert!(
            unknown.contains("\"acme\" is not a configured provider"),
            "{unknown}"
        );
        assert!(
            !resolve(&t, "m")
                .unwrap()
                .explain("m")
                .contains("configured")
        );
    }

    #[test]
    fn a_chain_is_tried_in_order_skipping_what_cannot_serve() {
        let all = resolve(&all(), "coder").unwrap();
        let order: Vec<(&str, &str)> = all
            .routes
            .iter()
            .map(|r| (r.provider.as_str(), r.model.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("ollama", "qwen3-coder:30b"),
                ("ollama_cloud", "qwen3-coder:480b"),
                ("kimi", "k2")
            ]
        );
        assert!(
            all.routes
                .iter()
                .all(|r| r.tier.as_deref() == Some("coder"))
        );
        assert!(all.skipped.is_empty());
        assert!(all.explain("coder").contains("a chain, tried in order: 1."));

        // No key for ollama_cloud: the chain goes on without it, and says so.
        let some = resolve(&table(&["ollama", "kimi"]), "coder").unwrap();
        assert_eq!(some.routes.len(), 2);
        assert_eq!(some.routes[1].provider, "kimi");
        assert!(matches!(
            &some.skipped[..],
            [RouteError::NotRegistered { provider, .. }] if provider == "ollama_cloud"
        ));
        assert!(
            some.explain("coder")
                .contains("[skipped: model \"qwen3-coder:480b:cloud\"")
        );

        // None can serve: the first entry's reason.
        let none = resolve(&table(&["openrouter"]), "coder").unwrap_err();
        assert!(
            matches!(&none, RouteError::NotRegistered { provider, .. } if provider == "ollama"),
            "{none:?}"
        );
    }

    #[test]
    fn bare_and_unknown_prefixes_go_to_the_default_unchanged() {
        let t = all();
        assert_eq!(
            route(&t, "qwen3:8b"),
            r("ollama", "qwen3:8b", Rule::Default)
        );
        assert_eq!(
            route(&t, "unknown/m"),
            r("ollama", "unknown/m", Rule::Default)
        );
        assert_eq!(
            route(&t, "  qwen3:8b "),
            r("ollama", "qwen3:8b", Rule::Default)
        );
    }

    #[test]
    fn unregistered_providers_are_errors_not_fall_throughs() {
        let t = table(&["ollama"]);
        for model in ["kimi-k2.6:cloud", "openrouter/x/y", "judge", "kimi/k"] {
            let err = resolve(&t, model).unwrap_err();
            assert!(
                matches!(
                    err,
                    RouteError::NotRegistered {
                        configured: true,
                        ..
                    }
                ),
                "{model}: {err:?}"
            );
        }
        let mut t = table(&["ollama"]);
        t.configured.remove("ollama_cloud");
        let err = resolve(&t, "m:cloud").unwrap_err();
        assert!(err.to_string().contains("not configured"), "{err}");
        // The default provider itself can be unregistered.
        let t = table(&["kimi"]);
        assert!(matches!(
            resolve(&t, "qwen3"),
            Err(RouteError::NotRegistered { .. })
        ));
    }

    #[test]
    fn empty_names_are_rejected() {
        let t = all();
        assert_eq!(resolve(&t, ""), Err(RouteError::EmptyModel));
        assert_eq!(resolve(&t, "   "), Err(RouteError::EmptyModel));
        assert!(matches!(
            resolve(&t, "ollama/"),
            Err(RouteError::EmptyAfterPrefix { .. })
        ));
        assert!(matches!(
            resolve(&t, "ollama/  "),
            Err(RouteError::EmptyAfterPrefix { .. })
        ));
        assert_eq!(route(&t, "ollama/ x "), r("ollama", "x", Rule::Prefix));
        assert!(matches!(
            resolve(&t, "qwen3\0:8b"),
            Err(RouteError::ControlCharacter(_))
        ));
        assert!(matches!(
            resolve(&t, "ollama/qw\ren3"),
            Err(RouteError::ControlCharacter(_))
        ));
    }
}
