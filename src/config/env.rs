//! `${NAME}` interpolation of environment variables into configuration strings.
//!
//! Interpolation happens inside parsed YAML string scalars, never on the raw text, so a secret that
//! contains YAML syntax cannot change the file's structure.

use std::collections::HashMap;

use serde_norway::Value;

use super::errors::ConfigError;

/// Where `${NAME}` values come from. Production reads the process environment; tests pass a map, so
/// that no test has to mutate the process environment.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Environment for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Replaces `${NAME}` in every string of `value`; `$$` stands for a literal `$`.
pub(super) fn interpolate(
    value: Value,
    environment: &dyn Environment,
    errors: &mut Vec<ConfigError>,
) -> Value {
    walk(value, String::new(), environment, errors)
}

fn walk(
    value: Value,
    path: String,
    environment: &dyn Environment,
    errors: &mut Vec<ConfigError>,
) -> Value {
    match value {
        Value::String(text) => match expand(&text, environment) {
            Ok(expanded) => Value::String(expanded),
            Err(message) => {
                errors.push(ConfigError::new(path, message));
                Value::String(text)
            }
        },
        Value::Sequence(items) => Value::Sequence(
            items
                .into_iter()
                .enumerate()
                .map(|(index, item)| walk(item, format!("{path}[{index}]"), environment, errors))
                .collect(),
        ),
        Value::Mapping(mapping) => Value::Mapping(
            mapping
                .into_iter()
                .map(|(key, item)| {
                    let name = key
                        .as_str()
                        .map_or_else(|| format!("{key:?}"), str::to_owned);
                    let child = if path.is_empty() {
                        name
                    } else {
                        format!("{path}.{name}")
                    };
                    (key, walk(item, child, environment, errors))
                })
                .collect(),
        ),
        other => other,
    }
}

fn expand(text: &str, environment: &dyn Environment) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        if let Some(after) = after.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(after) = after.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| "unclosed `${` in a value".to_owned())?;
            let (name, after) = after.split_at(end);
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "`${{{name}}}` is not a valid environment variable reference"
                ));
            }
            let value = environment
                .var(name)
                .ok_or_else(|| format!("environment variable `{name}` is not set"))?;
            out.push_str(&value);
            rest = after.strip_prefix('}').unwrap_or(after);
        } else {
            out.push('$');
            rest = after.strip_prefix('$').unwrap_or(after);
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn expands_references_and_escapes() {
        let environment = env(&[("KEY", "s3cret: {not yaml}")]);
        assert_eq!(
            expand("${KEY}", &environment).ok().as_deref(),
            Some("s3cret: {not yaml}")
        );
        assert_eq!(
            expand("a-${KEY}-b", &environment).ok().as_deref(),
            Some("a-s3cret: {not yaml}-b")
        );
        assert_eq!(
            expand("cost: $$5", &environment).ok().as_deref(),
            Some("cost: $5")
        );
        assert_eq!(
            expand("plain $ sign", &environment).ok().as_deref(),
            Some("plain $ sign")
        );
    }

    #[test]
    fn reports_missing_and_malformed_references() {
        let environment = env(&[]);
        assert_eq!(
            expand("${MISSING}", &environment),
            Err("environment variable `MISSING` is not set".into())
        );
        assert!(expand("${UNCLOSED", &environment).is_err());
        assert!(expand("${BAD-NAME}", &environment).is_err());
    }
}
