//! URL credentials kept out of everything Verdict shows: log lines, error messages, `/readyz` and the
//! output of `verdict check`.
//!
//! A configured or discovered URL may carry `user:password@` (a JWKS behind Basic authentication, an
//! introspection endpoint, an OTLP collector). Whatever displays a [`Url`] displays a [`RedactedUrl`]
//! instead, which writes the userinfo as `***`: `https://***@idp.example.com/jwks`. Text that may quote
//! a URL Verdict could not parse (a configuration message, a third-party error) goes through
//! [`url_credentials`], which does the same to anything shaped like `scheme://userinfo@`. The log
//! writer applies it to every line as a last line of defence (`telemetry`).

use std::borrow::Cow;
use std::fmt;

use reqwest::Url;

/// What replaces a URL's userinfo.
const HIDDEN: &str = "***";

/// A URL as it may be shown: its userinfo, if any, replaced by `***`. Built only from a [`Url`], so
/// whatever holds one holds no credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactedUrl(String);

impl RedactedUrl {
    pub fn new(url: &Url) -> Self {
        if url.username().is_empty() && url.password().is_none() {
            return Self(url.to_string());
        }
        let mut bare = url.clone();
        if bare.set_username("").is_ok()
            && bare.set_password(None).is_ok()
            && let Some((scheme, rest)) = bare.as_str().split_once("://")
        {
            return Self(format!("{scheme}://{HIDDEN}@{rest}"));
        }
        // Unreachable for a URL with userinfo (it has an authority), but never show it raw.
        Self(url_credentials(url.as_str()).into_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&Url> for RedactedUrl {
    fn from(url: &Url) -> Self {
        Self::new(url)
    }
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `url` as it may be shown.
pub fn redacted(url: &Url) -> RedactedUrl {
    RedactedUrl::new(url)
}

/// `text` with the userinfo of every `scheme://userinfo@host` in it replaced by `***`.
///
/// The text around a URL is unknown, and an unparsed password may hold `/`, `?` or `#`, so the userinfo
/// is taken to run to the last `@` before the URL visibly ends (whitespace, a quote or backtick, a
/// control character). That may hide a path with an `@` in it too; it never shows a password.
pub fn url_credentials(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some((before, after)) = rest.split_once("://") {
        out.push_str(before);
        out.push_str("://");
        let end = after
            .find(|c: char| {
                c.is_whitespace() || c.is_control() || matches!(c, '`' | '"' | '\'' | '<' | '>')
            })
            .unwrap_or(after.len());
        match after.get(..end).and_then(|url| url.rfind('@')) {
            Some(at) if at > 0 => {
                out.push_str(HIDDEN);
                rest = after.get(at..).unwrap_or_default();
                changed = true;
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_shows_no_userinfo() {
        let cases = [
            (
                "https://user:pass@idp.example.com/jwks?x=1#f",
                "https://***@idp.example.com/jwks?x=1#f",
            ),
            (
                "https://user@idp.example.com/",
                "https://***@idp.example.com/",
            ),
            (
                "https://:pass@idp.example.com/",
                "https://***@idp.example.com/",
            ),
            (
                "http://us%40er:p%2Fa%40ss@127.0.0.1:8080/a@b",
                "http://***@127.0.0.1:8080/a@b",
            ),
            (
                "https://idp.example.com/jwks",
                "https://idp.example.com/jwks",
            ),
        ];
        for (written, shown) in cases {
            let url = Url::parse(written).unwrap_or_else(|error| panic!("{written}: {error}"));
            assert_eq!(redacted(&url).to_string(), shown, "{written}");
        }
    }

    #[test]
    fn text_shows_no_url_userinfo() {
        let cases = [
            ("no url here", "no url here"),
            (
                "`https://user:pass@host/x` is not a URL",
                "`https://***@host/x` is not a URL",
            ),
            (
                "request for url (http://u:p/w#d@127.0.0.1:9/) failed",
                "request for url (http://***@127.0.0.1:9/) failed",
            ),
            (
                "two: http://a:b@one/ and \"https://c:d@two/\"",
                "two: http://***@one/ and \"https://***@two/\"",
            ),
            (
                "http://host/ and http://@host/",
                "http://host/ and http://@host/",
            ),
            (
                "{\"error\":\"`https://k:s@h/` answered\"}",
                "{\"error\":\"`https://***@h/` answered\"}",
            ),
            ("ends with http://u:p@", "ends with http://***@"),
        ];
        for (text, shown) in cases {
            assert_eq!(url_credentials(text), shown, "{text}");
        }
    }
}
