//! The default of every setting the configuration file may leave out, in one place, by section.
//!
//! Each section's validation, and the `Default` of each type it builds, takes its defaults from here.
//! What is not here: a setting that picks one of a few words (`decision_log`, `log.format`,
//! `introspection.auth_method`) defaults to the first word its section matches; a default that follows
//! from another setting (an issuer's `discovery`, on unless `jwks_uri` is given; an API key's
//! `subject`, its `id`) is worked out by its section; lists left out are empty and
//! `callers.allow_unauthenticated` is off, by serde's defaults in `raw`. The bounds a value must stay
//! within are rules, not defaults, and stay with their section.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

// `listen`, `log`, `tracing`, `shutdown`: the service settings.

/// `listen`: the decision API's address.
pub(super) const LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8080));
/// `log.level`: the `tracing` filter used when `RUST_LOG` is not set.
pub(super) const LOG_LEVEL: &str = "info";
/// `tracing.service_name`: the service name on exported spans.
pub(super) const TRACING_SERVICE_NAME: &str = "verdict";
/// `shutdown.grace_period`: how long a shutdown waits for requests in flight.
pub(super) const SHUTDOWN_GRACE_PERIOD: Duration = Duration::from_secs(8);

// `callers:`

/// `callers.api_keys.header`: the header a caller key comes in (DESIGN §6).
pub(super) const CALLER_KEY_HEADER: &str = "x-verdict-key";
/// `callers.google_id_token.header`: where Apigee's `GoogleIDToken` puts the token unless its
/// `<HeaderName>` names another header.
pub(super) const GOOGLE_ID_TOKEN_HEADER: &str = "authorization";
/// `callers.google_id_token.issuer`: Google's ID token issuer.
pub(super) const GOOGLE_ISSUER: &str = "https://accounts.google.com";
/// `callers.google_id_token.jwks_uri`: Google's keys, as OpenID Connect discovery at [`GOOGLE_ISSUER`]
/// names them.
pub(super) const GOOGLE_JWKS_URI: &str = "https://www.googleapis.com/oauth2/v3/certs";

// `issuers:`

/// `issuers[].algorithms`: the signature algorithms accepted, by name.
pub(super) const ALGORITHMS: [&str; 2] = ["RS256", "ES256"];
/// `issuers[].leeway`: the clock skew allowed when checking a token's times.
pub(super) const LEEWAY: Duration = Duration::from_secs(30);
/// `issuers[].claims.subject`: the claim naming the subject.
pub(super) const SUBJECT_CLAIM: &str = "sub";
/// `issuers[].claims.scope`: the claims carrying scopes, tried in order.
pub(super) const SCOPE_CLAIMS: [&str; 2] = ["scope", "scp"];
/// `issuers[].claims.client_id`: the claims carrying the client id, tried in order.
pub(super) const CLIENT_ID_CLAIMS: [&str; 3] = ["client_id", "azp", "cid"];
/// `issuers[].claims.roles`: the claims carrying roles, tried in order.
pub(super) const ROLES_CLAIMS: [&str; 2] = ["roles", "groups"];

/// `issuers[].jwks_refresh.default_interval`: the refresh interval when the JWKS response carries no
/// `Cache-Control: max-age`.
pub(super) const JWKS_DEFAULT_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// `issuers[].jwks_refresh.min_interval`: the shortest refresh interval `max-age` may ask for.
pub(super) const JWKS_MIN_INTERVAL: Duration = Duration::from_secs(60);
/// `issuers[].jwks_refresh.max_interval`: the longest refresh interval `max-age` may ask for.
pub(super) const JWKS_MAX_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// `issuers[].jwks_refresh.unknown_kid_cooldown`: at most one fetch per this period for unknown `kid`s.
pub(super) const JWKS_UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(30);
/// `issuers[].jwks_refresh.max_staleness`: keys not refreshed for this long stop being trusted.
pub(super) const JWKS_MAX_STALENESS: Duration = Duration::from_secs(24 * 60 * 60);
/// `issuers[].jwks_refresh.timeout`: the timeout of one discovery or JWKS request. Below the shared
/// flow's 3 s callout timeout: a callout waiting on a refetch from an endpoint that hangs still gets
/// its answer.
pub(super) const JWKS_TIMEOUT: Duration = Duration::from_secs(2);

/// `issuers[].introspection.timeout`: the whole introspection exchange, connection to last byte.
pub(super) const INTROSPECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// `issuers[].introspection.cache_ttl`: the longest an active answer is reused.
pub(super) const INTROSPECTION_CACHE_TTL: Duration = Duration::from_secs(300);
/// `issuers[].introspection.inactive_ttl`: how long an inactive answer is reused.
pub(super) const INTROSPECTION_INACTIVE_TTL: Duration = Duration::from_secs(30);
/// `issuers[].introspection.default`: whether opaque tokens no prefix claims go to this issuer.
pub(super) const INTROSPECTION_DEFAULT: bool = false;
/// `issuers[].introspection.require_audience`: whether an active answer without `aud` is refused.
pub(super) const INTROSPECTION_REQUIRE_AUDIENCE: bool = false;

// `cache:`

/// `cache.max_tokens`: the verified tokens kept.
pub(super) const CACHE_MAX_TOKENS: u64 = 100_000;
/// `cache.max_decisions`: the decision memo's entries (each charged at least 1 KiB of its bytes bound).
pub(super) const CACHE_MAX_DECISIONS: u64 = 100_000;
/// `cache.decision_ttl`: how long the proxy may reuse an allow; zero, never.
pub(super) const CACHE_DECISION_TTL: Duration = Duration::ZERO;

// `limits:`

/// `limits.max_token_bytes`: the longest token read.
pub(super) const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// `limits.max_body_bytes`: the largest request body read.
pub(super) const MAX_BODY_BYTES: usize = 64 * 1024;
/// `limits.max_header_bytes`: the request line and headers together.
pub(super) const MAX_HEADER_BYTES: usize = 16 * 1024;
/// `limits.request_timeout`: a request not answered by then gets 503.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// `limits.max_concurrent_requests`: decisions in progress at once.
pub(super) const MAX_CONCURRENT_REQUESTS: usize = 1024;

// `realm`, `reload:`

/// `realm`: the realm of every `WWW-Authenticate` challenge.
pub(super) const REALM: &str = "api";
/// `reload.watch`: whether changed files are looked for (SIGHUP reloads either way).
pub(super) const RELOAD_WATCH: bool = true;
/// `reload.interval`: how often changed files are looked for.
pub(super) const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// `forward_auth.api_key_header`: the header the Apigee bundles read the client's API key from, too.
pub(super) const FORWARD_AUTH_API_KEY_HEADER: &str = "x-api-key";
/// `forward_auth.context_headers`: the headers the Apigee bundles put in `headers`, too.
pub(super) const FORWARD_AUTH_CONTEXT_HEADERS: &[&str] = &["x-request-id", "x-tenant"];
