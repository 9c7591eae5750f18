//! Verdict: an authorization decision service for API gateways.
//!
//! An Apigee proxy posts each client request to `POST /v1/decide`; Verdict verifies the client's
//! credential, evaluates Cedar policies and answers a JSON decision. A tour of the crate:
//!
//! - [`config`]: the YAML file, parsed into raw structs and validated into a [`config::Config`].
//! - [`keys`]: issuer signing keys: discovery, JWKS fetching, refresh, unknown-`kid` cooldown.
//! - [`token`]: bearer extraction and JWT verification, with the verified-token cache.
//! - [`policy`]: Cedar policy sets and the entity model of one request.
//! - [`decision`]: the engine joining verification and policy into a [`decision::Decision`].
//! - [`offline`]: decisions from given claims, for `verdict test` and `verdict decide`.
//! - [`api`]: the HTTP routes, wire types, caller authentication, load shedding and deadline.
//! - [`app`]: building, binding and running the service; [`server`]: the accept loop and draining.
//! - [`decision_log`]: one JSON line per decision; [`metrics`]: Prometheus metrics.
//! - [`redact`]: URL credentials kept out of logs, errors and `/readyz`.
//! - [`reload`]: re-reading the configuration and policies on SIGHUP or file change, swapped in whole.
//! - [`demo`]: the embedded demo default and the signing keys tests and benchmarks use.
//! - [`cli`], [`telemetry`], [`clock`], [`digest`], [`strict_json`]: the command line, logs and
//!   traces, time, hashing, and JSON without duplicate keys.

pub mod api;
pub mod app;
pub mod callers;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credential;
pub mod decision;
pub mod decision_log;
pub mod demo;
pub mod digest;
pub mod fronts;
pub mod jwks;
pub mod metrics;
pub mod offline;
pub mod outbound;
pub mod policy;
pub mod redact;
pub mod reload;
pub mod server;
pub mod state;
pub mod strict_json;
pub mod telemetry;
