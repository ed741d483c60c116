//! Reading a provider's settings in `configure`.

use crate::prelude::*;
use serde_json::{Map, Value};

/// A provider's settings (its `[chatd.providers.NAME.settings]` table, as JSON), read key by
/// key. Each reader takes its key out; [`Settings::finish`] then refuses whatever is left, so
/// a misspelt key is an error rather than a setting silently ignored. Errors name the key.
///
/// ```ignore
/// fn configure(settings: &str) -> Result<Self, String> {
///     let mut settings = Settings::parse(settings)?;
///     let chat = settings.one_of("endpoint", &["generate", "chat"])? == Some("chat");
///     settings.finish()?;
///     Ok(OllamaCloud { chat })
/// }
/// ```
#[derive(Debug)]
pub struct Settings {
    fields: Map<String, Value>,
    known: Vec<&'static str>,
}

impl Settings {
    /// The settings in `text`, which must be a JSON object.
    pub fn parse(text: &str) -> Result<Settings, String> {
        match serde_json::from_str(text) {
            Ok(Value::Object(fields)) => Ok(Settings {
                fields,
                known: Vec::new(),
            }),
            Ok(_) => Err("settings must be a table (a JSON object)".into()),
            Err(error) => Err(format!("settings are not valid JSON: {error}")),
        }
    }

    fn take(&mut self, key: &'static str) -> Option<Value> {
        self.known.push(key);
        self.fields.remove(key)
    }

    /// The string setting `key`, if set.
    pub fn string(&mut self, key: &'static str) -> Result<Option<String>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(format!("setting {key:?} must be a string, not {other}")),
        }
    }

    /// The string setting `key`, if set, which must be one of `allowed`.
    pub fn one_of(
        &mut self,
        key: &'static str,
        allowed: &[&'static str],
    ) -> Result<Option<&'static str>, String> {
        let Some(text) = self.string(key)? else {
            return Ok(None);
        };
        match allowed.iter().find(|choice| **choice == text) {
            Some(choice) => Ok(Some(choice)),
            None => Err(format!(
                "setting {key:?} must be one of {}, not {text:?}",
                quoted_list(allowed)
            )),
        }
    }

    /// The boolean setting `key`, if set.
    pub fn bool(&mut self, key: &'static str) -> Result<Option<bool>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(value)) => Ok(Some(value)),
            Some(other) => Err(format!(
                "setting {key:?} must be true or false, not {other}"
            )),
        }
    }

    /// The whole-number setting `key`, if set, within `min..=max`.
    pub fn u32(&mut self, key: &'static str, min: u32, max: u32) -> Result<Option<u32>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(value) => match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(format!(
                    "setting {key:?} must be a whole number from {min} to {max}, not {value}"
                )),
            },
        }
    }

    /// Refuses any setting no reader asked for, naming it and the settings there are.
    pub fn finish(self) -> Result<(), String> {
        let Some(key) = self.fields.keys().next() else {
            return Ok(());
        };
        Err(if self.known.is_empty() {
            format!("unknown setting {key:?}: this adapter takes no settings")
        } else {
            format!(
                "unknown setting {key:?} (this adapter takes {})",
                quoted_list(&self.known)
            )
        })
    }
}

fn quoted_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| format!("{name:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_and_checked_by_key() {
        let mut settings =
            Settings::parse(r#"{"endpoint":"chat","levels":false,"pages":3}"#).unwrap();
        assert_eq!(
            settings.one_of("endpoint", &["generate", "chat"]),
            Ok(Some("chat"))
        );
        assert_eq!(settings.bool("levels"), Ok(Some(false)));
        assert_eq!(settings.u32("pages", 1, 20), Ok(Some(3)));
        assert_eq!(settings.string("absent"), Ok(None));
        assert_eq!(settings.finish(), Ok(()));
    }

    #[test]
    fn errors_name_the_key() {
        let mut settings = Settings::parse(r#"{"endpoint":"chats","levels":"yes","n":0}"#).unwrap();
        assert_eq!(
            settings.one_of("endpoint", &["generate", "chat"]),
            Err("setting \"endpoint\" must be one of \"generate\", \"chat\", not \"chats\"".into())
        );
        assert_eq!(
            settings.bool("levels"),
            Err("setting \"levels\" must be true or false, not \"yes\"".into())
        );
        assert_eq!(
            settings.u32("n", 1, 5),
            Err("setting \"n\" must be a whole number from 1 to 5, not 0".into())
        );
        let mut settings = Settings::parse(r#"{"endpiont":"chat"}"#).unwrap();
        settings.string("endpoint").unwrap();
        assert_eq!(
            settings.finish(),
            Err("unknown setting \"endpiont\" (this adapter takes \"endpoint\")".into())
        );
        assert_eq!(
            Settings::parse(r#"{"x":1}"#).unwrap().finish(),
            Err("unknown setting \"x\": this adapter takes no settings".into())
        );
        assert_eq!(
            Settings::parse("[]").unwrap_err(),
            "settings must be a table (a JSON object)"
        );
        assert!(
            Settings::parse("{")
                .unwrap_err()
                .starts_with("settings are not valid JSON")
        );
    }
}
