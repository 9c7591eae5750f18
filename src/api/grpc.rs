//! The gRPC services on the API listener: Envoy's `envoy.service.auth.v3.Authorization` and Apigee's
//! `apigee.ExternalCalloutService`, each a front ([`crate::fronts::ext_authz`],
//! [`crate::fronts::external_callout`]) behind the same layers as every callout. Also how a layer's
//! refusal reads in gRPC: a trailers-only answer with the status code of its cause, and the caller's
//! deadline (`grpc-timeout`).

use std::time::Duration;

use axum::Router;
use axum::response::Response;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use http::HeaderMap;
use tonic::{Code, Status};

use super::Callout;
use super::error::{ApiError, Rejected};
use crate::fronts::external_callout::proto::MessageContext;
use crate::fronts::external_callout::proto::external_callout_service_server::{
    ExternalCalloutService, ExternalCalloutServiceServer,
};
use crate::fronts::{Front, ext_authz, external_callout};
use crate::state::AppState;

/// The routes of both services; a method a service does not have is `UNIMPLEMENTED`.
pub(super) fn services(state: &AppState, max_message_bytes: usize) -> Router<AppState> {
    let fronts = Services {
        state: state.clone(),
    };
    let authorization =
        AuthorizationServer::new(fronts.clone()).max_decoding_message_size(max_message_bytes);
    let external_callout =
        ExternalCalloutServiceServer::new(fronts).max_decoding_message_size(max_message_bytes);
    Router::new()
        .route_service(
            "/envoy.service.auth.v3.Authorization/{method}",
            authorization,
        )
        .route_service("/apigee.ExternalCalloutService/{method}", external_callout)
}

/// Both services, over the running state.
#[derive(Debug, Clone)]
struct Services {
    state: AppState,
}

impl Services {
    /// The callout the layers prepared for `request`, taken out of its extensions.
    fn callout<T>(&self, request: &mut tonic::Request<T>) -> Result<Callout, Status> {
        Callout::from_extensions(&self.state, request.extensions_mut())
            .ok_or_else(|| Status::internal("the callout was not prepared"))
    }
}

#[tonic::async_trait]
impl Authorization for Services {
    async fn check(
        &self,
        mut request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, Status> {
        let callout = self.callout(&mut request)?;
        let settings = &callout.generation.forward_auth;
        let input = match ext_authz::input(request.get_ref(), settings) {
            Ok(input) => input,
            Err(error) => {
                let mut response = tonic::Response::new(ext_authz::invalid(&error));
                response
                    .extensions_mut()
                    .insert(Rejected(ApiError::BadRequest(String::new()).reason()));
                return Ok(response);
            }
        };
        let decision = callout.decide(&input, Front::ExtAuthz).await;
        let identity_headers = callout.generation.engine.upstream_headers();
        Ok(tonic::Response::new(ext_authz::answer(
            &decision,
            identity_headers,
        )))
    }
}

#[tonic::async_trait]
impl ExternalCalloutService for Services {
    async fn process_message(
        &self,
        mut request: tonic::Request<MessageContext>,
    ) -> Result<tonic::Response<MessageContext>, Status> {
        let callout = self.callout(&mut request)?;
        let settings = &callout.generation.forward_auth;
        let message = request.into_inner();
        // A message that cannot be decided on is a callout failure: the flow faults, and denies.
        let input = external_callout::input(&message, settings)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        let decision = callout.decide(&input, Front::ExternalCallout).await;
        let identity_headers = callout.generation.engine.upstream_headers();
        Ok(tonic::Response::new(external_callout::answer(
            message,
            &decision,
            identity_headers,
        )))
    }
}

/// A layer's refusal as a gRPC answer: trailers-only, with the status code of its cause and its
/// [`Rejected`] reason. Shedding is `UNAVAILABLE`, which gRPC clients retry.
pub(super) fn refusal(error: &ApiError) -> Response {
    let code = match error {
        ApiError::BadRequest(_) | ApiError::UnsupportedMediaType => Code::InvalidArgument,
        ApiError::UnauthenticatedCaller | ApiError::UnauthenticatedProxy => Code::Unauthenticated,
        ApiError::TooLarge => Code::ResourceExhausted,
        ApiError::Overloaded => Code::Unavailable,
        ApiError::TimedOut => Code::DeadlineExceeded,
    };
    let mut response = Status::new(code, error.to_string()).into_http::<axum::body::Body>();
    response.extensions_mut().insert(Rejected(error.reason()));
    response
}

/// Why a gRPC answer that carries its status in its headers (trailers-only) failed, for
/// `verdict_requests_rejected_total`; `None` for any other answer. Covers what the services refuse
/// themselves, before or in a handler: a message over the size limit, one that does not decode, a
/// method there is not, a message that cannot be decided on.
pub(super) fn rejection(response: &Response) -> Option<&'static str> {
    let code = response.headers().get("grpc-status")?.to_str().ok()?;
    let error = match Code::from_i32(code.parse().ok()?) {
        Code::Ok => return None,
        Code::OutOfRange | Code::ResourceExhausted => ApiError::TooLarge,
        _ => ApiError::BadRequest(String::new()),
    };
    Some(error.reason())
}

/// The caller's deadline, from `grpc-timeout`: at most eight digits and a unit (`H`, `M`, `S`, `m`,
/// `u`, `n`). A value that is not one is no deadline.
pub(super) fn deadline(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let unit_at = value.len().checked_sub(1)?;
    let (digits, unit) = (value.get(..unit_at)?, value.get(unit_at..)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_read_as_grpc_writes_them() {
        let cases = [
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("3S", Some(Duration::from_secs(3))),
            ("250m", Some(Duration::from_millis(250))),
            ("99999999u", Some(Duration::from_micros(99_999_999))),
            ("5n", Some(Duration::from_nanos(5))),
            ("123456789m", None),
            ("m", None),
            ("10", None),
            ("10x", None),
            ("-1S", None),
            ("1.5S", None),
            ("", None),
        ];
        for (value, expected) in cases {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-timeout", value.parse().expect("a header value"));
            assert_eq!(deadline(&headers), expected, "grpc-timeout: {value:?}");
        }
        assert_eq!(deadline(&HeaderMap::new()), None);
    }
}
