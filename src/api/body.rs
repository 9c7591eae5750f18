//! The body of a JSON callout: [`StrictJson`], which takes only a JSON object within the body limit,
//! its rejections as [`ApiError`]s.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use super::error::ApiError;

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(error) => {
                Self::BadRequest(describe_serde_error(&error.body_text()))
            }
            JsonRejection::JsonSyntaxError(error) => {
                Self::BadRequest(describe_serde_error(&error.body_text()))
            }
            other => Self::BadRequest(other.body_text()),
        }
    }
}

/// axum prefixes serde's message ("Failed to deserialize the JSON body into the target type: ..."); the
/// caller needs only serde's part, which names the field.
fn describe_serde_error(text: &str) -> String {
    let message = text
        .rsplit_once("target type: ")
        .map_or(text, |(_, message)| message);
    let message = message
        .strip_prefix("Failed to parse the request body as JSON: ")
        .unwrap_or(message);
    format!("malformed request body: {message}")
}

/// `Json<T>` that takes only a JSON object, with rejections as [`ApiError`]s.
///
/// serde's derived structs also accept a JSON array, read by position, which would bypass
/// `deny_unknown_fields`; the body's first byte must therefore open an object. A key twice is for `T`
/// to refuse as it reads, in the one parse of the body (DESIGN §2; `DecideRequest` does).
#[derive(Debug)]
pub(super) struct StrictJson<T>(pub(super) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for StrictJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge
                } else {
                    ApiError::BadRequest(rejection.body_text())
                }
            })?;
        if bytes.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::BadRequest(
                "malformed request body: expected a JSON object".into(),
            ));
        }
        match serde_json::from_slice(&bytes) {
            Ok(value) => Ok(Self(value)),
            // Parsed again for the error: axum's parse names the path to the field at fault
            // (`apigee.env`), but tracks it for every field of every body, and bodies are rarely wrong.
            Err(error) => Err(match Json::<T>::from_bytes(&bytes) {
                Err(rejection) => rejection.into(),
                Ok(_) => ApiError::BadRequest(describe_serde_error(&error.to_string())),
            }),
        }
    }
}

/// `application/json`, or an `application/*+json` type, parameters aside.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    // Compared case-insensitively in place: this runs on every callout.
    let suffix = subtype.as_bytes().get(subtype.len().saturating_sub(5)..);
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || suffix.is_some_and(|suffix| suffix.eq_ignore_ascii_case(b"+json")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types_match_case_insensitively_parameters_aside() {
        let cases = [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            (" application/json ;charset=utf-8", true),
            ("application/problem+json", true),
            ("APPLICATION/VND.API+JSON", true),
            ("application/+json", true),
            ("application/jsonx", false),
            ("application/x-json", false),
            ("text/json", false),
            ("applicationjson", false),
            ("application/", false),
            ("", false),
        ];
        for (content_type, json) in cases {
            let mut headers = HeaderMap::new();
            if let Ok(value) = content_type.parse() {
                headers.insert(header::CONTENT_TYPE, value);
            }
            assert_eq!(is_json(&headers), json, "{content_type:?}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }
}
