//! `[chatd.clients]` (who may call chatd, with which models, how much) and `[chatd.limits]`
//! (where the limit counters live), parsed and validated with the rest of the config.
//!
//! Client keys are configured by their SHA-256 digest only; the keys themselves are printed
//! once by `chatd keys add` and never stored. Clients may live in `lakehouse.toml` as
//! `[chatd.clients.keys.<name>]` tables, in the file `keys_file` names as `[keys.<name>]`
//! tables, or both (a name in both is an error).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Longest client name: it is a metric label and a log field.
pub const MAX_CLIENT_NAME: usize = 64;

/// `[chatd.clients]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientsConfig {
    /// When true, every API request (except `/healthz`, `/metrics` and the admin API, which
    /// has its own token) must carry one of the keys below.
    #[serde(default)]
    pub enabled: bool,
    /// A TOML file of `[keys.<name>]` tables, read with the config (relative to it).
    #[serde(default)]
    pub keys_file: Option<PathBuf>,
    /// Client name → its key digests, models and limits.
    #[serde(default)]
    pub keys: BTreeMap<String, ClientKey>,
}

/// One client: `[chatd.clients.keys.<name>]` or `[keys.<name>]` in the keys file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientKey {
    /// SHA-256 digests (hex) of the client's keys: more than one while a key is rotated.
    #[serde(deserialize_with = "one_or_many")]
    pub sha256: Vec<String>,
    /// Which models the client may use: patterns matched against the model as requested
    /// and against the provider/model it routes to (see `clients::access`).
    pub models: Vec<String>,
    /// The client's own limits.
    #[serde(flatten)]
    pub limits: Limits,
    /// Pattern → limits for the requests whose model the pattern matches (client × model).
    #[serde(default)]
    pub model_limits: BTreeMap<String, Limits>,
    /// Which file the entry came from (the config or the keys file), for messages.
    #[serde(skip)]
    pub source: PathBuf,
    /// `sha256`, decoded.
    #[serde(skip)]
    pub digests: Vec<[u8; 32]>,
}

/// Optional limits, each at least 1 when set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    /// Input + output tokens, counted when each answer ends.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    /// Per UTC calendar day.
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
    /// Per UTC calendar month.
    #[serde(default)]
    pub tokens_per_month: Option<u64>,
}

impl Limits {
    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    fn check(&self, at: &str) -> Result<(), String> {
        let fields = [
            ("requests_per_minute", self.requests_per_minute),
            ("tokens_per_minute", self.tokens_per_minute),
            ("tokens_per_day", self.tokens_per_day),
            ("tokens_per_month", self.tokens_per_month),
        ];
        for (name, value) in fields {
            if value == Some(0) {
                return Err(format!(
                    "{at}.{name} must be at least 1 (leave it out for no limit)"
                ));
            }
        }
        Ok(())
    }
}

/// `[chatd.limits]`: where limit counters live. Fixed at start (a reload that changes
/// `store` warns), except `fail_open` and `timeout_ms`, which apply from the next request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// `"memory"` (this process only), or a `redis://` URL (Redis or Valkey) that replicas
    /// share.
    #[serde(default = "default_store")]
    pub store: String,
    /// While the Redis store is unreachable: true keeps serving with limits enforced per
    /// replica, false refuses limited requests with 503 `limits_unavailable`.
    #[serde(default = "default_fail_open")]
    pub fail_open: bool,
    /// Longest wait for one Redis call before it counts as unreachable.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Prefix of every Redis key chatd writes (deployments sharing one Redis keep apart).
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            store: default_store(),
            fail_open: default_fail_open(),
            timeout_ms: default_timeout_ms(),
            key_prefix: default_key_prefix(),
        }
    }
}

impl LimitsConfig {
    /// The Redis URL, when counters live in Redis.
    pub fn redis_url(&self) -> Option<&str> {
        (self.store != "memory").then_some(self.store.as_str())
    }

