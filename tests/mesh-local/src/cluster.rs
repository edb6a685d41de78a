//! What the gateway double reads from the API server, as an ordinary client: every lookup on
//! every request (no cache), so a test's change applies at once. A resource type that is not
//! installed (404 on the list) reads as empty, as for Istio.

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde::de::DeserializeOwned;

use crate::authn::{JwksSource, StoredRequestAuthentication};
use crate::httproute::{
    GatewaySpec, GrantSpec, HttpRouteSpec, StoredGateway, StoredGrant, StoredRoute,
};
use crate::jwt::Jwks;
use crate::policy::{ROOT_NAMESPACE, StoredPolicy};
use crate::routing::ServiceUrl;

/// Why a lookup failed (API server trouble): the gateway answers 503.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ControlPlaneError(pub String);

type Result<T> = std::result::Result<T, ControlPlaneError>;

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn not_installed(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Lists a custom resource in one namespace or all; not installed → empty.
async fn list_dynamic(
    client: &kube::Client,
    ar: &ApiResource,
    namespace: Option<&str>,
) -> Result<Vec<DynamicObject>> {
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    };
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list.items),
        Err(e) if not_installed(&e) => Ok(Vec::new()),
        Err(e) => Err(ControlPlaneError(format!("listing {}: {e}", ar.plural))),
    }
}

/// A stored object's spec, or None (with a warning) when it does not parse: admission would have
/// refused it, so it is skipped as Istio skips invalid config.
fn spec_of<T: DeserializeOwned>(object: &DynamicObject) -> Option<T> {
    let spec = match object.data.get("spec") {
        Some(serde_json::Value::Null) | None => serde_json::json!({}),
        Some(spec) => spec.clone(),
    };
    match serde_json::from_value(spec) {
        Ok(spec) => Some(spec),
        Err(error) => {
            tracing::warn!(
                namespace = object.metadata.namespace.as_deref().unwrap_or_default(),
                name = object.metadata.name.as_deref().unwrap_or_default(),
                %error,
                "skipping malformed object"
            );
            None
        }
    }
}

fn name_of(object: &DynamicObject) -> String {
    object.metadata.name.clone().unwrap_or_default()
}

fn namespace_of(object: &DynamicObject) -> String {
    object.metadata.namespace.clone().unwrap_or_default()
}

/// The routable URLs of all InferenceServices (`status.url`).
pub async fn inference_service_urls(client: &kube::Client) -> Result<Vec<ServiceUrl>> {
    let ar = resource(
        "serving.kserve.io",
        "v1beta1",
        "InferenceService",
        "inferenceservices",
    );
    Ok(list_dynamic(client, &ar, None)
        .await?
        .iter()
        .filter_map(|isvc| {
            let url = isvc.data.get("status")?.get("url")?.as_str()?;
            ServiceUrl::parse(
                isvc.metadata.namespace.as_deref()?,
                isvc.metadata.name.as_deref()?,
                url,
            )
        })
        .collect())
}

/// Pods of a namespace matching a label selector (`k=v,k2=v2`), oldest first as listed.
pub async fn pods(client: &kube::Client, namespace: &str, selector: &str) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    api.list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .map_err(|e| ControlPlaneError(format!("listing pods: {e}")))
}

pub async fn service(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Service>> {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name)
        .await
        .map_err(|e| ControlPlaneError(format!("reading Service {namespace}/{name}: {e}")))
}

/// A namespace's labels (none when it does not exist).
pub async fn namespace_labels(
    client: &kube::Client,
    name: &str,
) -> Result<BTreeMap<String, String>> {
    let api: Api<Namespace> = Api::all(client.clone());
    let namespace = api
        .get_opt(name)
        .await
        .map_err(|e| ControlPlaneError(format!("reading Namespace {name}: {e}")))?;
    Ok(namespace
        .and_then(|n| n.metadata.labels)
        .unwrap_or_default())
}

/// The labels of every namespace (for `allowedRoutes` selectors).
pub async fn all_namespace_labels(
    client: &kube::Client,
) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let api: Api<Namespace> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| ControlPlaneError(format!("listing namespaces: {e}")))?;
    Ok(list
        .items
        .into_iter()
        .map(|n| {
            (
                n.metadata.name.unwrap_or_default(),
                n.metadata.labels.unwrap_or_default(),
            )
        })
        .collect())
}

/// The namespaces whose policies can bind a proxy in `namespace`: its own and the root.
fn with_root(namespaces: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = namespaces.iter().map(|n| (*n).to_owned()).collect();
    all.push(ROOT_NAMESPACE.to_owned());
    all.sort();
    all.dedup();
    all
}

/// The objects of one kind stored in `namespaces` and the root namespace, with their specs.
async fn in_namespaces<T: DeserializeOwned>(
    client: &kube::Client,
    ar: &ApiResource,
    namespaces: &[&str],
) -> Result<Vec<(String, String, T)>> {
    let mut all = Vec::new();
    for ns in with_root(namespaces) {
        for object in list_dynamic(client, ar, Some(&ns)).await? {
            if let Some(spec) = spec_of::<T>(&object) {
                all.push((ns.clone(), name_of(&object), spec));
            }
        }
    }
    Ok(all)
}

