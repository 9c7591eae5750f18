//! The service's integration tests: one binary, with shared fixtures in `helpers`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice,
    reason = "tests fail by panicking; the no-panic lints guard the request path"
)]
#![allow(
    unreachable_pub,
    reason = "a test binary exports nothing: `pub` marks what the helpers give the test modules"
)]

mod apikeys;
mod attacks;
mod bodies;
mod bundles;
mod callers;
mod cli;
mod config;
mod deploy;
mod envoy;
mod forward_auth;
mod fuzz;
mod generations;
mod grpc;
mod haproxy;
mod helpers;
mod http2;
mod introspection;
mod jwks;
mod nginx;
mod oidc;
mod operations;
mod paths;
mod policy;
mod reload;
mod secrets;
mod tls;
mod toolkit;
mod traefik;
