//! Builds the Cedar request and entities of one decision (DESIGN §4).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, UNIX_EPOCH};

use arc_swap::ArcSwapOption;

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression,
};
use serde_json::Value;

use super::reads::{NameReads, Reads};
use super::{PolicyRequest, Principal, PrincipalKind, type_name};

/// Claims nested deeper than this are left out of `principal.claims`.
const MAX_CLAIM_DEPTH: usize = 8;

/// The entity type names of the model, parsed once for the process.
static TYPES: LazyLock<EntityTypes> = LazyLock::new(|| EntityTypes {
    user: type_name("User"),
    client: type_name("Client"),
    api_key: type_name("ApiKey"),
    role: type_name("Role"),
    action: type_name("Action"),
    route: type_name("Route"),
});

/// How many client addresses keep their Cedar `ipaddr` value ready.
const IP_CACHE_CAPACITY: usize = 4096;

#[derive(Debug)]
struct EntityTypes {
    user: EntityTypeName,
    client: EntityTypeName,
    api_key: EntityTypeName,
    role: EntityTypeName,
    action: EntityTypeName,
    route: EntityTypeName,
}

fn uid(type_name: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name.clone(), EntityId::new(id))
}

/// A verified credential as Cedar entities: the principal and its `Role` parents, with only the claims
/// the policies read. Built once and reused by the decisions on that credential that the memo does not
/// answer, since converting claims into Cedar values costs more than evaluating the policies.
#[derive(Debug, Clone)]
pub struct PreparedPrincipal {
    uid: EntityUid,
    /// The principal and one entity per distinct role, with their transitive closure computed: a
    /// request only adds its route to a copy, whose entities are shared, not cloned.
    entities: Entities,
    roles: Vec<EntityUid>,
    /// What the principal entity was built from, to rebuild it with more scopes (see
    /// [`Self::with_scopes`]).
    attributes: HashMap<String, RestrictedExpression>,
    scopes: Vec<String>,
}

impl PreparedPrincipal {
    /// The principal with those of its claims that `claims` names.
    pub fn new(principal: &Principal<'_>, claims: &NameReads) -> Result<Self, String> {
        let principal_type = match principal.kind {
            PrincipalKind::User => &TYPES.user,
            PrincipalKind::Client => &TYPES.client,
            PrincipalKind::ApiKey => &TYPES.api_key,
        };
        let principal_uid = uid(principal_type, principal.id);
        let mut roles: Vec<EntityUid> = principal
            .roles
            .iter()
            .map(|role| uid(&TYPES.role, role))
            .collect();
        roles.sort();
        roles.dedup();

        let claims = RestrictedExpression::new_record(
            principal
                .claims
                .iter()
                .filter(|(name, _)| claims.includes(name))
                .filter_map(|(name, value)| Some((name.clone(), claim_value(value, 0)?))),
        )
        .map_err(|error| format!("cannot represent the token's claims: {error}"))?;
        let attributes = HashMap::from([
            ("issuer".to_owned(), string(principal.issuer)),
            ("subject".to_owned(), string(principal.subject)),
            ("client_id".to_owned(), string(principal.client_id)),
            ("tenant".to_owned(), string(principal.tenant)),
            ("claims".to_owned(), claims),
        ]);
        let scopes = principal.scopes.to_vec();
        let entities = principal_entities(&principal_uid, &attributes, &scopes, &roles)?;
        Ok(Self {
            uid: principal_uid,
            entities,
            roles,
            attributes,
            scopes,
        })
    }

    /// The same principal as if its token had also carried `extra` scopes.
    fn with_scopes<'a>(&self, extra: impl Iterator<Item = &'a str>) -> Result<Self, String> {
        let mut scopes = self.scopes.clone();
        scopes.extend(extra.map(str::to_owned));
        Ok(Self {
            uid: self.uid.clone(),
            entities: principal_entities(&self.uid, &self.attributes, &scopes, &self.roles)?,
            roles: self.roles.clone(),
            attributes: self.attributes.clone(),
            scopes,
        })
    }
}