    /// The store for messages: a Redis URL without its password.
    pub fn store_display(&self) -> String {
        match url::Url::parse(&self.store) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("***"));
                url.to_string()
            }
            _ => self.store.clone(),
        }
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if self.store != "memory" {
            let url = url::Url::parse(&self.store).map_err(|e| {
                format!(
                    "chatd.limits.store: {:?} is neither \"memory\" nor a URL: {e}",
                    self.store_display()
                )
            })?;
            if !matches!(
                url.scheme(),
                "redis" | "valkey" | "unix" | "redis+unix" | "valkey+unix"
            ) {
                return Err(format!(
                    "chatd.limits.store: scheme {:?} is not supported (use \"memory\", \
                     redis://host:port/db or unix:///path/to/redis.sock)",
                    url.scheme()
                ));
            }
        }
        if !(1..=10_000).contains(&self.timeout_ms) {
            return Err("chatd.limits.timeout_ms must be between 1 and 10000".into());
        }
        if self.key_prefix.is_empty() || self.key_prefix.chars().any(char::is_whitespace) {
            return Err("chatd.limits.key_prefix must be non-empty, without spaces".into());
        }
        Ok(())
    }
}

fn default_store() -> String {
    "memory".into()
}
fn default_fail_open() -> bool {
    true
}
fn default_timeout_ms() -> u64 {
    100
}
fn default_key_prefix() -> String {
    "chatd".into()
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// The keys file: `[keys.<name>]` tables only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: BTreeMap<String, ClientKey>,
}

/// A problem in one file: the config or the keys file.
#[derive(Debug)]
pub struct FileError {
    pub path: PathBuf,
    pub message: String,
}

impl ClientsConfig {
    /// Anchors `keys_file` at the config's directory.
    pub(super) fn resolve_paths(&mut self, base: &Path) {
        if let Some(file) = self.keys_file.as_mut()
            && file.is_relative()
        {
            *file = base.join(&*file);
        }
    }

