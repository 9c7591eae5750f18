//! The YAML configuration: parsed into raw structs, then validated into the types the service runs on.
//!
//! Loading follows "parse, don't validate": [`raw`] mirrors the file with `deny_unknown_fields`, and
//! [`Config::parse`] turns it into a [`Config`] whose fields can no longer be wrong (a compiled policy
//! set, parsed URLs, checked algorithm lists). Each top-level section and each issuer is deserialized
//! on its own so one bad entry does not hide the errors of the others; every error carries its path in
//! the file (`issuers[1].audiences: ...`). Nothing here binds a port.
//!
//! Each section is validated in a file of its own name: `issuers`, `callers`, `api_keys`, `policies`,
//! `headers` (with `realm`), `cache`, `limits`, `reload`, `tls`, `forward_auth`, and `service` for the settings kept
//! until a restart. The defaults of them all are in `defaults`; secrets are a [`Secret`].

mod api_keys;
mod cache;
mod callers;
mod defaults;
mod duration;
mod env;
mod errors;
mod forward_auth;
mod headers;
mod issuers;
mod limits;
mod policies;
mod raw;
mod reload;
mod secret;
mod service;
mod tls;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::HeaderName;
use serde_norway::Value;

pub use api_keys::ApiKeyConfig;
pub use cache::CacheConfig;
pub use callers::{CallerApiKeys, Callers, GoogleIdTokenCallers, MtlsCallers};
pub use env::{Environment, ProcessEnvironment};
pub use errors::{ConfigError, ConfigErrors};
pub use forward_auth::ForwardAuthConfig;
pub(crate) use issuers::is_hmac;
pub use issuers::{
    ClaimNames, ClientAuthMethod, IntrospectionConfig, IntrospectionEndpoint, IssuerConfig,
    JwksRefresh, KeySource,
};
pub use limits::{Limits, ServerLimits};
pub use policies::{PolicyOrigin, PolicySource};
pub use reload::ReloadConfig;
pub use secret::Secret;

use errors::Errors;
pub use service::{DecisionLogTarget, LogFormat, LogSettings, ServiceSettings, TracingSettings};

use crate::policy::PolicySet;

/// A validated configuration: everything the service needs, checked and compiled.
#[derive(Debug)]
pub struct Config {
    /// How the process runs: sockets, logs, traces, server limits, shutdown. Fixed until a restart.
    pub service: ServiceSettings,
    pub callers: Callers,
    pub issuers: Vec<IssuerConfig>,
    pub policies: PolicySet,
    /// Where the policies were read from; `None` when they were embedded.
    pub policy_source: Option<PolicySource>,
    /// Upstream headers set from claims on an allow, in file order: (header, claim name).
    pub headers: Vec<(HeaderName, String)>,
    pub cache: CacheConfig,
    pub limits: Limits,
    /// The `realm` of every `WWW-Authenticate` challenge.
    pub realm: String,
    pub reload: ReloadConfig,
    /// End-user API keys.
    pub api_keys: Vec<ApiKeyConfig>,
    /// HTTPS on `listen`: the identity, and the client certificates let in when `callers.mtls` is set.
    pub tls: Option<Arc<crate::server::tls::TlsSettings>>,
    /// What the forward-auth front reads of the original request.
    pub forward_auth: ForwardAuthConfig,
    /// Files besides the policies that the configuration reads, for the reloader to watch.
    pub referenced_files: Vec<PathBuf>,
    /// A short hash of the configuration text, reported by `/readyz`.
    pub revision: String,
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path, environment: &dyn Environment) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            ConfigErrors(vec![ConfigError::new(
                String::new(),
                format!("cannot read `{}`: {error}", path.display()),
            )])
        })?;
        let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, base_dir, environment, PolicyOrigin::Configured)
    }

    /// Validates configuration text; relative paths in it are resolved against `base_dir`.
    pub fn parse(
        text: &str,
        base_dir: &Path,
        environment: &dyn Environment,
        policy_origin: PolicyOrigin,
    ) -> Result<Self, ConfigErrors> {
        let mut errors = Errors::default();
        let document: Value = match serde_norway::from_str(text) {
            Ok(Value::Null) => {
                return Err(ConfigErrors(vec![ConfigError::new(
                    String::new(),
                    "the configuration is empty",
                )]));
            }
            Ok(document) => document,
            Err(error) => {
                return Err(ConfigErrors(vec![ConfigError::new(
                    String::new(),
                    error.to_string(),
                )]));
            }
        };
        let document = env::interpolate(document, environment, &mut errors.0);
        let Some(top) = errors.deserialize::<raw::Top>("", document) else {
            return Err(ConfigErrors(errors.0));
        };
        let config = validate(
            top,
            base_dir,
            policy_origin,
            &mut errors,
            crate::digest::revision_of(text),
        );
        match config {
            Some(config) if errors.0.is_empty() => Ok(config),
            _ => Err(ConfigErrors(errors.0)),
        }
    }
}