/// The principal of `uid` with `attributes` and `scopes`, and its `roles`.
fn principal_entities(
    uid: &EntityUid,
    attributes: &HashMap<String, RestrictedExpression>,
    scopes: &[String],
    roles: &[EntityUid],
) -> Result<Entities, String> {
    let mut attributes = attributes.clone();
    attributes.insert(
        "scopes".to_owned(),
        RestrictedExpression::new_set(scopes.iter().map(|s| string(s))),
    );
    let principal = Entity::new(uid.clone(), attributes, roles.iter().cloned().collect())
        .map_err(|error| format!("cannot build the principal: {error}"))?;
    let roles = roles
        .iter()
        .map(|role| Entity::new_no_attrs(role.clone(), HashSet::new()));
    Entities::from_entities(std::iter::once(principal).chain(roles), None)
        .map_err(|error| format!("cannot build the principal: {error}"))
}

/// Cedar extension values kept ready: building `ip(...)` or `datetime(...)` makes Cedar parse the
/// extension's name each time, which costs more than a whole policy evaluation.
#[derive(Debug)]
pub(super) struct ExtensionValues {
    /// `context.time` for the current second.
    time: ArcSwapOption<(i64, RestrictedExpression)>,
    ips: quick_cache::sync::Cache<IpAddr, RestrictedExpression>,
}

impl ExtensionValues {
    pub(super) fn new() -> Self {
        Self {
            time: ArcSwapOption::empty(),
            ips: quick_cache::sync::Cache::new(IP_CACHE_CAPACITY),
        }
    }

    fn time(&self, now: i64) -> Result<RestrictedExpression, String> {
        if let Some(cached) = self.time.load().as_deref()
            && cached.0 == now
        {
            return Ok(cached.1.clone());
        }
        let record = time_record(now)?;
        self.time.store(Some(Arc::new((now, record.clone()))));
        Ok(record)
    }

    fn ip(&self, address: IpAddr) -> RestrictedExpression {
        if let Some(cached) = self.ips.get(&address) {
            return cached;
        }
        let value = RestrictedExpression::new_ip(cedar_ip_text(address));
        self.ips.insert(address, value.clone());
        value
    }
}

/// A request field that Cedar cannot represent. The decision is a 400 naming the field, never a deny
/// that no policy explains.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` cannot be represented in a policy request")]
pub struct Unrepresentable {
    /// The input field at fault, or `request` when no single field is.
    pub field: String,
}

impl Unrepresentable {
    fn field(field: &str) -> Self {
        Self {
            field: field.to_owned(),
        }
    }

    /// The field of `values` that Cedar refuses on its own: each is checked alone, which costs
    /// nothing on the path that succeeds.
    fn among(values: &[(String, RestrictedExpression)]) -> Self {
        let at_fault = values
            .iter()
            .find(|(_, value)| Context::from_pairs([("value".to_owned(), value.clone())]).is_err());
        Self::field(at_fault.map_or("request", |(name, _)| name.as_str()))
    }
}

/// An address as Cedar's `ip()` reads it: IPv4 dotted, IPv6 as eight hexadecimal groups. Rust writes an
/// IPv4-mapped IPv6 address with a dotted tail (`::ffff:10.1.2.3`), which Cedar refuses; such an address
/// is its IPv4 address (DESIGN §2).
fn cedar_ip_text(address: IpAddr) -> String {
    match address.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let groups: Vec<String> = v6
                .segments()
                .iter()
                .map(|group| format!("{group:x}"))
                .collect();
            groups.join(":")
        }
    }
}

/// The Cedar request and entities of one decision.
pub(super) fn build(
    request: &PolicyRequest<'_>,
    reads: &Reads,
    extensions: &ExtensionValues,
) -> Result<(Request, Entities), Unrepresentable> {
    build_for(request.principal, request, reads, extensions)
}

/// The Cedar request and entities of one decision, as if the token had also carried `scopes`.
pub(super) fn build_with_scopes<'a>(
    request: &PolicyRequest<'_>,
    reads: &Reads,
    extensions: &ExtensionValues,
    scopes: impl Iterator<Item = &'a str>,
) -> Result<(Request, Entities), Unrepresentable> {
    let principal = request
        .principal
        .with_scopes(scopes)
        .map_err(|_| Unrepresentable::field("scope"))?;
    build_for(&principal, request, reads, extensions)
}