    /// Reads the keys file (when named), then validates every client: names, digests,
    /// patterns and limits. Errors name the file and the key at fault.
    pub(super) fn load(&mut self, config_path: &Path) -> Result<(), FileError> {
        for client in self.keys.values_mut() {
            client.source = config_path.to_owned();
        }
        let config_error = |message: String| FileError {
            path: config_path.to_owned(),
            message,
        };
        for (name, client) in &mut self.keys {
            client
                .prepare(&format!("chatd.clients.keys.{name}"), name)
                .map_err(config_error)?;
        }
        if let Some(path) = self.keys_file.clone() {
            let file_error = |message: String| FileError {
                path: path.clone(),
                message,
            };
            let text = std::fs::read_to_string(&path).map_err(|e| {
                file_error(format!(
                    "cannot read the keys file (chatd.clients.keys_file in {}): {e}",
                    config_path.display()
                ))
            })?;
            let file: KeysFile = toml::from_str(&text)
                .map_err(|e| file_error(format!("not a valid keys file: {e}")))?;
            for (name, mut client) in file.keys {
                client.source = path.clone();
                client
                    .prepare(&format!("keys.{name}"), &name)
                    .map_err(file_error)?;
                if self.keys.contains_key(&name) {
                    return Err(file_error(format!(
                        "keys.{name}: client {name:?} is also configured in {} \
                         ([chatd.clients.keys.{name}]); keep one",
                        config_path.display()
                    )));
                }
                self.keys.insert(name, client);
            }
        }
        let mut seen: BTreeMap<[u8; 32], &str> = BTreeMap::new();
        for (name, client) in &self.keys {
            for digest in &client.digests {
                if let Some(other) = seen.insert(*digest, name) {
                    return Err(FileError {
                        path: client.source.clone(),
                        message: format!(
                            "client {name:?}: one of its sha256 digests is also client \
                             {other:?}'s; every key belongs to one client"
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

impl ClientKey {
    fn prepare(&mut self, at: &str, name: &str) -> Result<(), String> {
        check_client_name(name).map_err(|e| format!("{at}: {e}"))?;
        if self.sha256.is_empty() {
            return Err(format!(
                "{at}.sha256 is empty: give the digest `chatd keys add {name}` printed"
            ));
        }
        self.digests = self
            .sha256
            .iter()
            .map(|hex| {
                parse_digest(hex).ok_or_else(|| {
                    format!(
                        "{at}.sha256: {hex:?} is not a SHA-256 digest (64 hex digits, as \
                         `chatd keys add` prints them; never the key itself)"
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        if self.models.is_empty() {
            return Err(format!(
                "{at}.models is empty: list the models the client may use ([\"*\"] for all)"
            ));
        }
        for pattern in &self.models {
            check_pattern(pattern).map_err(|e| format!("{at}.models: {e}"))?;
        }
        self.limits.check(at)?;
        for (pattern, limits) in &self.model_limits {
            check_pattern(pattern).map_err(|e| format!("{at}.model_limits: {e}"))?;
            limits.check(&format!("{at}.model_limits.{pattern:?}"))?;
            if limits.is_empty() {
                return Err(format!(
                    "{at}.model_limits.{pattern:?} sets no limit (requests_per_minute, \
                     tokens_per_minute, tokens_per_day or tokens_per_month)"
                ));
            }
        }
        Ok(())
    }
}

/// Client names: letters, digits, `_`, `-`, `.`; at most [`MAX_CLIENT_NAME`] characters
/// (they appear in metric labels, log lines and Redis keys).
pub fn check_client_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CLIENT_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "client name {name:?} must be 1 to {MAX_CLIENT_NAME} letters, digits, '_', '-' or '.'"
        ))
    }
}

/// A model pattern is any non-empty text without spaces or control characters; `*` in it
/// stands for any run of characters.
fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() || pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "pattern {pattern:?} must be non-empty, without spaces or control characters"
        ));
    }
    Ok(())
}

/// 64 hex digits (either case) → the digest.
pub fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    let hex = hex.strip_prefix("sha256:").unwrap_or(hex);
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError};
    use std::path::Path;

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const OTHER: &str = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";
    const BASE: &str = "[chatd.providers.ollama]\nadapter = \"ollama\"\n";

    fn parse_in(dir: &Path, text: &str) -> Result<Config, ConfigError> {
        let path = dir.join("lakehouse.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    fn err(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        parse_in(dir.path(), text).unwrap_err().to_string()
    }

    #[test]
    fn clients_are_off_by_default_and_parse_with_limits() {
        let dir = tempfile::tempdir().unwrap();
        let c = parse_in(dir.path(), &format!("[chatd]\n{BASE}")).unwrap();
        assert!(!c.chatd.clients.enabled && c.chatd.clients.keys.is_empty());
        assert_eq!(c.chatd.limits.store, "memory");
        assert!(c.chatd.limits.fail_open);
        let text = format!(
            r#"[chatd]
[chatd.clients]
enabled = true
[chatd.clients.keys.alice]
sha256 = "{}"
models = ["fast", "ollama/*"]
requests_per_minute = 60
tokens_per_day = 1000
[chatd.clients.keys.alice.model_limits."ollama/*"]
tokens_per_minute = 5
{BASE}"#,
            DIGEST.to_uppercase()
        );
        let c = parse_in(dir.path(), &text).unwrap();
        let alice = &c.chatd.clients.keys["alice"];
        assert_eq!(alice.digests[0][0], 0x9f);
        assert_eq!(alice.limits.requests_per_minute, Some(60));
        assert_eq!(alice.limits.tokens_per_day, Some(1000));
        assert_eq!(alice.model_limits["ollama/*"].tokens_per_minute, Some(5));
        assert_eq!(alice.source, dir.path().join("lakehouse.toml"));
    }

    #[test]
    fn a_keys_file_adds_clients_and_errors_name_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("keys.toml"),
            format!("[keys.bob]\nsha256 = \"{OTHER}\"\nmodels = [\"*\"]\n"),
        )
        .unwrap();
        let main = format!(
            "[chatd]\n[chatd.clients]\nenabled = true\nkeys_file = \"keys.toml\"\n\
             [chatd.clients.keys.alice]\nsha256 = \"{DIGEST}\"\nmodels = [\"*\"]\n{BASE}"
        );
        let c = parse_in(dir.path(), &main).unwrap();
        assert_eq!(
            c.chatd.clients.keys.keys().collect::<Vec<_>>(),
            ["alice", "bob"]
        );
        assert_eq!(
            c.chatd.clients.keys["bob"].source,
            dir.path().join("keys.toml")
        );

        let bad = |file: &str| {
            std::fs::write(dir.path().join("keys.toml"), file).unwrap();
            parse_in(dir.path(), &main).unwrap_err().to_string()
        };
        let keys_path = dir.path().join("keys.toml").display().to_string();
        let e = bad("[keys.bob]\nsha256 = \"abc\"\nmodels = [\"*\"]\n");
        assert!(
            e.contains(&keys_path) && e.contains("keys.bob.sha256: \"abc\" is not a SHA-256"),
            "{e}"
        );
        let e = bad(&format!(
            "[keys.alice]\nsha256 = \"{OTHER}\"\nmodels = [\"*\"]\n"
        ));
        assert!(e.contains("also configured in"), "{e}");
        let e = bad(&format!(
            "[keys.carol]\nsha256 = \"{DIGEST}\"\nmodels = [\"*\"]\n"
        ));
        assert!(e.contains("also client \"alice\""), "{e}");
        let e = bad(&format!(
            "[keys.bob]\nsha256 = \"{OTHER}\"\nmodels = [\"*\"]\nrequests_per_minut = 3\n"
        ));
        assert!(e.contains("requests_per_minut"), "{e}");
        std::fs::remove_file(dir.path().join("keys.toml")).unwrap();
        let e = parse_in(dir.path(), &main).unwrap_err().to_string();
        assert!(e.contains("cannot read the keys file"), "{e}");
    }

    #[test]
    fn client_entries_are_validated_with_their_key_named() {
        let client = |body: &str| {
            err(&format!(
                "[chatd]\n[chatd.clients.keys.alice]\n{body}\n{BASE}"
            ))
        };
        let ok_digest = format!("sha256 = \"{DIGEST}\"");
        for (body, wanted) in [
            (
                format!("{ok_digest}\nmodels = []"),
                "chatd.clients.keys.alice.models is empty",
            ),
            (ok_digest.clone(), "missing field `models`"),
            (
                "sha256 = []\nmodels = [\"*\"]".to_owned(),
                "chatd.clients.keys.alice.sha256 is empty",
            ),
            (
                format!("{ok_digest}\nmodels = [\"a b\"]"),
                "chatd.clients.keys.alice.models: pattern \"a b\"",
            ),
            (
                format!("{ok_digest}\nmodels = [\"*\"]\ntokens_per_day = 0"),
                "chatd.clients.keys.alice.tokens_per_day must be at least 1",
            ),
            (
                format!(
                    "{ok_digest}\nmodels = [\"*\"]\n[chatd.clients.keys.alice.model_limits.\"x/*\"]"
                ),
                "model_limits.\"x/*\" sets no limit",
            ),
        ] {
            let e = client(&body);
            assert!(e.contains(wanted), "{body}: {e}");
        }
        let e = err(&format!(
            "[chatd]\n[chatd.clients.keys.\"a/b\"]\nsha256 = \"{DIGEST}\"\nmodels = [\"*\"]\n{BASE}"
        ));
        assert!(e.contains("client name \"a/b\""), "{e}");
    }

    #[test]
    fn the_limits_store_is_memory_or_a_redis_url() {
        for (store, ok) in [
            ("memory", true),
            ("redis://127.0.0.1:6379/0", true),
            ("redis://:pw@h:1", true),
            ("unix:///run/redis.sock", true),
            ("http://h", false),
            ("nonsense", false),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let r = parse_in(
                dir.path(),
                &format!("[chatd]\n[chatd.limits]\nstore = \"{store}\"\n{BASE}"),
            );
            assert_eq!(r.is_ok(), ok, "{store}: {r:?}");
            if let Err(e) = r {
                assert!(e.to_string().contains("chatd.limits.store"), "{e}");
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let c = parse_in(
            dir.path(),
            &format!("[chatd]\n[chatd.limits]\nstore = \"redis://:secret@h:1/0\"\n{BASE}"),
        )
        .unwrap();
        assert!(!c.chatd.limits.store_display().contains("secret"));
        assert_eq!(c.chatd.limits.redis_url(), Some("redis://:secret@h:1/0"));
    }

    #[test]
    fn digests_parse_in_either_case_with_an_optional_prefix() {
        assert!(super::parse_digest(DIGEST).is_some());
        assert_eq!(
            super::parse_digest(&DIGEST.to_uppercase()),
            super::parse_digest(&format!("sha256:{DIGEST}"))
        );
        assert!(super::parse_digest(&DIGEST[1..]).is_none());
        assert!(super::parse_digest(&format!("{}zz", &DIGEST[2..])).is_none());
    }
}