/// AuthorizationPolicies stored in `namespaces` and the root namespace.
pub async fn authorization_policies(
    client: &kube::Client,
    namespaces: &[&str],
) -> Result<Vec<StoredPolicy>> {
    let ar = resource(
        "security.istio.io",
        "v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
    );
    Ok(in_namespaces(client, &ar, namespaces)
        .await?
        .into_iter()
        .map(|(namespace, name, spec)| StoredPolicy {
            namespace,
            name,
            spec,
        })
        .collect())
}

/// RequestAuthentications stored in `namespaces` and the root namespace.
pub async fn request_authentications(
    client: &kube::Client,
    namespaces: &[&str],
) -> Result<Vec<StoredRequestAuthentication>> {
    let ar = resource(
        "security.istio.io",
        "v1",
        "RequestAuthentication",
        "requestauthentications",
    );
    Ok(in_namespaces(client, &ar, namespaces)
        .await?
        .into_iter()
        .map(|(namespace, name, spec)| StoredRequestAuthentication {
            namespace,
            name,
            spec,
        })
        .collect())
}

fn gateway_api(kind: &str, plural: &str, version: &str) -> ApiResource {
    resource(crate::policy::GATEWAY_GROUP, version, kind, plural)
}

/// A Gateway (gateway.networking.k8s.io/v1), if it exists.
pub async fn gateway(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<StoredGateway>> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &gateway_api("Gateway", "gateways", "v1"),
    );
    let object = match api.get_opt(name).await {
        Ok(object) => object,
        Err(e) if not_installed(&e) => None,
        Err(e) => {
            return Err(ControlPlaneError(format!(
                "reading Gateway {namespace}/{name}: {e}"
            )));
        }
    };
    Ok(object.and_then(|o| {
        let spec: GatewaySpec = spec_of(&o)?;
        Some(StoredGateway {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            labels: o.metadata.labels.clone().unwrap_or_default(),
            annotations: o.metadata.annotations.clone().unwrap_or_default(),
            spec,
        })
    }))
}

/// Every HTTPRoute in the cluster.
pub async fn http_routes(client: &kube::Client) -> Result<Vec<StoredRoute>> {
    let ar = gateway_api("HTTPRoute", "httproutes", "v1");
    Ok(list_dynamic(client, &ar, None)
        .await?
        .iter()
        .filter_map(|o| {
            let spec: HttpRouteSpec = spec_of(o)?;
            Some(StoredRoute {
                namespace: namespace_of(o),
                name: name_of(o),
                created: o
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default(),
                spec,
            })
        })
        .collect())
}

/// Every ReferenceGrant (v1beta1, served by every Gateway API release that has it).
pub async fn reference_grants(client: &kube::Client) -> Result<Vec<StoredGrant>> {
    let ar = gateway_api("ReferenceGrant", "referencegrants", "v1beta1");
    Ok(list_dynamic(client, &ar, None)
        .await?
        .iter()
        .filter_map(|o| {
            let spec: GrantSpec = spec_of(o)?;
            Some(StoredGrant {
                namespace: namespace_of(o),
                spec,
            })
        })
        .collect())
}

/// Fetches a JWKS as istiod would for the proxies; any failure gives an empty key set, so tokens
/// fail verification as with Istio's placeholder JWKS.
pub async fn jwks(
    client: &kube::Client,
    http: &HttpClient<HttpConnector, Full<Bytes>>,
    source: &JwksSource,
) -> Result<Jwks> {
    let text = match source {
        JwksSource::Inline(text) => Some(text.clone()),
        JwksSource::ApiServer(path) => {
            let request = http::Request::get(path.as_str())
                .body(Vec::new())
                .map_err(|e| ControlPlaneError(format!("building JWKS request: {e}")))?;
            // The API server's own keys: failing to read them is the control plane's trouble.
            Some(
                client
                    .request_text(request)
                    .await
                    .map_err(|e| ControlPlaneError(format!("fetching JWKS: {e}")))?,
            )
        }
        JwksSource::Url(url) => http_get(http, url).await,
        JwksSource::Discovery(issuer) => {
            let discovery = format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            );
            match http_get(http, &discovery).await {
                Some(document) => {
                    let uri = serde_json::from_str::<serde_json::Value>(&document)
                        .ok()
                        .and_then(|d| d.get("jwks_uri")?.as_str().map(str::to_owned));
                    match uri {
                        Some(uri) => http_get(http, &uri).await,
                        None => None,
                    }
                }
                None => None,
            }
        }
    };
    Ok(text
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| {
            tracing::warn!(
                ?source,
                "JWKS not available; tokens for this issuer will fail"
            );
            Jwks::default()
        }))
}

/// GET over plain HTTP (the double has no TLS client for arbitrary hosts).
async fn http_get(http: &HttpClient<HttpConnector, Full<Bytes>>, url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), http.get(uri))
        .await
        .ok()?
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = response.into_body().collect().await.ok()?.to_bytes();
    String::from_utf8(body.to_vec()).ok()
}
