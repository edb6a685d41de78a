//! Which InferenceService a request reaches, as KServe's VirtualServices on the ingress gateway
//! decide it: by Host (`status.url` host, Knative or standard form) or, for `pathTemplate` URLs,
//! by the `/serving/<ns>/<name>/` prefix, which is rewritten to `/` before proxying.

/// An InferenceService's routable URL (`status.url`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceUrl {
    pub namespace: String,
    pub name: String,
    /// Lower-case host without port.
    pub host: String,
    /// Path prefix of `status.url` without trailing slash; empty for host-based URLs.
    pub path: String,
}

impl ServiceUrl {
    /// Parses `status.url`; None when it is not an absolute http(s) URL.
    pub fn parse(namespace: &str, name: &str, status_url: &str) -> Option<ServiceUrl> {
        let uri: http::Uri = status_url.parse().ok()?;
        let host = uri.host()?.to_ascii_lowercase();
        Some(ServiceUrl {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            host,
            path: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

/// Where a request goes: the InferenceService and the path the predictor receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub namespace: String,
    pub name: String,
    /// Path and query as the predictor sees them.
    pub upstream_path_and_query: String,
}

/// Picks the InferenceService for a request's Host header and path (with query).
pub fn route(services: &[ServiceUrl], host_header: &str, path_and_query: &str) -> Option<Route> {
    let host = strip_port(host_header).to_ascii_lowercase();
    // The ingress gateway serves external domains only: cluster-local hosts (Knative's
    // svc.cluster.local default, or cluster-local visibility) are routed by
    // knative-local-gateway, so from outside they are a 404, the sample's FAQ 1.
    if is_cluster_local(&host) {
        return None;
    }
    let path = path_and_query.split('?').next().unwrap_or_default();
    // Path-based routes are more specific than a bare host on the same domain.
    let path_based = services
        .iter()
        .filter(|s| s.host == host && !s.path.is_empty())
        .find_map(|s| {
            let rest = path_and_query.strip_prefix(&s.path)?;
            rest.starts_with('/').then(|| Route {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                upstream_path_and_query: rest.to_owned(),
            })
        });
    path_based.or_else(|| {
        services
            .iter()
            .find(|s| s.host == host && s.path.is_empty() && path.starts_with('/'))
            .map(|s| Route {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                upstream_path_and_query: path_and_query.to_owned(),
            })
    })
}

/// Hosts only knative-local-gateway serves.
pub fn is_cluster_local(host: &str) -> bool {
    host.ends_with(".svc.cluster.local") || host.ends_with(".svc")
}

/// The host part of a Host header (`name:port`, `[v6]:port`).
pub fn strip_port(host: &str) -> &str {
    if let Some(bracketed) = host.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or_default();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services() -> Vec<ServiceUrl> {
        [
            (
                "kubeflow-user-example-com",
                "sklearn-iris",
                "http://sklearn-iris.kubeflow-user-example-com.example.com",
            ),
            ("team-a", "standard", "http://standard-team-a.example.com"),
            (
                "team-b",
                "by-path",
                "http://models.example.com/serving/team-b/by-path",
            ),
            (
                "team-b",
                "by-path-2",
                "http://models.example.com/serving/team-b/by-path-2",
            ),
        ]
        .into_iter()
        .map(|(ns, name, url)| ServiceUrl::parse(ns, name, url).unwrap())
        .collect()
    }

    #[test]
    fn cluster_local_hosts_are_not_routed_from_outside() {
        let services: Vec<ServiceUrl> =
            [("team-a", "local", "http://local.team-a.svc.cluster.local")]
                .into_iter()
                .map(|(ns, name, url)| ServiceUrl::parse(ns, name, url).unwrap())
                .collect();
        assert_eq!(
            route(
                &services,
                "local.team-a.svc.cluster.local",
                "/v1/models/local"
            ),
            None
        );
        assert!(is_cluster_local("x.ns.svc"));
        assert!(!is_cluster_local("x.ns.example.com"));
    }

    #[test]
    fn routes() {
        let cases = [
            (
                "knative host",
                "sklearn-iris.kubeflow-user-example-com.example.com",
                "/v1/models/sklearn-iris:predict",
                Some(("sklearn-iris", "/v1/models/sklearn-iris:predict")),
            ),
            (
                "host with port, mixed case",
                "Sklearn-Iris.kubeflow-user-example-com.example.com:8080",
                "/v1/models/sklearn-iris",
                Some(("sklearn-iris", "/v1/models/sklearn-iris")),
            ),
            (
                "standard host",
                "standard-team-a.example.com",
                "/v2/models/standard/infer",
                Some(("standard", "/v2/models/standard/infer")),
            ),
            (
                "path template, prefix stripped",
                "models.example.com",
                "/serving/team-b/by-path/v1/models/by-path:predict?x=1",
                Some(("by-path", "/v1/models/by-path:predict?x=1")),
            ),
            (
                "path template, longer name not confused",
                "models.example.com",
                "/serving/team-b/by-path-2/v1/models/m",
                Some(("by-path-2", "/v1/models/m")),
            ),
            (
                "path template without trailing slash",
                "models.example.com",
                "/serving/team-b/by-path",
                None,
            ),
            (
                "unknown host",
                "sklearn-iris.other.example.com",
                "/v1/models/sklearn-iris:predict",
                None,
            ),
            (
                "domain of path-based models, other path",
                "models.example.com",
                "/v1/models/x",
                None,
            ),
        ];
        for (name, host, path, want) in cases {
            let got = route(&services(), host, path);
            let got = got
                .as_ref()
                .map(|r| (r.name.as_str(), r.upstream_path_and_query.as_str()));
            assert_eq!(got, want, "{name}");
        }
    }
}
