//! Gateway API (gateway.networking.k8s.io/v1) routing at a Gateway the double plays, as a pure
//! function: which HTTPRoutes attach to which listeners (`parentRefs`, `allowedRoutes`,
//! hostnames), which rule matches a request (path, headers, query, method) with the spec's
//! precedence, what its filters do, and which backend Service it names (cross-namespace backends
//! need a ReferenceGrant). Regular expressions match the whole value, as Envoy's RE2 matchers do.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use crate::policy::{GATEWAY_GROUP, ObjectRef};

type Labels = BTreeMap<String, String>;

/// A Gateway as stored.
#[derive(Clone, Debug, Default)]
pub struct StoredGateway {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub annotations: Labels,
    pub spec: GatewaySpec,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    #[serde(default)]
    pub gateway_class_name: String,
    #[serde(default)]
    pub listeners: Vec<Listener>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub allowed_routes: Option<AllowedRoutes>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct AllowedRoutes {
    #[serde(default)]
    pub namespaces: Option<RouteNamespaces>,
    #[serde(default)]
    pub kinds: Vec<RouteGroupKind>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RouteNamespaces {
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub selector: Option<LabelSelector>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: Labels,
    #[serde(default)]
    pub match_expressions: Vec<LabelRequirement>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct LabelRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

impl LabelSelector {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => value.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !r.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RouteGroupKind {
    #[serde(default)]
    pub group: Option<String>,
    pub kind: String,
}

/// An HTTPRoute as stored.
#[derive(Clone, Debug, Default)]
pub struct StoredRoute {
    pub namespace: String,
    pub name: String,
    /// `metadata.creationTimestamp` (RFC 3339, so it sorts as text).
    pub created: String,
    pub spec: HttpRouteSpec,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ParentRef>,
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub rules: Vec<RouteRule>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default)]
    pub section_name: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRule {
    #[serde(default)]
    pub matches: Vec<RouteMatch>,
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
    #[serde(default)]
    pub timeouts: Option<Timeouts>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    #[serde(default)]
    pub path: Option<PathMatch>,
    #[serde(default)]
    pub headers: Vec<ValueMatch>,
    #[serde(default)]
    pub query_params: Vec<ValueMatch>,
    #[serde(default)]
    pub method: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct PathMatch {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ValueMatch {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub request_header_modifier: Option<HeaderModifier>,
    #[serde(default)]
    pub response_header_modifier: Option<HeaderModifier>,
    #[serde(default)]
    pub url_rewrite: Option<UrlRewrite>,
    #[serde(default)]
    pub request_redirect: Option<RequestRedirect>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct HeaderModifier {
    #[serde(default)]
    pub set: Vec<NameValue>,
    #[serde(default)]
    pub add: Vec<NameValue>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct NameValue {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct UrlRewrite {
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub path: Option<PathModifier>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathModifier {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub replace_full_path: Option<String>,
    #[serde(default)]
    pub replace_prefix_match: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRedirect {
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub path: Option<PathModifier>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub status_code: Option<u16>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct BackendRef {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub weight: Option<i32>,
    #[serde(default)]
    pub filters: Vec<Filter>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Timeouts {
    #[serde(default)]
    pub request: Option<String>,
}

/// A ReferenceGrant as stored.
#[derive(Clone, Debug, Default)]
pub struct StoredGrant {
    pub namespace: String,
    pub spec: GrantSpec,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct GrantSpec {
    #[serde(default)]
    pub from: Vec<GrantFrom>,
    #[serde(default)]
    pub to: Vec<GrantTo>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct GrantFrom {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct GrantTo {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// The parts of a request routing looks at.
#[derive(Clone, Copy, Debug)]
pub struct RouteRequest<'a> {
    /// Host header without port.
    pub host: &'a str,
    pub method: &'a str,
    /// Path without the query.
    pub path: &'a str,
    pub query: &'a [(String, String)],
    pub headers: &'a HeaderMap,
}

/// Header edits of a RequestHeaderModifier/ResponseHeaderModifier filter, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeaderEdits(pub Vec<HeaderModifier>);

impl HeaderEdits {
    pub fn apply(&self, headers: &mut HeaderMap) {
        for modifier in &self.0 {
            for NameValue { name, value } in &modifier.set {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    headers.insert(n, v);
                }
            }
            for NameValue { name, value } in &modifier.add {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    headers.append(n, v);
                }
            }
            for name in &modifier.remove {
                headers.remove(name.to_ascii_lowercase().as_str());
            }
        }
    }
}

/// Where a routed request goes.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward {
    /// `namespace/name` of the HTTPRoute.
    pub route: String,
    pub backend: ObjectRef,
    pub port: u16,
    /// Path (after URLRewrite) without query.
    pub path: String,
    /// Host after URLRewrite, when rewritten.
    pub host: Option<String>,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    pub timeout: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RouteOutcome {
    /// No route matches: Envoy's 404 (`route_not_found`).
    NotFound,
    /// A RequestRedirect filter.
    Redirect {
        status: u16,
        location: String,
    },
    Forward(Forward),
    /// A rule matched but its backend cannot be used (missing, unsupported kind, or a
    /// cross-namespace reference without a ReferenceGrant): Gateway API says 500.
    InvalidBackend {
        route: String,
        reason: String,
    },
}

/// Routes `request` arriving at `gateway` through `routes`.
pub fn select(
    gateway: &StoredGateway,
    routes: &[StoredRoute],
    grants: &[StoredGrant],
    namespace_labels: &BTreeMap<String, Labels>,
    request: &RouteRequest,
) -> RouteOutcome {
    let host = request.host.to_ascii_lowercase();
    let mut best: Option<(Rank, &StoredRoute, &RouteRule, PathKind, String)> = None;
    for route in routes {
        let listeners = admitting_listeners(gateway, route, namespace_labels);
        if !listeners.iter().any(|l| {
            l.hostname
                .as_deref()
                .is_none_or(|h| hostname_matches(h, &host))
        }) {
            continue;
        }
        let Some(host_rank) = route_host_rank(&route.spec.hostnames, &host) else {
            continue;
        };
        for (rule_index, rule) in route.spec.rules.iter().enumerate() {
            let default_match = [RouteMatch::default()];
            let matches: &[RouteMatch] = if rule.matches.is_empty() {
                &default_match
            } else {
                &rule.matches
            };
            for (match_index, m) in matches.iter().enumerate() {
                let Some((kind, value)) = match_request(m, request) else {
                    continue;
                };
                let rank = Rank {
                    host: host_rank,
                    path: (kind.rank(), value.len()),
                    method: m.method.is_some(),
                    headers: m.headers.len(),
                    query: m.query_params.len(),
                    age: Reverse(route.created.clone()),
                    id: Reverse(format!("{}/{}", route.namespace, route.name)),
                    order: Reverse((rule_index, match_index)),
                };
                if best.as_ref().is_none_or(|(b, ..)| rank > *b) {
                    best = Some((rank, route, rule, kind, value));
                }
            }
        }
    }
    match best {
        None => RouteOutcome::NotFound,
        Some((_, route, rule, kind, value)) => outcome(route, rule, kind, &value, grants, request),
    }
}

/// Ordering of candidate matches, larger first (Gateway API's precedence rules).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    /// (characters of a matching non-wildcard hostname, characters of the matching hostname).
    host: (usize, usize),
    /// (Exact 3 > PathPrefix 2 > RegularExpression 1, length of the value).
    path: (u8, usize),
    method: bool,
    headers: usize,
    query: usize,
    /// Oldest route first, then `namespace/name` alphabetically, then order in the route.
    age: Reverse<String>,
    id: Reverse<String>,
    order: Reverse<(usize, usize)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PathKind {
    Exact,
    Prefix,
    Regex,
}

impl PathKind {
    fn rank(self) -> u8 {
        match self {
            PathKind::Exact => 3,
            PathKind::Prefix => 2,
            PathKind::Regex => 1,
        }
    }
}

/// The HTTP listeners of `gateway` that `route` attaches to.
fn admitting_listeners<'a>(
    gateway: &'a StoredGateway,
    route: &StoredRoute,
    namespace_labels: &BTreeMap<String, Labels>,
) -> Vec<&'a Listener> {
    gateway
        .spec
        .listeners
        .iter()
        .filter(|l| matches!(l.protocol.as_str(), "HTTP" | "HTTPS"))
        .filter(|l| {
            route.spec.parent_refs.iter().any(|p| {
                p.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
                    && p.kind.as_deref().unwrap_or("Gateway") == "Gateway"
                    && p.namespace.as_deref().unwrap_or(&route.namespace) == gateway.namespace
                    && p.name == gateway.name
                    && p.section_name.as_ref().is_none_or(|s| *s == l.name)
                    && p.port.is_none_or(|port| port == l.port)
            })
        })
        .filter(|l| {
            let allowed = l.allowed_routes.clone().unwrap_or_default();
            let namespaces = allowed.namespaces.unwrap_or_default();
            let namespace_ok = match namespaces.from.as_deref().unwrap_or("Same") {
                "Same" => route.namespace == gateway.namespace,
                "All" => true,
                "Selector" => namespaces.selector.is_some_and(|s| {
                    s.matches(
                        namespace_labels
                            .get(&route.namespace)
                            .unwrap_or(&Labels::new()),
                    )
                }),
                _ => false,
            };
            let kind_ok = allowed.kinds.is_empty()
                || allowed.kinds.iter().any(|k| {
                    k.kind == "HTTPRoute"
                        && k.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
                });
            namespace_ok && kind_ok
        })
        .collect()
}

/// Gateway API hostnames: exact (case-insensitive), or `*.suffix` covering one or more labels.
pub fn hostname_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
        None => pattern == host,
    }
}

/// The precedence of the route hostname `host` matches; None when the route's hostnames exclude
/// it. A route without hostnames takes any host, with the lowest precedence.
fn route_host_rank(hostnames: &[String], host: &str) -> Option<(usize, usize)> {
    if hostnames.is_empty() {
        return Some((0, 0));
    }
    hostnames
        .iter()
        .filter(|h| hostname_matches(h, host))
        .map(|h| match h.starts_with("*.") {
            true => (0, h.len()),
            false => (h.len(), h.len()),
        })
        .max()
}

/// Whether a route match holds; its path kind and value when it does.
fn match_request(m: &RouteMatch, request: &RouteRequest) -> Option<(PathKind, String)> {
    let path = m.path.clone().unwrap_or_default();
    let value = path.value.unwrap_or_else(|| "/".to_owned());
    let kind = match path.kind.as_deref().unwrap_or("PathPrefix") {
        "Exact" => PathKind::Exact,
        "PathPrefix" => PathKind::Prefix,
        "RegularExpression" => PathKind::Regex,
        _ => return None,
    };
    let path_ok = match kind {
        PathKind::Exact => request.path == value,
        PathKind::Prefix => prefix_matches(&value, request.path),
        PathKind::Regex => full_match(&value, request.path),
    };
    let method_ok = m.method.as_deref().is_none_or(|v| v == request.method);
    let headers_ok = m.headers.iter().all(|h| {
        request
            .headers
            .get_all(h.name.to_ascii_lowercase().as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| value_matches(h, v))
    });
    let query_ok = m.query_params.iter().all(|q| {
        request
            .query
            .iter()
            .find(|(k, _)| *k == q.name)
            .is_some_and(|(_, v)| value_matches(q, v))
    });
    (path_ok && method_ok && headers_ok && query_ok).then_some((kind, value))
}

fn value_matches(m: &ValueMatch, value: &str) -> bool {
    match m.kind.as_deref().unwrap_or("Exact") {
        "Exact" => m.value == value,
        "RegularExpression" => full_match(&m.value, value),
        _ => false,
    }
}

/// PathPrefix matches whole path elements: `/foo` matches `/foo` and `/foo/bar`, not `/foobar`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// RE2-style full match (Envoy's `safe_regex`); an invalid expression matches nothing.
fn full_match(pattern: &str, value: &str) -> bool {
    regex::Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|re| re.is_match(value))
}

fn outcome(
    route: &StoredRoute,
    rule: &RouteRule,
    kind: PathKind,
    matched: &str,
    grants: &[StoredGrant],
    request: &RouteRequest,
) -> RouteOutcome {
    let id = format!("{}/{}", route.namespace, route.name);
    let rewrite_path = |modifier: &PathModifier| match modifier.kind.as_str() {
        "ReplaceFullPath" => modifier.replace_full_path.clone(),
        "ReplacePrefixMatch" if kind == PathKind::Prefix => modifier
            .replace_prefix_match
            .as_deref()
            .map(|replacement| replace_prefix(matched, replacement, request.path)),
        _ => None,
    };
    if let Some(redirect) = rule
        .filters
        .iter()
        .find_map(|f| f.request_redirect.as_ref())
    {
        let path = redirect
            .path
            .as_ref()
            .and_then(rewrite_path)
            .unwrap_or_else(|| request.path.to_owned());
        let scheme = redirect.scheme.as_deref().unwrap_or("http");
        let host = redirect.hostname.as_deref().unwrap_or(request.host);
        let port = redirect.port.map(|p| format!(":{p}")).unwrap_or_default();
        let query = encode_query(request.query);
        return RouteOutcome::Redirect {
            status: redirect.status_code.unwrap_or(302),
            location: format!("{scheme}://{host}{port}{path}{query}"),
        };
    }
    let mut path = request.path.to_owned();
    let mut host = None;
    let mut request_headers = HeaderEdits::default();
    let mut response_headers = HeaderEdits::default();
    let mut apply = |filters: &[Filter]| {
        for filter in filters {
            if let Some(m) = &filter.request_header_modifier {
                request_headers.0.push(m.clone());
            }
            if let Some(m) = &filter.response_header_modifier {
                response_headers.0.push(m.clone());
            }
            if let Some(rewrite) = &filter.url_rewrite {
                if let Some(p) = rewrite.path.as_ref().and_then(rewrite_path) {
                    path = p;
                }
                if let Some(h) = &rewrite.hostname {
                    host = Some(h.clone());
                }
            }
        }
    };
    apply(&rule.filters);
    // The heaviest backend takes the request (the double does not split traffic).
    let backend = rule
        .backend_refs
        .iter()
        .filter(|b| b.weight.unwrap_or(1) > 0)
        .fold(None::<&BackendRef>, |best, b| match best {
            Some(best) if best.weight.unwrap_or(1) >= b.weight.unwrap_or(1) => Some(best),
            _ => Some(b),
        });
    let Some(backend) = backend else {
        return RouteOutcome::InvalidBackend {
            route: id,
            reason: "no backendRefs with weight".into(),
        };
    };
    let target = match resolve_backend(&route.namespace, backend, grants) {
        Ok(target) => target,
        Err(reason) => return RouteOutcome::InvalidBackend { route: id, reason },
    };
    apply(&backend.filters);
    RouteOutcome::Forward(Forward {
        route: id,
        backend: target.0,
        port: target.1,
        path,
        host,
        request_headers,
        response_headers,
        timeout: rule
            .timeouts
            .as_ref()
            .and_then(|t| t.request.as_deref())
            .and_then(parse_duration),
    })
}

/// Gateway API's ReplacePrefixMatch: `/foo` matched in `/foo/bar`, replaced by `/xyz` →
/// `/xyz/bar`; by `/` → `/bar`.
fn replace_prefix(matched: &str, replacement: &str, path: &str) -> String {
    let matched = matched.trim_end_matches('/');
    let rest = path.get(matched.len()..).unwrap_or_default();
    let replacement = replacement.trim_end_matches('/');
    let joined = format!("{replacement}{rest}");
    if joined.is_empty() {
        "/".to_owned()
    } else if joined.starts_with('/') {
        joined
    } else {
        format!("/{joined}")
    }
}

fn encode_query(query: &[(String, String)]) -> String {
    if query.is_empty() {
        return String::new();
    }
    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query)
        .finish();
    format!("?{encoded}")
}

/// A backendRef's Service and port, or why it is not usable.
fn resolve_backend(
    route_namespace: &str,
    backend: &BackendRef,
    grants: &[StoredGrant],
) -> Result<(ObjectRef, u16), String> {
    let group = backend.group.as_deref().unwrap_or("");
    let kind = backend.kind.as_deref().unwrap_or("Service");
    if !(group.is_empty() || group == "core") || kind != "Service" {
        return Err(format!(
            "unsupported backend kind {kind} in group {group:?}"
        ));
    }
    let namespace = backend.namespace.as_deref().unwrap_or(route_namespace);
    let target = ObjectRef::new(namespace, &backend.name);
    if namespace != route_namespace && !granted(route_namespace, &target, grants) {
        return Err(format!(
            "no ReferenceGrant in {namespace} lets HTTPRoutes of {route_namespace} refer to Service {}",
            backend.name
        ));
    }
    let port = backend
        .port
        .ok_or_else(|| format!("backendRef to Service {} without a port", backend.name))?;
    Ok((target, port))
}

/// Whether a ReferenceGrant in the Service's namespace admits HTTPRoutes from `route_namespace`.
fn granted(route_namespace: &str, service: &ObjectRef, grants: &[StoredGrant]) -> bool {
    grants
        .iter()
        .filter(|g| g.namespace == service.namespace)
        .any(|g| {
            g.spec.from.iter().any(|f| {
                f.group == GATEWAY_GROUP && f.kind == "HTTPRoute" && f.namespace == route_namespace
            }) && g.spec.to.iter().any(|t| {
                (t.group.is_empty() || t.group == "core")
                    && t.kind == "Service"
                    && t.name.as_ref().is_none_or(|n| *n == service.name)
            })
        })
}

/// Gateway API durations: `1h`, `30s`, `500ms`, `1m30s`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        let number: u64 = rest.get(..digits)?.parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(number), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(number * 3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(number * 60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(number), 1)
        } else {
            return None;
        };
        total += unit;
        rest = &rest[len..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gateway(listeners: serde_json::Value) -> StoredGateway {
        StoredGateway {
            namespace: "kserve".into(),
            name: "kserve-ingress-gateway".into(),
            spec: serde_json::from_value(
                json!({"gatewayClassName": "istio", "listeners": listeners}),
            )
            .unwrap(),
            ..Default::default()
        }
    }

    /// KServe's own Gateway: one HTTP listener admitting routes from every namespace.
    fn kserve_gateway() -> StoredGateway {
        gateway(
            json!([{"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}}]),
        )
    }

    fn route(namespace: &str, name: &str, created: &str, spec: serde_json::Value) -> StoredRoute {
        StoredRoute {
            namespace: namespace.into(),
            name: name.into(),
            created: created.into(),
            spec: serde_json::from_value(spec).unwrap(),
        }
    }

    const PARENT: &str = "kserve-ingress-gateway";

    /// The HTTPRoute KServe (Standard mode, enableGatewayApi) writes for an InferenceService.
    fn kserve_route(ns: &str, name: &str) -> StoredRoute {
        route(
            ns,
            name,
            "2026-01-01T00:00:00Z",
            json!({
                "parentRefs": [{"group": GATEWAY_GROUP, "kind": "Gateway", "namespace": "kserve", "name": PARENT}],
                "hostnames": [format!("{name}-{ns}.example.com")],
                "rules": [{
                    "matches": [{"path": {"type": "RegularExpression", "value": "^/.*"}}],
                    "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [
                        {"name": "KServe-Isvc-Name", "value": name}, {"name": "KServe-Isvc-Namespace", "value": ns}]}}],
                    "backendRefs": [{"kind": "Service", "name": format!("{name}-predictor"), "namespace": ns, "port": 80}],
                    "timeouts": {"request": "60s"}
                }]
            }),
        )
    }

    fn go(
        gw: &StoredGateway,
        routes: &[StoredRoute],
        grants: &[StoredGrant],
        host: &str,
        method: &str,
        path_and_query: &str,
        header_pairs: &[(&str, &str)],
    ) -> RouteOutcome {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let query: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let headers: HeaderMap = header_pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect();
        let mut labels = BTreeMap::new();
        labels.insert(
            "team-a".to_owned(),
            [("tier".to_owned(), "models".to_owned())].into(),
        );
        select(
            gw,
            routes,
            grants,
            &labels,
            &RouteRequest {
                host,
                method,
                path,
                query: &query,
                headers: &headers,
            },
        )
    }

    fn forwarded(outcome: &RouteOutcome) -> (String, String, String) {
        match outcome {
            RouteOutcome::Forward(f) => (f.route.clone(), f.backend.to_string(), f.path.clone()),
            other => panic!("not forwarded: {other:?}"),
        }
    }

    #[test]
    fn kserve_routes_on_a_shared_gateway() {
        let gw = kserve_gateway();
        let routes = [
            kserve_route("team-a", "iris"),
            kserve_route("team-b", "wine"),
        ];
        let got = go(
            &gw,
            &routes,
            &[],
            "iris-team-a.example.com",
            "POST",
            "/v1/models/iris:predict",
            &[],
        );
        assert_eq!(
            forwarded(&got),
            (
                "team-a/iris".into(),
                "team-a/iris-predictor".into(),
                "/v1/models/iris:predict".into()
            )
        );
        let RouteOutcome::Forward(f) = got else {
            unreachable!()
        };
        assert_eq!(f.port, 80);
        assert_eq!(f.timeout, Some(Duration::from_secs(60)));
        let mut headers = HeaderMap::new();
        f.request_headers.apply(&mut headers);
        assert_eq!(headers["kserve-isvc-name"], "iris");
        assert_eq!(
            forwarded(&go(
                &gw,
                &routes,
                &[],
                "WINE-team-b.example.com",
                "GET",
                "/",
                &[]
            ))
            .1,
            "team-b/wine-predictor"
        );
        assert_eq!(
            go(&gw, &routes, &[], "other.example.com", "GET", "/", &[]),
            RouteOutcome::NotFound
        );
    }

    #[test]
    fn attachment() {
        let same = gateway(json!([{"name": "http", "port": 80, "protocol": "HTTP"}]));
        let selector = gateway(json!([{"name": "http", "port": 80, "protocol": "HTTP",
            "allowedRoutes": {"namespaces": {"from": "Selector", "selector": {"matchLabels": {"tier": "models"}}}}}]));
        let listeners = gateway(json!([
            {"name": "a", "port": 80, "protocol": "HTTP", "hostname": "*.a.example.com", "allowedRoutes": {"namespaces": {"from": "All"}}},
            {"name": "tcp", "port": 9000, "protocol": "TCP", "allowedRoutes": {"namespaces": {"from": "All"}}}
        ]));
        let r = |ns: &str, parent: serde_json::Value| {
            route(
                ns,
                "r",
                "2026-01-01T00:00:00Z",
                json!({"parentRefs": [parent], "rules": [{"backendRefs": [{"name": "svc", "port": 80}]}]}),
            )
        };
        let cases = [
            (
                "default allowedRoutes: same namespace only",
                &same,
                r("team-a", json!({"namespace": "kserve", "name": PARENT})),
                "m.a.example.com",
                false,
            ),
            (
                "same namespace route",
                &same,
                r("kserve", json!({"name": PARENT})),
                "m.a.example.com",
                true,
            ),
            (
                "selector admits a labelled namespace",
                &selector,
                r("team-a", json!({"namespace": "kserve", "name": PARENT})),
                "x",
                true,
            ),
            (
                "selector refuses others",
                &selector,
                r("team-b", json!({"namespace": "kserve", "name": PARENT})),
                "x",
                false,
            ),
            (
                "another gateway",
                &listeners,
                r("team-a", json!({"namespace": "kserve", "name": "other"})),
                "m.a.example.com",
                false,
            ),
            (
                "parentRef namespace defaults to the route's",
                &listeners,
                r("team-a", json!({"name": PARENT})),
                "m.a.example.com",
                false,
            ),
            (
                "listener hostname admits",
                &listeners,
                r("team-a", json!({"namespace": "kserve", "name": PARENT})),
                "m.a.example.com",
                true,
            ),
            (
                "listener hostname refuses",
                &listeners,
                r("team-a", json!({"namespace": "kserve", "name": PARENT})),
                "m.b.example.com",
                false,
            ),
            (
                "wildcard needs a label",
                &listeners,
                r("team-a", json!({"namespace": "kserve", "name": PARENT})),
                "a.example.com",
                false,
            ),
            (
                "sectionName of a TCP listener",
                &listeners,
                r(
                    "team-a",
                    json!({"namespace": "kserve", "name": PARENT, "sectionName": "tcp"}),
                ),
                "m.a.example.com",
                false,
            ),
            (
                "sectionName",
                &listeners,
                r(
                    "team-a",
                    json!({"namespace": "kserve", "name": PARENT, "sectionName": "a"}),
                ),
                "m.a.example.com",
                true,
            ),
            (
                "port",
                &listeners,
                r(
                    "team-a",
                    json!({"namespace": "kserve", "name": PARENT, "port": 8080}),
                ),
                "m.a.example.com",
                false,
            ),
        ];
        for (name, gw, route, host, routed) in cases {
            let got = go(gw, &[route], &[], host, "GET", "/", &[]);
            assert_eq!(got != RouteOutcome::NotFound, routed, "{name}: {got:?}");
        }
    }

    #[test]
    fn matching_and_precedence() {
        let gw = kserve_gateway();
        let parent = json!([{"namespace": "kserve", "name": PARENT}]);
        let backend = |svc: &str| json!([{"name": svc, "port": 80}]);
        let routes = [
            route(
                "team-a",
                "prefix",
                "2026-01-01T00:00:00Z",
                json!({"parentRefs": parent, "hostnames": ["m.example.com"], "rules": [
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/v1/"}}], "backendRefs": backend("v1")},
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/v1/models/special"}}], "backendRefs": backend("special")},
                    {"matches": [{"path": {"type": "Exact", "value": "/v1/models/special"}}], "backendRefs": backend("exact")},
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/v2"}, "method": "GET"}], "backendRefs": backend("v2-get")},
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}], "backendRefs": backend("v2")},
                    {"matches": [{"headers": [{"name": "x-canary", "value": "yes"}]}], "backendRefs": backend("canary")},
                    {"matches": [{"queryParams": [{"name": "debug", "type": "RegularExpression", "value": "t.*"}]}], "backendRefs": backend("debug")}
                ]}),
            ),
            route(
                "team-a",
                "older-wildcard",
                "2025-01-01T00:00:00Z",
                json!({"parentRefs": parent, "hostnames": ["*.example.com"], "rules": [
                    {"backendRefs": backend("wildcard")}
                ]}),
            ),
            route(
                "team-a",
                "newer-catch-all",
                "2026-06-01T00:00:00Z",
                json!({"parentRefs": parent, "rules": [{"backendRefs": backend("newest")}]}),
            ),
            route(
                "team-a",
                "older-catch-all",
                "2026-02-01T00:00:00Z",
                json!({"parentRefs": parent, "rules": [{"backendRefs": backend("older")}]}),
            ),
        ];
        let svc = |host: &str, method: &str, path: &str, headers: &[(&str, &str)]| {
            forwarded(&go(&gw, &routes, &[], host, method, path, headers)).1
        };
        let cases = [
            (
                "longest prefix",
                "m.example.com",
                "POST",
                "/v1/models/special/x",
                vec![],
                "team-a/special",
            ),
            (
                "exact beats prefix",
                "m.example.com",
                "POST",
                "/v1/models/special",
                vec![],
                "team-a/exact",
            ),
            (
                "prefix matches whole elements",
                "m.example.com",
                "POST",
                "/v1/models/specialty",
                vec![],
                "team-a/v1",
            ),
            (
                "method beats no method",
                "m.example.com",
                "GET",
                "/v2/x",
                vec![],
                "team-a/v2-get",
            ),
            (
                "without the method",
                "m.example.com",
                "POST",
                "/v2/x",
                vec![],
                "team-a/v2",
            ),
            (
                "/v2 prefix does not take /v20",
                "m.example.com",
                "POST",
                "/v20",
                vec![],
                "team-a/wildcard",
            ),
            (
                "header match",
                "m.example.com",
                "POST",
                "/other",
                vec![("X-Canary", "yes")],
                "team-a/canary",
            ),
            (
                "query regex",
                "m.example.com",
                "POST",
                "/other?debug=true",
                vec![],
                "team-a/debug",
            ),
            (
                "exact host beats wildcard",
                "m.example.com",
                "POST",
                "/v1/x",
                vec![],
                "team-a/v1",
            ),
            (
                "wildcard host beats no hostnames",
                "n.example.com",
                "POST",
                "/v1/x",
                vec![],
                "team-a/wildcard",
            ),
            (
                "oldest route wins a tie",
                "other.org",
                "GET",
                "/",
                vec![],
                "team-a/older",
            ),
        ];
        for (name, host, method, path, headers, want) in cases {
            assert_eq!(svc(host, method, path, &headers), want, "{name}");
        }
    }

    #[test]
    fn filters_and_backends() {
        let gw = kserve_gateway();
        let parent = json!([{"namespace": "kserve", "name": PARENT}]);
        let routes = [route(
            "team-a",
            "r",
            "2026-01-01T00:00:00Z",
            json!({"parentRefs": parent, "rules": [
                {"matches": [{"path": {"value": "/serving/team-a/iris"}}],
                 "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}, "hostname": "iris.internal"}}],
                 "backendRefs": [{"name": "iris-predictor", "port": 80}]},
                {"matches": [{"path": {"value": "/full"}}],
                 "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/v1/models/iris"}}}],
                 "backendRefs": [{"name": "iris-predictor", "port": 80}]},
                {"matches": [{"path": {"value": "/old"}}],
                 "filters": [{"type": "RequestRedirect", "requestRedirect": {"hostname": "new.example.com", "statusCode": 301, "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}}}]},
                {"matches": [{"path": {"value": "/elsewhere"}}], "backendRefs": [{"name": "svc", "namespace": "team-b", "port": 80}]},
                {"matches": [{"path": {"value": "/pool"}}], "backendRefs": [{"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "pool"}]},
                {"matches": [{"path": {"value": "/weights"}}], "backendRefs": [{"name": "light", "port": 80, "weight": 1}, {"name": "heavy", "port": 80, "weight": 9}, {"name": "off", "port": 80, "weight": 0}]},
                {"matches": [{"path": {"value": "/nothing"}}]}
            ]}),
        )];
        let grant = StoredGrant {
            namespace: "team-b".into(),
            spec: serde_json::from_value(json!({"from": [{"group": GATEWAY_GROUP, "kind": "HTTPRoute", "namespace": "team-a"}], "to": [{"group": "", "kind": "Service"}]})).unwrap(),
        };
        let at =
            |path: &str, grants: &[StoredGrant]| go(&gw, &routes, grants, "h", "GET", path, &[]);
        let RouteOutcome::Forward(f) = at("/serving/team-a/iris/v1/models/iris:predict", &[])
        else {
            panic!()
        };
        assert_eq!(
            (f.path.as_str(), f.host.as_deref()),
            ("/v1/models/iris:predict", Some("iris.internal"))
        );
        assert_eq!(forwarded(&at("/serving/team-a/iris", &[])).2, "/");
        assert_eq!(forwarded(&at("/full/x", &[])).2, "/v1/models/iris");
        assert_eq!(
            at("/old/page?x=1", &[]),
            RouteOutcome::Redirect {
                status: 301,
                location: "http://new.example.com/new/page?x=1".into()
            }
        );
        assert!(
            matches!(at("/elsewhere", &[]), RouteOutcome::InvalidBackend { .. }),
            "cross-namespace without grant"
        );
        assert_eq!(forwarded(&at("/elsewhere", &[grant])).1, "team-b/svc");
        assert!(
            matches!(at("/pool", &[]), RouteOutcome::InvalidBackend { .. }),
            "InferencePool is not modelled"
        );
        assert_eq!(forwarded(&at("/weights", &[])).1, "team-a/heavy");
        assert!(matches!(
            at("/nothing", &[]),
            RouteOutcome::InvalidBackend { .. }
        ));
    }

    #[test]
    fn durations_and_prefix_rewrites() {
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(replace_prefix("/foo", "/xyz", "/foo/bar"), "/xyz/bar");
        assert_eq!(replace_prefix("/foo/", "/", "/foo/bar"), "/bar");
        assert_eq!(replace_prefix("/foo", "/", "/foo"), "/");
        assert!(hostname_matches("*.example.com", "a.b.example.com"));
        assert!(!hostname_matches("*.example.com", "example.com"));
    }
}
