//! API keys and tokens: from the process environment, falling back to a `.env` file.
//!
//! A [`Secret`] never prints its value (`Debug` and `Display` are redacted), so a key cannot
//! reach a log line or an error body by accident; text from upstreams, which may quote a key,
//! is scrubbed of every key chatd holds by [`crate::scrub`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// A credential whose value is only reachable through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The raw value, for the one place that must send it upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a key was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The process environment.
    Env(String),
    /// A `.env`-format file.
    File { var: String, path: PathBuf },
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env(var) => write!(f, "${var}"),
            KeySource::File { var, path } => write!(f, "{var} in {}", path.display()),
        }
    }
}

/// A key that could not be found, with where chatd looked (never a value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no key: looked in {looked}")]
pub struct KeyMissing {
    /// Human-readable list of the places tried.
    pub looked: String,
}

/// Looks up `var` in the environment, then in the `.env` file `file` when given.
///
/// Empty values count as unset in both places.
pub fn resolve(var: &str, file: Option<&Path>) -> Result<(Secret, KeySource), KeyMissing> {
    resolve_with(var, file, |name| std::env::var(name).ok())
}

/// [`resolve`] with an injectable environment, for tests.
pub fn resolve_with(
    var: &str,
    file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Lookup {
    if let Some(value) = env(var).filter(|v| !v.trim().is_empty()) {
        return Ok((Secret::new(value.trim()), KeySource::Env(var.to_owned())));
    }
    let mut looked = format!("environment variable {var}");
    if let Some(path) = file {
        match read_env_file(path, var) {
            Ok(Some(value)) => {
                return Ok((
                    Secret::new(value),
                    KeySource::File {
                        var: var.to_owned(),
                        path: path.to_owned(),
                    },
                ));
            }
            Ok(None) => looked.push_str(&format!(" and {var} in {}", path.display())),
            Err(reason) => looked.push_str(&format!(" and {} ({reason})", path.display())),
        }
    }
    Err(KeyMissing { looked })
}

/// A key lookup's outcome: the key and where it was found, or where chatd looked.
pub type Lookup = Result<(Secret, KeySource), KeyMissing>;

/// Every credential a config names, looked up once: reading the environment and `.env`
/// files happens here, before a snapshot is built from them.
#[derive(Debug, Default)]
pub struct Credentials {
    /// Provider → its key lookup, for every provider with a `key_env`.
    pub providers: BTreeMap<String, Lookup>,
    /// (provider, index in its `endpoints`) → the key lookup of an endpoint with a `key_env`
    /// of its own.
    pub endpoints: BTreeMap<(String, usize), Lookup>,
    /// The admin token's lookup, when the admin API is enabled.
    pub admin_token: Option<Lookup>,
}

impl Credentials {
    /// Looks up every key and token `config` names.
    pub fn resolve(config: &Config) -> Credentials {
        Credentials::resolve_with(config, |name| std::env::var(name).ok())
    }

    /// [`Credentials::resolve`] with an injectable environment, for tests.
    pub fn resolve_with(config: &Config, env: impl Fn(&str) -> Option<String>) -> Credentials {
        let providers = config
            .chatd
            .providers
            .iter()
            .filter_map(|(name, p)| {
                let var = p.key_env.as_deref()?;
                Some((name.clone(), resolve_with(var, p.key_file.as_deref(), &env)))
            })
            .collect();
        let endpoints = config
            .chatd
            .providers
            .iter()
            .flat_map(|(name, p)| {
                p.endpoints.iter().enumerate().filter_map(|(i, e)| {
                    let var = e.key_env.as_deref()?;
                    Some((
                        (name.clone(), i),
                        resolve_with(var, e.key_file.as_deref(), &env),
                    ))
                })
            })
            .collect();
        let admin = &config.chatd.admin;
        let admin_token = admin
            .enabled
            .then(|| resolve_with(&admin.token_env, admin.token_file.as_deref(), &env));
        Credentials {
            providers,
            endpoints,
            admin_token,
        }
    }

    /// Every secret found, for scrubbing them from upstream text.
    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        self.providers
            .values()
            .chain(self.endpoints.values())
            .chain(&self.admin_token)
            .filter_map(|lookup| lookup.as_ref().ok().map(|(secret, _)| secret))
    }
}

/// Reads one variable from a `.env` file without touching the process environment.
fn read_env_file(path: &Path, var: &str) -> Result<Option<String>, String> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "not found".to_owned(),
        kind => kind.to_string(),
    })?;
    // Windows editors may start the file with a byte order mark, which is not dotenv syntax.
    let text = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
    let mut found = None;
    let mut rejected = 0;
    for item in dotenvy::from_read_iter(text) {
        match item {
            Ok((name, value)) => {
                if name == var && !value.trim().is_empty() {
                    found = Some(value.trim().to_owned());
                }
            }
            // A malformed line elsewhere must not hide a valid key. Its error quotes the
            // line (possibly another secret), so it is only counted.
            Err(_) => rejected += 1,
        }
    }
    match (found, rejected) {
        (Some(value), _) => Ok(Some(value)),
        (None, 0) => Ok(None),
        (None, n) => Err(format!(
            "{var} not found; {n} part(s) of the file are not dotenv syntax: an unquoted value \
             with spaces, invalid UTF-8, or a quote left open (which swallows every line after it)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn environment_wins_over_file() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "K=from-file").unwrap();
        let (key, src) = resolve_with("K", Some(f.path()), |_| Some("from-env".into())).unwrap();
        assert_eq!(key.expose(), "from-env");
        assert_eq!(src, KeySource::Env("K".into()));
    }

    #[test]
    fn empty_env_falls_back_to_file_with_dotenv_syntax() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "# comment\nOTHER=x\nexport K=\"quoted value\"").unwrap();
        let (key, src) = resolve_with("K", Some(f.path()), |_| Some("  ".into())).unwrap();
        assert_eq!(key.expose(), "quoted value");
        assert!(matches!(src, KeySource::File { .. }));
    }

    #[test]
    fn missing_everywhere_names_places_not_values() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "OTHER=secret-value").unwrap();
        let err = resolve_with("K", Some(f.path()), no_env).unwrap_err();
        assert!(err.looked.contains("environment variable K"));
        assert!(err.looked.contains(&f.path().display().to_string()));
        assert!(!err.to_string().contains("secret-value"));

        let err = resolve_with("K", Some(Path::new("/nonexistent/x.env")), no_env).unwrap_err();
        assert!(err.looked.contains("(not found)"), "{}", err.looked);
    }

    #[test]
    fn a_file_that_is_not_dotenv_syntax_says_so_without_quoting_it() {
        for text in [
            &b"A=\"secret-unclosed\nK=value\n"[..],
            b"K=sk secret-with space\n",
            b"K=\xff\xfe\n",
        ] {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            f.write_all(text).unwrap();
            let err = resolve_with("K", Some(f.path()), no_env).unwrap_err();
            assert!(err.looked.contains("not dotenv syntax"), "{}", err.looked);
            assert!(!err.looked.contains("secret"), "{}", err.looked);
        }
        // A byte order mark (Windows editors) is not an error, nor is a bad line elsewhere.
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"\xef\xbb\xbfK=from-bom-file\nB=x y\n")
            .unwrap();
        let (key, _) = resolve_with("K", Some(f.path()), no_env).unwrap();
        assert_eq!(key.expose(), "from-bom-file");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("sk-live-123");
        assert_eq!(format!("{s}"), "***");
        assert!(!format!("{s:?}").contains("sk-live"));
    }
}