/// The request and entities, with only the attributes the policies read (`reads`): one a policy
/// never reads cannot change a decision, and building `time` or `client_ip` costs Cedar an extension
/// call each.
fn build_for(
    principal: &PreparedPrincipal,
    request: &PolicyRequest<'_>,
    reads: &Reads,
    extensions: &ExtensionValues,
) -> Result<(Request, Entities), Unrepresentable> {
    let resource_uid = uid(&TYPES.route, request.path);
    // Cedar takes the values by value; on the rare failure they are built again to find the culprit.
    let resource_entity = Entity::new(
        resource_uid.clone(),
        HashMap::from_iter(route_attributes(request, reads)?),
        HashSet::new(),
    )
    .map_err(|_| {
        route_attributes(request, reads).map_or_else(
            |fault| fault,
            |attributes| Unrepresentable::among(&attributes),
        )
    })?;

    let entities = principal
        .entities
        .clone()
        .add_entities([resource_entity], None)
        .map_err(|_| Unrepresentable::field("request"))?;

    let context = Context::from_pairs(context(request, reads, extensions)?).map_err(|_| {
        context(request, reads, extensions)
            .map_or_else(|fault| fault, |pairs| Unrepresentable::among(&pairs))
    })?;
    let action = uid(&TYPES.action, request.method);
    let cedar_request = Request::new(principal.uid.clone(), action, resource_uid, context, None)
        .map_err(|_| Unrepresentable::field("request"))?;
    Ok((cedar_request, entities))
}

/// The attributes of the `Route` resource the policies read: `path` always.
fn route_attributes(
    request: &PolicyRequest<'_>,
    reads: &Reads,
) -> Result<Vec<(String, RestrictedExpression)>, Unrepresentable> {
    let mut attributes = vec![("path".to_owned(), string(request.path))];
    if reads.host {
        attributes.push(("host".to_owned(), string(request.host)));
    }
    if reads.segments {
        attributes.push(("segments".to_owned(), segments(request.path)?));
    }
    if reads.apigee {
        let apigee = request.apigee;
        let apigee_record = RestrictedExpression::new_record([
            ("proxy".to_owned(), string(&apigee.proxy)),
            ("environment".to_owned(), string(&apigee.environment)),
            ("organization".to_owned(), string(&apigee.organization)),
            ("product".to_owned(), string(&apigee.product)),
            ("app".to_owned(), string(&apigee.app)),
            ("developer".to_owned(), string(&apigee.developer)),
        ])
        .map_err(|_| Unrepresentable::field("apigee"))?;
        attributes.push(("apigee".to_owned(), apigee_record));
    }
    Ok(attributes)
}

/// The context attributes the policies read.
fn context(
    request: &PolicyRequest<'_>,
    reads: &Reads,
    extensions: &ExtensionValues,
) -> Result<Vec<(String, RestrictedExpression)>, Unrepresentable> {
    let mut pairs = Vec::with_capacity(5);
    if reads.headers != NameReads::None {
        let headers = RestrictedExpression::new_record(
            request
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), string(value))),
        )
        .map_err(|_| Unrepresentable::field("headers"))?;
        pairs.push(("headers".to_owned(), headers));
    }
    if reads.query {
        pairs.push(("query".to_owned(), string(request.query)));
    }
    if reads.time {
        let time = extensions
            .time(request.now)
            .map_err(|_| Unrepresentable::field("time"))?;
        pairs.push(("time".to_owned(), time));
    }
    if reads.token {
        let token = request.token;
        let mut token_fields = vec![
            ("kid".to_owned(), string(token.kid)),
            ("typ".to_owned(), string(token.typ)),
            ("exp".to_owned(), RestrictedExpression::new_long(token.exp)),
        ];
        if let Some(iat) = token.iat {
            token_fields.push(("iat".to_owned(), RestrictedExpression::new_long(iat)));
        }
        let token = RestrictedExpression::new_record(token_fields)
            .map_err(|_| Unrepresentable::field("token"))?;
        pairs.push(("token".to_owned(), token));
    }
    if reads.client_ip
        && let Some(address) = request.client_ip
    {
        pairs.push(("client_ip".to_owned(), extensions.ip(address)));
    }
    Ok(pairs)
}

/// `resource.segments`: the path's segments keyed by position, `"0"` first, since Cedar has no lists and
/// no way to split a string (`/tenants/acme` gives `{"0": "tenants", "1": "acme"}`).
fn segments(path: &str) -> Result<RestrictedExpression, Unrepresentable> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let segments = path
        .split('/')
        .filter(|_| !path.is_empty())
        .enumerate()
        .map(|(index, segment)| (index.to_string(), string(segment)));
    RestrictedExpression::new_record(segments).map_err(|_| Unrepresentable::field("path"))
}

fn string(value: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(value.to_owned())
}

