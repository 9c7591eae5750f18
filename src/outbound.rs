//! Outbound HTTP: the one client, bounded GETs and POSTs, the rule that a remote endpoint is reached
//! over https (or plain http on this machine only), and the parsing of what remote endpoints send.
//! [`discovery`] reads OpenID Connect discovery documents with them.

pub mod discovery;

use std::time::Duration;

use reqwest::Url;
use reqwest::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, HeaderMap};

use crate::redact::RedactedUrl;

/// The HTTP client of every outbound request: discovery, key sets, introspection, span export.
/// Redirects are not followed.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    use anyhow::Context as _;
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("verdict/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTP client")
}

/// Discovery documents and key sets larger than this are refused.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// One fetched document and the freshness its server declared.
#[derive(Debug)]
pub struct Fetched {
    pub body: Vec<u8>,
    pub max_age: Option<Duration>,
}

/// Why a fetch failed. Messages never contain response bodies nor a URL's credentials: the URL is held
/// only as a [`RedactedUrl`], and the reasons are Verdict's own words (see [`parse_remote_json`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("request to `{url}` failed: {reason}")]
    Transport { url: RedactedUrl, reason: String },
    #[error("`{url}` answered HTTP {status}")]
    Status { url: RedactedUrl, status: u16 },
    #[error("`{url}` sent more than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { url: RedactedUrl },
    #[error("`{url}` sent an unusable document: {reason}")]
    Invalid { url: RedactedUrl, reason: String },
    #[error("the issuer has no key set")]
    NoKeySet,
}

impl FetchError {
    /// `url` sent a document that cannot be used, for `reason`, which must not quote the document.
    pub fn invalid(url: &Url, reason: impl Into<String>) -> Self {
        Self::Invalid {
            url: RedactedUrl::new(url),
            reason: reason.into(),
        }
    }

    fn transport(url: &Url, error: reqwest::Error) -> Self {
        Self::Transport {
            url: RedactedUrl::new(url),
            reason: describe(error),
        }
    }

    fn status(url: &Url, status: reqwest::StatusCode) -> Self {
        Self::Status {
            url: RedactedUrl::new(url),
            status: status.as_u16(),
        }
    }
}

/// Parses a document a remote endpoint sent (a discovery document, a key set, an introspection
/// answer). On failure it says what kind of problem it was and where, never what the document said:
/// `serde_json`'s messages quote the offending value (`invalid type: string "eyJ…"`), and an answer
/// may echo the very token it was asked about.
pub fn parse_remote_json<T: serde::de::DeserializeOwned>(document: &[u8]) -> Result<T, String> {
    // Which copy of a duplicated key wins differs between parsers (RFC 8259 §4), so a document with
    // one is refused, without naming the key.
    crate::strict_json::check_unique_keys(document).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => "JSON with a duplicate key".to_owned(),
        _ => describe_json_error(&error),
    })?;
    serde_json::from_slice(document).map_err(|error| describe_json_error(&error))
}

/// Why a URL may not be fetched: Verdict reaches remote endpoints (discovery, key sets,
/// introspection) over https, and over plain http only on this machine (development and tests).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unfetchable {
    #[error("must use https (plain http is allowed only on loopback)")]
    PlainHttp,
    #[error("unsupported URL scheme `{0}`")]
    Scheme(String),
}

/// Whether `url` may be fetched: https anywhere, plain http on loopback only.
pub fn fetchable(url: &Url) -> Result<(), Unfetchable> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(Unfetchable::PlainHttp),
        scheme => Err(Unfetchable::Scheme(scheme.to_owned())),
    }
}

/// Whether `url` names this machine: `localhost` or a loopback address.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain == "localhost",
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        None => false,
    }
}

/// A `serde_json` error by its category and position only (see [`parse_remote_json`]).
pub fn describe_json_error(error: &serde_json::Error) -> String {
    let what = match error.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => {
            "JSON of the wrong shape (a missing field or a value of the wrong type)"
        }
        serde_json::error::Category::Eof => "JSON cut short",
    };
    // A value deserialized from a `serde_json::Value` has no position.
    if error.line() == 0 {
        what.to_owned()
    } else {
        format!("{what} at line {} column {}", error.line(), error.column())
    }
}

/// GETs `url` as JSON, reading at most [`MAX_DOCUMENT_BYTES`].
pub async fn get_json(
    client: &reqwest::Client,
    url: &Url,
    timeout: Duration,
) -> Result<Fetched, FetchError> {
    let transport = |error: reqwest::Error| FetchError::transport(url, error);
    let mut response = client
        .get(url.clone())
        .header(ACCEPT, "application/json")
        .timeout(timeout)
        .send()
        .await
        .map_err(transport)?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::status(url, status));
    }
    let max_age = max_age(response.headers());
    let body = read_body(&mut response, url).await?;
    Ok(Fetched { body, max_age })
}

