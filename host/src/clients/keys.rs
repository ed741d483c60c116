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

#[cfg(test)]
mod tests {
    use super::*;

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