/// Validates each section in turn, in file order, recording every problem; `None` when any section
/// that the configuration cannot do without is wrong.
fn validate(
    top: raw::Top,
    base_dir: &Path,
    policy_origin: PolicyOrigin,
    errors: &mut Errors,
    revision: String,
) -> Option<Config> {
    let raw_limits = errors.section::<raw::Limits>("limits", top.limits);
    let limits = raw_limits
        .as_ref()
        .and_then(|raw| limits::validate_limits(raw, errors));
    let service = service::validate(
        service::RawService {
            listen: top.listen,
            admin_listen: top.admin_listen,
            decision_log: top.decision_log,
            log: top.log,
            tracing: top.tracing,
            shutdown: top.shutdown,
        },
        raw_limits.as_ref(),
        base_dir,
        errors,
    );
    let callers = callers::validate_callers(top.callers, base_dir, errors);
    let issuers = issuers::validate_issuers(top.issuers, errors);
    let (policies, policy_source) =
        policies::load_policies(top.policies, policy_origin, base_dir, errors);
    let headers = headers::validate_headers(top.headers, errors);
    let cache = cache::validate_cache(top.cache, errors);
    let reload = reload::validate_reload(top.reload, errors);
    let mut referenced_files = Vec::new();
    let api_keys =
        api_keys::validate_api_keys(top.api_keys, base_dir, &mut referenced_files, errors);
    let tls = tls::validate_tls(
        top.tls,
        callers.as_ref(),
        base_dir,
        &mut referenced_files,
        errors,
    );
    let realm = headers::validate_realm(top.realm, errors);
    let forward_auth = forward_auth::validate_forward_auth(top.forward_auth, errors);

    Some(Config {
        service: service?,
        callers: callers?,
        issuers,
        policies: policies?,
        policy_source,
        headers,
        cache: cache?,
        limits: limits?,
        realm,
        reload: reload?,
        api_keys,
        tls,
        forward_auth,
        referenced_files,
        revision,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::time::Duration;

    use jsonwebtoken::Algorithm;
    use reqwest::Url;

    use super::*;
    use crate::policy::PolicyFile;

    /// The smallest configuration that validates: one issuer, one caller key, every default.
    const MINIMAL: &str = r#"
callers: { api_keys: { keys: ["caller-key-0123456789"] } }
issuers:
  - name: minimal
    issuer: https://issuer.example
    audiences: [api]
"#;

    /// `text` validated with no environment variables, as [`parse_in`] does.
    fn parse(text: &str) -> Config {
        parse_in(text, &HashMap::new())
    }

    /// `text` validated with `environment` for its `${NAME}`s and one policy permitting everything.
    fn parse_in(text: &str, environment: &HashMap<String, String>) -> Config {
        let policies = vec![PolicyFile {
            name: "all.cedar".to_owned(),
            text: "permit(principal, action, resource);".to_owned(),
        }];
        match Config::parse(
            text,
            Path::new("."),
            environment,
            PolicyOrigin::Embedded(policies),
        ) {
            Ok(config) => config,
            Err(errors) => panic!("{errors}"),
        }
    }

    #[test]
    fn what_the_file_leaves_out_takes_the_defaults() {
        let config = parse(MINIMAL);
        let issuer = &config.issuers[0];
        assert_eq!(issuer.algorithms, [Algorithm::RS256, Algorithm::ES256]);
        assert_eq!(issuer.leeway, Duration::from_secs(30));
        assert_eq!(issuer.claims.subject, "sub");
        assert_eq!(issuer.claims.scope, ["scope", "scp"]);
        assert_eq!(issuer.claims.client_id, ["client_id", "azp", "cid"]);
        assert_eq!(issuer.claims.roles, ["roles", "groups"]);
        assert_eq!(
            issuer.jwks_refresh,
            JwksRefresh {
                default_interval: Duration::from_secs(300),
                min_interval: Duration::from_secs(60),
                max_interval: Duration::from_secs(3600),
                unknown_kid_cooldown: Duration::from_secs(30),
                max_staleness: Duration::from_secs(86_400),
                timeout: Duration::from_secs(2),
            }
        );
        let callers = &config.callers;
        assert_eq!(
            callers.api_keys.as_ref().map(|keys| keys.header.as_str()),
            Some("x-verdict-key")
        );
        assert_eq!(config.cache.max_tokens, 100_000);
        assert_eq!(config.cache.decision_ttl, Duration::ZERO);
        assert_eq!(config.limits.max_token_bytes, 8192);
        assert_eq!(config.realm, "api");
        assert!(config.reload.watch);
        assert_eq!(config.reload.interval, Duration::from_secs(2));
        let service = &config.service;
        assert_eq!(service.listen, SocketAddr::from(([0, 0, 0, 0], 8080)));
        assert_eq!(service.decision_log, DecisionLogTarget::Stdout);
        assert_eq!(service.log.format, LogFormat::Text);
        assert_eq!(service.log.level, "info");
        assert_eq!(service.tracing.service_name, "verdict");
        assert_eq!(service.shutdown_grace, Duration::from_secs(8));
        assert_eq!(
            service.limits,
            ServerLimits {
                max_body_bytes: 64 * 1024,
                max_header_bytes: 16 * 1024,
                request_timeout: Duration::from_secs(5),
                max_concurrent_requests: 1024,
            }
        );
    }

    #[test]
    fn introspection_and_google_callers_take_the_defaults() {
        let config = parse(
            r#"
callers: { google_id_token: { audience: "https://verdict.example", emails: [caller@example.com] } }
issuers:
  - name: opaque
    issuer: https://issuer.example
    audiences: [api]
    introspection: { client_id: verdict, client_secret: introspection-secret }
"#,
        );
        let introspection = config.issuers[0].introspection.as_ref();
        let introspection = introspection.unwrap_or_else(|| panic!("no introspection"));
        assert_eq!(
            introspection.auth_method,
            ClientAuthMethod::ClientSecretBasic
        );
        assert_eq!(introspection.timeout, Duration::from_secs(2));
        assert_eq!(introspection.cache_ttl, Duration::from_secs(300));
        assert_eq!(introspection.inactive_ttl, Duration::from_secs(30));
        assert!(!introspection.default);
        assert!(!introspection.require_audience);
        let google = config.callers.google_id_token.as_ref();
        let google = google.unwrap_or_else(|| panic!("no Google callers"));
        assert_eq!(google.issuer.issuer, "https://accounts.google.com");
        assert_eq!(
            google.issuer.keys,
            KeySource::JwksUri(
                Url::parse("https://www.googleapis.com/oauth2/v3/certs")
                    .unwrap_or_else(|error| panic!("{error}"))
            )
        );
        assert_eq!(google.issuer.leeway, Duration::from_secs(30));
        assert_eq!(google.header, "authorization");
    }

    /// A configuration holding a secret of each kind, each given by a `${NAME}`.
    const WITH_SECRETS: &str = r#"
callers: { api_keys: { keys: ["${CALLER_KEY}"] } }
issuers:
  - name: hmac
    issuer: https://hmac.example
    audiences: [api]
    algorithms: [HS256]
    shared_secret: "${SHARED_SECRET}"
  - name: opaque
    issuer: https://opaque.example
    audiences: [api]
    introspection: { client_id: verdict, client_secret: "${CLIENT_SECRET}" }
"#;

    fn parse_with_secrets(caller_key: &str, shared_secret: &str, client_secret: &str) -> Config {
        let environment: HashMap<String, String> = [
            ("CALLER_KEY", caller_key),
            ("SHARED_SECRET", shared_secret),
            ("CLIENT_SECRET", client_secret),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
        parse_in(WITH_SECRETS, &environment)
    }

    const CALLER_KEY: &str = "caller-key-0123456789";
    const SHARED_SECRET: &str = "hmac-secret-0123456789abcdef-0123";
    const CLIENT_SECRET: &str = "introspection-secret";

    #[test]
    fn the_same_text_parsed_twice_is_equal() {
        let one = parse(MINIMAL);
        let two = parse(MINIMAL);
        assert_eq!(one.issuers, two.issuers);
        assert_eq!(one.callers, two.callers);
        assert_eq!(one.service, two.service);
        let one = parse_with_secrets(CALLER_KEY, SHARED_SECRET, CLIENT_SECRET);
        let two = parse_with_secrets(CALLER_KEY, SHARED_SECRET, CLIENT_SECRET);
        assert_eq!(one.issuers, two.issuers);
        assert_eq!(one.callers, two.callers);
    }

    #[test]
    fn configurations_differing_only_in_a_secret_are_unequal() {
        let base = parse_with_secrets(CALLER_KEY, SHARED_SECRET, CLIENT_SECRET);
        let caller_key = parse_with_secrets("caller-key-0123456780", SHARED_SECRET, CLIENT_SECRET);
        assert_ne!(caller_key.callers, base.callers, "caller key");
        assert_eq!(caller_key.issuers, base.issuers);
        let shared = parse_with_secrets(
            CALLER_KEY,
            "hmac-secret-0123456789abcdef-0124",
            CLIENT_SECRET,
        );
        assert_ne!(shared.issuers, base.issuers, "shared secret");
        assert_eq!(shared.callers, base.callers);
        let client = parse_with_secrets(CALLER_KEY, SHARED_SECRET, "introspection-secreT");
        assert_ne!(client.issuers, base.issuers, "client secret");
        assert_eq!(client.callers, base.callers);
    }
}