/// POSTs a form with an `Accept: application/json`, as an OAuth client does (RFC 6749 §2.3.1 client
/// authentication: `basic` as HTTP Basic, else whatever `form` carries), and reads a bounded body. Only
/// HTTP 200 counts (RFC 7662 §2.2): a 201, 202 or 204 is no introspection answer.
pub async fn post_form(
    client: &reqwest::Client,
    url: &Url,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
    timeout: Duration,
) -> Result<Vec<u8>, FetchError> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut request = client
        .post(url.clone())
        .header(ACCEPT, "application/json")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .timeout(timeout);
    if let Some((user, password)) = basic {
        // RFC 6749 §2.3.1: both parts form-urlencoded before Basic encoding.
        let encode =
            |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
        request = request.basic_auth(encode(user), Some(encode(password)));
    }
    let mut response = request
        .send()
        .await
        .map_err(|error| FetchError::transport(url, error))?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        return Err(FetchError::status(url, status));
    }
    read_body(&mut response, url).await
}

/// The body, refused past [`MAX_DOCUMENT_BYTES`] without reading further.
async fn read_body(response: &mut reqwest::Response, url: &Url) -> Result<Vec<u8>, FetchError> {
    let too_large = || FetchError::TooLarge {
        url: RedactedUrl::new(url),
    };
    if response
        .content_length()
        .is_some_and(|length| length > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| FetchError::transport(url, error))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `max-age` of a `Cache-Control` header; `no-store` and `no-cache` count as zero.
fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(CACHE_CONTROL)?.to_str().ok()?;
    let mut age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(seconds) = lower.strip_prefix("max-age=") {
            age = seconds
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    age
}

/// A transport error without the URL (which the caller already names, redacted) and without nested
/// noise.
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "connection failed".to_owned()
    } else {
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(inner) = source {
            message = inner.to_string();
            source = inner.source();
        }
        // The innermost error is another crate's words; a URL in them is shown without credentials.
        crate::redact::url_credentials(&message).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn remote_endpoints_are_https_or_on_this_machine() {
        let cases = [
            ("https://idp.example.com/keys", Ok(())),
            ("https://10.0.0.1/keys", Ok(())),
            ("http://localhost:8080/keys", Ok(())),
            ("http://127.0.0.1/keys", Ok(())),
            ("http://127.9.9.9/keys", Ok(())),
            ("http://[::1]:80/keys", Ok(())),
            ("http://idp.example.com/keys", Err(Unfetchable::PlainHttp)),
            (
                "http://localhost.example.com/keys",
                Err(Unfetchable::PlainHttp),
            ),
            ("http://10.0.0.1/keys", Err(Unfetchable::PlainHttp)),
            (
                "http://[::ffff:127.0.0.1]/keys",
                Err(Unfetchable::PlainHttp),
            ),
            (
                "ftp://localhost/keys",
                Err(Unfetchable::Scheme("ftp".into())),
            ),
            ("file:///etc/keys", Err(Unfetchable::Scheme("file".into()))),
        ];
        for (url, expected) in cases {
            assert_eq!(fetchable(&Url::parse(url).unwrap()), expected, "{url}");
        }
    }

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("")),
        );
        headers
    }

    #[test]
    fn a_bad_remote_document_is_described_without_its_content() {
        let secret = "eyJhbGciOiJSUzI1NiJ9.echoed-token";
        let cases = [
            (format!("\"{secret}\""), "JSON of the wrong shape"),
            (
                format!("{{\"keys\": \"{secret}\"}}"),
                "JSON of the wrong shape",
            ),
            (format!("{{\"keys\": [], \"{secret}\""), "JSON cut short"),
            (secret.to_owned(), "not valid JSON at line 1 column 1"),
            (
                r#"{"keys": [{"kty": 1234567890123}]}"#.to_owned(),
                "wrong shape",
            ),
        ];
        #[derive(Debug, serde::Deserialize)]
        struct KeySet {
            #[expect(dead_code, reason = "only the parse is tested")]
            keys: Vec<Key>,
        }
        #[derive(Debug, serde::Deserialize)]
        struct Key {
            #[expect(dead_code, reason = "only the parse is tested")]
            kty: String,
        }
        for (document, expected) in cases {
            let reason = parse_remote_json::<KeySet>(document.as_bytes())
                .err()
                .unwrap_or_default();
            assert!(reason.contains(expected), "{document}: {reason}");
            for quoted in [secret, "echoed", "1234567890123"] {
                assert!(!reason.contains(quoted), "{document}: {reason}");
            }
        }
        let value_error =
            serde_json::from_value::<Key>(serde_json::json!({ "kty": 1_234_567_890_123_u64 }))
                .err()
                .map(|error| describe_json_error(&error))
                .unwrap_or_default();
        assert_eq!(
            value_error,
            "JSON of the wrong shape (a missing field or a value of the wrong type)"
        );
    }

    #[test]
    fn reads_max_age_among_other_directives() {
        assert_eq!(
            max_age(&headers("public, max-age=3600, must-revalidate")),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(max_age(&headers("no-store")), Some(Duration::ZERO));
        assert_eq!(max_age(&headers("public")), None);
        assert_eq!(max_age(&HeaderMap::new()), None);
    }
}
