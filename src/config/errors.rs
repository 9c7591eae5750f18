//! Configuration errors: each located by its path in the file, and the accumulator that every
//! section's validation adds to, so that one run reports them all.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_norway::Value;

/// One configuration problem, located by its path in the file.
///
/// The message may quote what the file says (a value it could not parse, in backticks), so it goes to
/// the operator's terminal and log, never to `/readyz`, which names only the `path`. Built through
/// [`ConfigError::new`], whose message shows no URL credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    /// A problem at `path` (empty for the file as a whole); any URL's userinfo in `message` is hidden.
    pub fn new(path: impl Into<String>, message: impl AsRef<str>) -> Self {
        Self {
            path: path.into(),
            message: crate::redact::url_credentials(message.as_ref()).into_owned(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a configuration, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// The problems found so far, in the order found: every section's validation adds its own and goes
/// on, so that one run reports them all.
#[derive(Default)]
pub(super) struct Errors(pub(super) Vec<ConfigError>);

impl Errors {
    pub(super) fn push(&mut self, path: impl Into<String>, message: impl AsRef<str>) {
        self.0.push(ConfigError::new(path, message));
    }

    /// Deserializes one section, recording the first error inside it with its full path.
    pub(super) fn deserialize<T: DeserializeOwned>(
        &mut self,
        path: &str,
        value: Value,
    ) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(parsed) => Some(parsed),
            Err(error) => {
                let inner = error.path().to_string();
                let full = match (path.is_empty(), inner.as_str()) {
                    (_, ".") => path.to_owned(),
                    (true, _) => inner,
                    (false, inner) if inner.starts_with('[') => format!("{path}{inner}"),
                    (false, inner) => format!("{path}.{inner}"),
                };
                self.push(full, error.into_inner().to_string());
                None
            }
        }
    }

    pub(super) fn section<T: DeserializeOwned + Default>(
        &mut self,
        path: &str,
        value: Option<Value>,
    ) -> Option<T> {
        match value {
            None | Some(Value::Null) => Some(T::default()),
            Some(value) => self.deserialize(path, value),
        }
    }
}
