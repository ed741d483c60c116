//! The one path upstream-derived text takes to a client or a log line.
//!
//! Upstreams quote what they were sent: an error body that echoes the rejected key, a
//! redirect whose `Location` carries it as a query parameter, an adapter that copies such a
//! body into its error. Every such text becomes a [`Scrubbed`] before anything can show it,
//! and only a [`Scrubber`] — which knows every key chatd holds — makes one from text that is
//! not chatd's own. The failure types that reach clients and logs hold `Scrubbed` text, so a
//! call site that forgets to scrub does not compile.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use crate::keys::Secret;

/// Longest upstream-derived text passed on, in bytes: an error page quoted whole (an HTML
/// 502 from a load balancer runs to kilobytes) would swamp the client's error and the log.
pub const MAX_TEXT: usize = 1000;

/// Shortest run of a key's characters that is scrubbed wherever it appears: a key cut by an
/// upstream, an adapter or a length limit leaks in pieces, and eight random characters are
/// already most of a guess.
pub const MIN_FRAGMENT: usize = 8;

/// Text safe to show: chatd's own words, or upstream text that went through a [`Scrubber`].
#[derive(Clone, PartialEq, Eq)]
pub struct Scrubbed(String);

impl Scrubbed {
    /// chatd's own fixed words (no upstream text can be in a `'static` literal).
    pub fn fixed(text: &'static str) -> Scrubbed {
        Scrubbed(text.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Scrubbed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Scrubbed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Every secret chatd holds (provider keys, the admin token), ready to scrub text of.
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct Scrubber {
    inner: Arc<Needles>,
}

#[derive(Default)]
struct Needles {
    /// Every [`MIN_FRAGMENT`]-byte window of every secret, ASCII-lower-cased.
    windows: HashSet<[u8; MIN_FRAGMENT]>,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scrubber({} windows)", self.inner.windows.len())
    }
}

impl Scrubber {
    /// A scrubber for `secrets`. Secrets shorter than [`MIN_FRAGMENT`] cannot be real keys and
    /// would mangle ordinary text: they are left out.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Scrubber {
        let mut windows = HashSet::new();
        for secret in secrets {
            let lower = secret.expose().to_ascii_lowercase();
            for window in lower.as_bytes().windows(MIN_FRAGMENT) {
                windows.insert(window.try_into().expect("window of MIN_FRAGMENT bytes"));
            }
        }
        Scrubber {
            inner: Arc::new(Needles { windows }),
        }
    }

    /// `text` with every run of [`MIN_FRAGMENT`] or more characters of any secret replaced by
    /// `***` (letters matched regardless of ASCII case: some upstreams quote a key upper- or
    /// lower-cased), then cut to [`MAX_TEXT`] bytes with a note of how much was left out.
    /// Scrubbing comes first, so a cut cannot leave part of a key behind.
    pub fn scrub(&self, text: impl AsRef<str>) -> Scrubbed {
        let scrubbed = self.redact(text.as_ref());
        Scrubbed(cut(scrubbed))
    }

    fn redact(&self, text: &str) -> String {
        let windows = &self.inner.windows;
        let bytes = text.as_bytes();
        if windows.is_empty() || bytes.len() < MIN_FRAGMENT {
            return text.to_owned();
        }
        // Mark every byte inside a window that is part of a secret; each maximal marked run is
        // one secret (or a piece of one).
        let mut covered = vec![false; bytes.len()];
        let mut any = false;
        let mut window = [0u8; MIN_FRAGMENT];
        for start in 0..=bytes.len() - MIN_FRAGMENT {
            for (w, b) in window.iter_mut().zip(&bytes[start..start + MIN_FRAGMENT]) {
                *w = b.to_ascii_lowercase();
            }
            if windows.contains(&window) {
                covered[start..start + MIN_FRAGMENT].fill(true);
                any = true;
            }
        }
        if !any {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while i < bytes.len() {
            if covered[i] {
                // A run ends on a character boundary (a secret with non-ASCII bytes may end
                // inside a character of the text).
                while i < bytes.len() && (covered[i] || !text.is_char_boundary(i)) {
                    i += 1;
                }
                out.push_str("***");
            } else {
                let start = i;
                while i < bytes.len() && !covered[i] {
                    i += 1;
                }
                while !text.is_char_boundary(i) {
                    i += 1;
                }
                out.push_str(&text[start..i]);
            }
        }
        out
    }
}

/// `text`, cut at [`MAX_TEXT`] bytes (on a character boundary) with a note of how much was
/// left out.
fn cut(mut text: String) -> String {
    if text.len() <= MAX_TEXT {
        return text;
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let left_out = text.len() - end;
    text.truncate(end);
    text.push_str(&format!("… ({left_out} more bytes)"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-live-0123456789abcdefXYZ";

    fn scrub(text: &str) -> String {
        Scrubber::new(&[Secret::new(KEY), Secret::new("short")])
            .scrub(text)
            .to_string()
    }

    #[test]
    fn whole_keys_are_scrubbed_in_any_ascii_case() {
        assert_eq!(scrub(&format!("bad key {KEY} given")), "bad key *** given");
        assert_eq!(
            scrub(&format!(
                "{} and {}, é {KEY}é",
                KEY.to_uppercase(),
                KEY.to_lowercase()
            )),
            "*** and ***, é ***é"
        );
        assert_eq!(scrub("nothing secret here"), "nothing secret here");
        // Too short to be a key: left alone.
        assert_eq!(scrub("a short word"), "a short word");
    }

    #[test]
    fn fragments_of_eight_or_more_characters_are_scrubbed_wherever_they_are() {
        // A key an upstream cut, at the end and at the start of a text.
        assert_eq!(scrub(&format!("key={}", &KEY[..20])), "key=***");
        assert_eq!(scrub(&format!("{}…", &KEY[10..])), "***…");
        assert_eq!(scrub(&format!("[{}]", &KEY[3..11])), "[***]");
        // Seven characters are not enough to be told from ordinary text.
        assert_eq!(
            scrub(&format!("[{}]", &KEY[3..10])),
            format!("[{}]", &KEY[3..10])
        );
        // In a redirect target.
        assert_eq!(
            scrub(&format!("https://x.example/login?api_key={KEY}&next=/")),
            "https://x.example/login?api_key=***&next=/"
        );
    }

    #[test]
    fn long_texts_are_cut_after_scrubbing_on_a_character_boundary() {
        assert_eq!(cut("short".into()), "short");
        let long = format!("a{}", "é".repeat(MAX_TEXT));
        let text = cut(long.clone());
        assert!(text.starts_with(&long[..MAX_TEXT - 1]), "{text}");
        assert!(
            text.ends_with(&format!("é… ({} more bytes)", long.len() - (MAX_TEXT - 1))),
            "{text}"
        );
        // A key straddling the cut is scrubbed whole before the text is cut.
        let straddling = format!("{}{KEY}", "x".repeat(MAX_TEXT - 10));
        let text = scrub(&straddling);
        assert!(!text.contains(&KEY[..8]), "{text}");
        assert!(text.ends_with("***"), "{text}");
    }

    #[test]
    fn a_scrubber_without_secrets_passes_text_through() {
        assert_eq!(Scrubber::default().scrub("anything").as_str(), "anything");
    }
}
