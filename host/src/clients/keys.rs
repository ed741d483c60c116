//! Client keys: how they are made, stored (as digests) and read from a request.
//!
//! A key is `chatd_` followed by 64 hex digits: 256 random bits from the operating system.
//! chatd stores only its SHA-256 digest. A fast unsalted hash is the right tool for keys this
//! random (it is what API key systems use): password hashing (bcrypt, argon2) exists to slow
//! down guessing of *low-entropy* secrets, and guessing 2^256 keys stays out of reach at any
//! hash speed — while a slow hash would cost every request milliseconds of CPU. Lookups go by
//! digest in a hash map: the digest of an attacker's guess reveals nothing about the digests
//! stored, so the lookup's timing reveals nothing about which keys exist.

use http::HeaderMap;
use sha2::{Digest, Sha256};

/// What every key starts with, so a leaked one is recognisable (secret scanners, logs).
pub const PREFIX: &str = "chatd_";

/// A new random key.
pub fn generate() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| format!("cannot read random bytes from the operating system: {e}"))?;
    Ok(format!("{PREFIX}{}", hex(&bytes)))
}

/// The digest chatd stores for `key`.
pub fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The keys a request presents, in the order they are tried: `Authorization: Bearer <key>`
/// (OpenAI SDKs, and Anthropic's when given an auth token), then `x-api-key` (Anthropic
/// SDKs). Whatever bytes they hold are tried as they are: a malformed key takes the same path
/// (digest, lookup) as an unknown one.
pub fn presented(headers: &HeaderMap) -> Vec<&[u8]> {
    let mut keys = Vec::with_capacity(1);
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let value = value.as_bytes();
        let token = value
            .iter()
            .position(|&b| b == b' ')
            .filter(|&at| value[..at].eq_ignore_ascii_case(b"bearer"))
            .map_or(value, |at| &value[at + 1..]);
        keys.push(trim(token));
    }
    if let Some(value) = headers.get("x-api-key") {
        keys.push(trim(value.as_bytes()));
    }
    keys
}

fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes
        && first.is_ascii_whitespace()
    {
        bytes = rest;
    }
    while let [rest @ .., last] = bytes
        && last.is_ascii_whitespace()
    {
        bytes = rest;
    }
    bytes
}

/// What `chatd keys add` prints after the key: where the lines go, and the TOML lines of the
/// client's entry. `existing` is the client's current entry, when the config has one (the new
/// digest is then added to its `sha256`, a rotation); `keys_file` is where the config keeps
/// its keys, when it names a file.
pub fn entry_lines(
    name: &str,
    key: &str,
    models: &[String],
    limits: &crate::config::Limits,
    existing: Option<&crate::config::ClientKey>,
    keys_file: Option<&std::path::Path>,
) -> String {
    let digest = hex(&digest(key.as_bytes()));
    let table = match keys_file {
        Some(_) => format!("[keys.{name}]"),
        None => format!("[chatd.clients.keys.{name}]"),
    };
    let place = match keys_file {
        Some(file) => format!("the keys file {}", file.display()),
        None => "lakehouse.toml (or the file [chatd.clients] keys_file names)".to_owned(),
    };
    let quoted = |items: &[String]| {
        let items: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
        format!("[{}]", items.join(", "))
    };
    let mut out = String::new();
    match existing {
        Some(entry) => {
            let mut digests = entry.sha256.clone();
            digests.push(digest);
            out.push_str(&format!(
                "Client {name:?} exists: in {table} of {}, replace its sha256 line with the one                  below (both keys work until you remove the old digest), then reload chatd                  (SIGHUP or POST /v1/admin/reload):\n\n",
                entry.source.display()
            ));
            out.push_str(&format!("sha256 = {}\n", quoted(&digests)));
            return out;
        }
        None => out.push_str(&format!(
            "Add to {place}, then reload chatd (SIGHUP or POST /v1/admin/reload):\n\n"
        )),
    }
    out.push_str(&format!(
        "{table}\nsha256 = \"{digest}\"\nmodels = {}\n",
        quoted(models)
    ));
    let values = [
        ("requests_per_minute", limits.requests_per_minute),
        ("tokens_per_minute", limits.tokens_per_minute),
        ("tokens_per_day", limits.tokens_per_day),
        ("tokens_per_month", limits.tokens_per_month),
    ];
    for (field, value) in values {
        if let Some(v) = value {
            out.push_str(&format!("{field} = {v}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_lines_parse_back_as_a_client_of_that_key() {
        let key = generate().unwrap();
        let limits = crate::config::Limits {
            requests_per_minute: Some(60),
            tokens_per_day: Some(1000),
            ..Default::default()
        };
        let models = ["fast".to_owned(), "ollama/*".to_owned()];
        let lines = entry_lines("alice", &key, &models, &limits, None, None);
        let toml_part = &lines[lines.find("[chatd.clients.keys.").unwrap()..];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lakehouse.toml");
        std::fs::write(
            &path,
            format!("[chatd]\n[chatd.providers.ollama]\nadapter = \"ollama\"\n{toml_part}"),
        )
        .unwrap();
        let config = crate::config::Config::load(&path).unwrap();
        let alice = &config.chatd.clients.keys["alice"];
        assert_eq!(alice.digests, [digest(key.as_bytes())]);
        assert_eq!(alice.models, models);
        assert_eq!(alice.limits, limits);

        // A second key for the same client: both digests, old first.
        let rotated = entry_lines("alice", "chatd_new", &models, &limits, Some(alice), None);
        assert!(rotated.contains("exists"), "{rotated}");
        assert!(
            rotated.contains(&format!(
                "sha256 = [\"{}\", \"{}\"]",
                alice.sha256[0],
                hex(&digest(b"chatd_new"))
            )),
            "{rotated}"
        );
        let in_file = entry_lines(
            "bob",
            &key,
            &models,
            &limits,
            None,
            Some(std::path::Path::new("/etc/k.toml")),
        );
        assert!(in_file.contains("[keys.bob]") && in_file.contains("/etc/k.toml"));
        // Never the key itself.
        assert!(!lines.contains(&key) && !in_file.contains(&key));
    }

    #[test]
    fn keys_are_random_prefixed_and_hashed_with_sha256() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 64, "{a}");
        assert_eq!(
            hex(&digest(b"test")),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn keys_come_from_bearer_then_x_api_key() {
        let mut h = HeaderMap::new();
        assert!(presented(&h).is_empty());
        h.insert("authorization", "Bearer  k1 ".parse().unwrap());
        h.insert("x-api-key", "k2".parse().unwrap());
        assert_eq!(presented(&h), [b"k1".as_slice(), b"k2"]);
        h.insert("authorization", "bearer k3".parse().unwrap());
        assert_eq!(presented(&h)[0], b"k3");
        // Another scheme, or none: the whole value is tried (and will not match).
        h.insert("authorization", "Basic xyz".parse().unwrap());
        assert_eq!(presented(&h)[0], b"Basic xyz");
    }
}