/// A claim as a Cedar value. Cedar has no floating-point numbers or nulls: such claims, and integers
/// outside Cedar's 64-bit range, are left out rather than approximated.
fn claim_value(value: &Value, depth: usize) -> Option<RestrictedExpression> {
    if depth > MAX_CLAIM_DEPTH {
        return None;
    }
    match value {
        Value::Null => None,
        Value::Bool(flag) => Some(RestrictedExpression::new_bool(*flag)),
        Value::Number(number) => number.as_i64().map(RestrictedExpression::new_long),
        Value::String(text) => Some(string(text)),
        Value::Array(items) => Some(RestrictedExpression::new_set(
            items.iter().filter_map(|item| claim_value(item, depth + 1)),
        )),
        Value::Object(fields) => RestrictedExpression::new_record(
            fields
                .iter()
                .filter_map(|(name, item)| Some((name.clone(), claim_value(item, depth + 1)?))),
        )
        .ok(),
    }
}

/// `context.time`: the decision time as a Cedar `datetime` and as UTC calendar fields.
fn time_record(now: i64) -> Result<RestrictedExpression, String> {
    let iso = rfc3339(now).ok_or_else(|| format!("the time {now} is before 1970"))?;
    let (hour, minute, weekday) = time_of_week(now);
    RestrictedExpression::new_record([
        ("now".to_owned(), RestrictedExpression::new_datetime(iso)),
        ("unix".to_owned(), RestrictedExpression::new_long(now)),
        ("hour".to_owned(), RestrictedExpression::new_long(hour)),
        ("minute".to_owned(), RestrictedExpression::new_long(minute)),
        (
            "weekday".to_owned(),
            RestrictedExpression::new_long(weekday),
        ),
    ])
    .map_err(|error| error.to_string())
}

/// `now` (seconds since the epoch) in RFC 3339, UTC, to the second.
fn rfc3339(now: i64) -> Option<String> {
    let at = UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(now).ok()?))?;
    Some(humantime::format_rfc3339_seconds(at).to_string())
}

/// The UTC hour, minute and ISO weekday (1 for Monday to 7 for Sunday) of `now`.
fn time_of_week(now: i64) -> (i64, i64, i64) {
    let days = now.div_euclid(86_400);
    let seconds_of_day = now.rem_euclid(86_400);
    // 1970-01-01 was a Thursday.
    let weekday = (days + 3).rem_euclid(7) + 1;
    (seconds_of_day / 3600, seconds_of_day % 3600 / 60, weekday)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_address_is_written_as_cedar_reads_it() {
        let extensions = ExtensionValues::new();
        for text in [
            "10.1.2.3",
            "::ffff:10.1.2.3",
            "::10.1.2.3",
            "::",
            "::1",
            "2001:db8::1",
            "fe80::1:2:3:4",
            "64:ff9b::10.1.2.3",
        ] {
            let address: IpAddr = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            let value = extensions.ip(address);
            assert!(
                Context::from_pairs([("ip".to_owned(), value)]).is_ok(),
                "{text} as {}",
                cedar_ip_text(address)
            );
        }
        assert_eq!(
            cedar_ip_text("::ffff:10.1.2.3".parse().unwrap_or_else(|e| panic!("{e}"))),
            "10.1.2.3"
        );
    }

    #[test]
    fn the_field_cedar_refuses_is_named() {
        let values = [
            ("query".to_owned(), string("a=1")),
            (
                "client_ip".to_owned(),
                RestrictedExpression::new_ip("::ffff:10.1.2.3"),
            ),
        ];
        assert!(Context::from_pairs(values.clone()).is_err());
        assert_eq!(Unrepresentable::among(&values).field, "client_ip");
        assert_eq!(Unrepresentable::among(&values[..1]).field, "request");
    }

    #[test]
    fn the_time_fields_are_utc_calendar_fields() {
        // 2000-02-29T13:45:30Z, a Tuesday.
        let now = 11_016 * 86_400 + 13 * 3600 + 45 * 60 + 30;
        assert_eq!(rfc3339(now).as_deref(), Some("2000-02-29T13:45:30Z"));
        assert_eq!(time_of_week(now), (13, 45, 2));
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(time_of_week(0), (0, 0, 4));
        // 2024-01-07, a Sunday, a second before midnight.
        assert_eq!(time_of_week(19_729 * 86_400 + 86_399), (23, 59, 7));
        assert_eq!(rfc3339(-1), None);
        assert!(time_record(-1).is_err());
    }
}
