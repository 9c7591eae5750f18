//! Human-readable durations in the configuration (`30s`, `5m`, `1h 30m`).

use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// A duration written the way people write them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|error| {
                de::Error::custom(format!(
                    "`{text}` is not a duration ({error}); write e.g. `30s` or `5m`"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_operators_write() {
        let parse = |text: &str| serde_norway::from_str::<HumanDuration>(text).map(|d| d.0);
        assert_eq!(parse("30s").ok(), Some(Duration::from_secs(30)));
        assert_eq!(parse("5m").ok(), Some(Duration::from_secs(300)));
        assert_eq!(parse("1h 30m").ok(), Some(Duration::from_secs(5400)));
        assert!(parse("thirty seconds").is_err());
        assert!(
            parse("30").is_err(),
            "a bare number has no unit and is refused"
        );
    }
}
