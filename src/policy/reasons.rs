//! Deny reasons from policy annotations: `@error`, `@scope` and `@description` decide what a deny
//! reports to the client (README, "Deny reasons").

use cedar_policy::Effect;

/// The annotation naming the error code a deny reports.
const ERROR: &str = "error";
/// The annotation naming the scopes a deny asks for, space-separated.
const SCOPE: &str = "scope";
/// The annotation giving the deny's `error_description`.
const DESCRIPTION: &str = "description";
/// The longest `@description` accepted.
const MAX_DESCRIPTION_CHARS: usize = 200;

/// The error code of a policy deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DenyCode {
    #[default]
    AccessDenied,
    InsufficientScope,
    InvalidToken,
    InvalidRequest,
}

impl DenyCode {
    const ALL: [Self; 4] = [
        Self::AccessDenied,
        Self::InsufficientScope,
        Self::InvalidToken,
        Self::InvalidRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccessDenied => "access_denied",
            Self::InsufficientScope => "insufficient_scope",
            Self::InvalidToken => "invalid_token",
            Self::InvalidRequest => "invalid_request",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == name)
    }
}

/// What a deny reports: its error code, the scopes it asks for and a description for the client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DenyReason {
    pub code: DenyCode,
    /// Space-separated scopes, for the challenge's `scope` attribute.
    pub scope: Option<String>,
    pub description: Option<String>,
}

impl DenyReason {
    /// The scopes of `@scope`, one by one.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.iter().flat_map(|scope| scope.split(' '))
    }
}

/// Reads a policy's deny-reason annotations: `None` when it has none.
///
/// A `permit` may carry them only with `@scope`, since the one way a permit that did not apply can
/// explain a deny is "it would have applied with these scopes".
pub(super) fn read(policy: &cedar_policy::Policy) -> Result<Option<DenyReason>, String> {
    let error = policy.annotation(ERROR);
    let scope = policy.annotation(SCOPE);
    let description = policy.annotation(DESCRIPTION);
    if error.is_none() && scope.is_none() && description.is_none() {
        return Ok(None);
    }
    let scope = scope.map(normalize_scope).transpose()?;
    let code = match error {
        Some(name) => DenyCode::parse(name).ok_or_else(|| {
            let known: Vec<&str> = DenyCode::ALL.iter().map(|code| code.as_str()).collect();
            format!(
                "unknown error code `{name}` in @{ERROR}; expected one of {}",
                known.join(", ")
            )
        })?,
        None if scope.is_some() => DenyCode::InsufficientScope,
        None => DenyCode::AccessDenied,
    };
    if let Some(description) = description {
        check_description(description)?;
    }
    if policy.effect() == Effect::Permit && scope.is_none() {
        return Err(format!(
            "@{ERROR} and @{DESCRIPTION} on a permit need @{SCOPE}: a permit that did not apply \
             explains a deny only by the scopes that would have let it apply"
        ));
    }
    Ok(Some(DenyReason {
        code,
        scope,
        description: description.map(str::to_owned),
    }))
}

/// Checks the scopes of `@scope` against RFC 6750's `scope-token` and joins them with single spaces.
fn normalize_scope(scope: &str) -> Result<String, String> {
    let tokens: Vec<&str> = scope.split_ascii_whitespace().collect();
    if tokens.is_empty() {
        return Err(format!("@{SCOPE} is empty"));
    }
    for token in &tokens {
        if let Some(bad) = token
            .chars()
            .find(|&c| !matches!(c, '\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e'))
        {
            return Err(format!(
                "@{SCOPE}: `{token}` holds {bad:?}, which a scope token may not contain"
            ));
        }
    }
    Ok(tokens.join(" "))
}

/// An `error_description` must fit RFC 6750's character set, since it goes into `WWW-Authenticate`.
fn check_description(description: &str) -> Result<(), String> {
    if description.is_empty() || description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(format!(
            "@{DESCRIPTION} must hold 1 to {MAX_DESCRIPTION_CHARS} characters"
        ));
    }
    match description
        .chars()
        .find(|&c| !matches!(c, '\x20' | '\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e'))
    {
        Some(bad) => Err(format!(
            "@{DESCRIPTION} holds {bad:?}; it allows printable ASCII except `\"` and `\\`"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn reason(text: &str) -> Result<Option<DenyReason>, String> {
        let policy = cedar_policy::Policy::from_str(text).map_err(|error| error.to_string())?;
        read(&policy)
    }

    #[test]
    fn annotations_become_a_reason() {
        assert_eq!(reason("forbid(principal, action, resource);"), Ok(None));
        assert_eq!(
            reason(
                "@scope(\" orders:write   orders:admin \") forbid(principal, action, resource);"
            ),
            Ok(Some(DenyReason {
                code: DenyCode::InsufficientScope,
                scope: Some("orders:write orders:admin".into()),
                description: None,
            }))
        );
        assert_eq!(
            reason(
                "@error(\"invalid_token\") @description(\"step up\") forbid(principal, action, resource);"
            ),
            Ok(Some(DenyReason {
                code: DenyCode::InvalidToken,
                scope: None,
                description: Some("step up".into()),
            }))
        );
    }

    #[test]
    fn bad_annotations_are_refused_with_a_reason() {
        let cases = [
            (
                "@error(\"nope\") forbid(principal, action, resource);",
                "unknown error code `nope`",
            ),
            (
                "@scope(\"\") forbid(principal, action, resource);",
                "@scope is empty",
            ),
            (
                "@scope(\"a\\\"b\") forbid(principal, action, resource);",
                "may not contain",
            ),
            (
                "@description(\"say \\\"no\\\"\") forbid(principal, action, resource);",
                "printable ASCII",
            ),
            (
                "@error(\"access_denied\") permit(principal, action, resource);",
                "need @scope",
            ),
        ];
        for (text, expected) in cases {
            match reason(text) {
                Err(message) => assert!(message.contains(expected), "{text}: {message}"),
                Ok(reason) => panic!("{text}: accepted as {reason:?}"),
            }
        }
    }
}
