//! The Apigee ServiceCallout front (DESIGN §2): `POST /v1/decide`, whose JSON body describes the
//! client request, answered with the decision as JSON. The only module that knows those shapes.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use serde::{Deserialize, Deserializer, Serialize, de};
use uuid::Uuid;

use super::FieldError;
use crate::decision::{Decision, DecisionInput, Scope, UpstreamHeaders};
use crate::policy::ApigeeContext;

/// The body of `POST /v1/decide`. Unknown fields are refused, so a misspelt `authorisation` is an
/// error rather than a request without a token.
///
/// A key twice anywhere in the body is refused as it is read (DESIGN §2): serde's derived structs
/// refuse a repeated field, here and in `apigee`, and `headers` refuses a repeated name; every other
/// value is a string, so the body has no other object to repeat a key in.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideRequest {
    pub authorization: Option<String>,
    pub api_key: Option<String>,
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    pub query: Option<String>,
    pub client_ip: Option<String>,
    #[serde(default, deserialize_with = "unique_keys")]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "object")]
    pub apigee: Option<ApigeeFields>,
    pub message_id: Option<String>,
}

/// `apigee` in the request body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApigeeFields {
    pub proxy: Option<String>,
    pub environment: Option<String>,
    pub organization: Option<String>,
    pub product: Option<String>,
    pub app: Option<String>,
    pub developer: Option<String>,
}

/// Deserializes an optional `T` only from a JSON object: serde's derived structs also accept an array,
/// read by position, which would bypass `deny_unknown_fields`. The object is handed to `T` as it is
/// read, not gathered into a `Value` first.
fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    struct ObjectOrNull<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> de::Visitor<'de> for ObjectOrNull<T> {
        type Value = Option<T>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("a JSON object")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }

    deserializer.deserialize_any(ObjectOrNull(std::marker::PhantomData))
}

/// Deserializes an optional map of strings, refusing a key that comes twice: which copy a map would
/// keep is not which copy another parser of the same body sees.
fn unique_keys<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    struct UniqueKeys;

    impl<'de> de::Visitor<'de> for UniqueKeys {
        type Value = Option<BTreeMap<String, String>>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("a JSON object of strings")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, String>()? {
                match entries.entry(key) {
                    Entry::Occupied(entry) => {
                        return Err(de::Error::custom(format_args!(
                            "duplicate key `{}`",
                            entry.key()
                        )));
                    }
                    Entry::Vacant(entry) => {
                        entry.insert(value);
                    }
                }
            }
            Ok(Some(entries))
        }
    }

    deserializer.deserialize_any(UniqueKeys)
}

impl DecideRequest {
    /// Checks the fields JSON cannot check and builds the engine's input. Apigee templates render unset
    /// variables as empty strings, so an empty optional field counts as absent.
    pub fn into_input(self) -> Result<DecisionInput, FieldError> {
        let method = super::method("method", &self.method)?;
        // An empty path is the base path (DESIGN §2); the engine gives every other its normal form.
        if !self.path.is_empty() && !self.path.starts_with('/') {
            return Err(FieldError {
                field: "path",
                problem: "must start with `/`",
            });
        }
        let client_ip = match self.client_ip.as_deref().map(str::trim) {
            None | Some("") => None,
            // An IPv4-mapped IPv6 address (`::ffff:10.1.2.3`) is its IPv4 address (DESIGN §2).
            Some(text) => Some(super::ip_address("client_ip", text)?),
        };
        let mut headers = BTreeMap::new();
        for (name, value) in self.headers.unwrap_or_default() {
            // An Apigee template renders a header the client did not send as "".
            if value.is_empty() {
                continue;
            }
            let entry: &mut String = headers.entry(name.to_ascii_lowercase()).or_default();
            if !entry.is_empty() {
                entry.push_str(", ");
            }
            entry.push_str(&value);
        }
        let apigee = self.apigee.unwrap_or_default();
        let authorization = self.authorization.filter(|value| !value.trim().is_empty());
        let api_key = self.api_key.filter(|value| !value.is_empty());
        Ok(DecisionInput {
            authorization,
            api_key,
            method,
            path: self.path,
            host: self.host.unwrap_or_default(),
            query: self.query.unwrap_or_default(),
            client_ip,
            headers,
            apigee: ApigeeContext {
                proxy: apigee.proxy.unwrap_or_default(),
                environment: apigee.environment.unwrap_or_default(),
                organization: apigee.organization.unwrap_or_default(),
                product: apigee.product.unwrap_or_default(),
                app: apigee.app.unwrap_or_default(),
                developer: apigee.developer.unwrap_or_default(),
            },
            message_id: self.message_id.unwrap_or_default(),
        })
    }
}

/// The decision as the proxy reads it. Every field is always present, so the bundle's JSONPaths
/// always resolve.
#[derive(Debug, Serialize)]
pub struct DecideResponse<'a> {
    pub decision_id: Uuid,
    pub allow: bool,
    pub status: u16,
    pub error: &'static str,
    pub error_description: &'a str,
    pub www_authenticate: &'a str,
    pub subject: &'a str,
    pub client_id: &'a str,
    pub issuer: &'a str,
    pub scope: Scope<'a>,
    pub headers: &'a UpstreamHeaders,
    pub cache_ttl: u64,
    pub policies: &'a [String],
}

impl<'a> From<&'a Decision> for DecideResponse<'a> {
    fn from(decision: &'a Decision) -> Self {
        Self {
            decision_id: decision.decision_id,
            allow: decision.allow,
            status: decision.status,
            error: decision.error.as_str(),
            error_description: &decision.error_description,
            www_authenticate: &decision.www_authenticate,
            subject: decision.subject(),
            client_id: decision.client_id(),
            issuer: decision.issuer(),
            scope: decision.scope(),
            headers: &decision.headers,
            cache_ttl: decision.cache_ttl,
            policies: &decision.policies,
        }
    }
}
