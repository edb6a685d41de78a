//! The HTTP front: authentication, routing, faults, accounting, RBAC, and each verb's response.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request as HttpRequest, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::discovery;
use crate::error::ApiError;
use crate::faults::{FaultRule, Faults};
use crate::patch::PatchType;
use crate::rbac::{self, Attributes};
use crate::requests::{Request, RequestLog};
use crate::resources::ResourceType;
use crate::selectors::{FieldSelector, Filter, LabelSelector};
use crate::store::{self, DeleteOptions, Event, EventType, Follower, Store, WriteOptions};
use crate::tokens::{TokenService, User};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Everything a request handler needs.
pub struct Shared {
    pub store: Store,
    pub tokens: TokenService,
    pub faults: Faults,
    pub requests: RequestLog,
    pub rbac: bool,
    pub unauthenticated_admin: bool,
    pub addr: SocketAddr,
    pub ca_pem: String,
    /// How often an idle watch that asked for bookmarks gets one.
    pub bookmark_every: Duration,
}

impl Shared {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

fn json_response(code: u16, body: &Value) -> Response<Body> {
    bytes_response(code, body.to_string())
}

fn bytes_response(code: u16, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut resp = json_response(e.code, &e.status());
    if let Some(secs) = e.retry_after
        && let Ok(v) = hyper::header::HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(hyper::header::RETRY_AFTER, v);
    }
    resp
}

fn not_found_path() -> ApiError {
    ApiError::new(404, "NotFound", "the server could not find the requested resource").with_details(json!({"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]}))
}

/// Query parameters, percent-decoded.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(q.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

/// What a resource URL addresses.
struct Target {
    rt: Arc<ResourceType>,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_target(shared: &Shared, segs: &[&str]) -> Result<Option<Target>, ApiError> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Ok(None),
    };
    if rest.is_empty() {
        return Ok(None);
    }
    let (namespace, plural, name, sub) = match rest {
        ["namespaces", ns, plural] if !matches!(*plural, "status" | "finalize") => {
            (Some(*ns), *plural, None, None)
        }
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name), None),
        ["namespaces", ns, plural, name, sub] => (Some(*ns), *plural, Some(*name), Some(*sub)),
        [plural] => (None, *plural, None, None),
        [plural, name] => (None, *plural, Some(*name), None),
        [plural, name, sub] => (None, *plural, Some(*name), Some(*sub)),
        _ => return Err(not_found_path()),
    };
    let rt = shared
        .store
        .lock()
        .registry
        .get(group, version, plural)
        .ok_or_else(not_found_path)?;
    if rt.namespaced && namespace.is_none() && name.is_some() {
        return Err(not_found_path());
    }
    let namespace = if rt.namespaced {
        namespace.map(str::to_string)
    } else {
        None
    };
    if let Some(s) = sub {
        let ok = (s == "status" && rt.status_subresource)
            || (s == "token" && rt.plural == "serviceaccounts" && rt.group.is_empty());
        if !ok {
            return Err(not_found_path());
        }
    }
    Ok(Some(Target {
        rt,
        namespace,
        name: name.map(str::to_string),
        subresource: sub.map(str::to_string),
    }))
}

fn verb_of(method: &Method, t: &Target, q: &Query) -> Option<&'static str> {
    Some(match (method.as_str(), t.name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if q.flag("watch") => "watch",
        ("GET", false) => "list",
        ("POST", false) => "create",
        ("POST", true) if t.subresource.as_deref() == Some("token") => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    })
}

fn bearer(req: &HttpRequest<Incoming>) -> Option<String> {
    let v = req
        .headers()
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    v.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

async fn read_body(req: HttpRequest<Incoming>) -> Result<Bytes, ApiError> {
    req.into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))
}

fn parse_json_or_yaml(bytes: &[u8], allow_yaml: bool) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    if bytes.starts_with(b"k8s\x00") {
        return crate::protobuf::to_json(bytes);
    }
    match serde_json::from_slice(bytes) {
        Ok(v) => Ok(v),
        Err(e) if allow_yaml => serde_yaml::from_slice(bytes)
            .map_err(|y| ApiError::bad_request(format!("error decoding YAML: {y} (as JSON: {e})"))),
        Err(e) => Err(ApiError::bad_request(format!(
            "couldn't get version/kind; json parse error: {e}"
        ))),
    }
}

/// Entry point for one HTTP request.
pub async fn handle(
    shared: Arc<Shared>,
    req: HttpRequest<Incoming>,
) -> Result<Response<Body>, Infallible> {
    Ok(match route(&shared, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    })
}

async fn route(
    shared: &Arc<Shared>,
    req: HttpRequest<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let q = Query::parse(req.uri().query());
    match segs.as_slice() {
        ["version"] => return Ok(json_response(200, &discovery::version())),
        ["healthz" | "livez" | "readyz"] => return Ok(Response::new(full("ok"))),
        [".well-known", "openid-configuration"] => {
            return Ok(json_response(
                200,
                &shared.tokens.openid_configuration(&shared.base_url()),
            ));
        }
        ["openid", "v1", "jwks"] => return Ok(json_response(200, &shared.tokens.jwks())),
        _ => {}
    }
    let user = match bearer(&req) {
        // The admin token needs no store lookup (the common case, kept off the store lock).
        Some(token) if token == shared.tokens.admin_token() => User::admin(),
        Some(token) => {
            let st = shared.store.lock();
            shared
                .tokens
                .authenticate(&st, &token)
                .ok_or_else(ApiError::unauthorized)?
        }
        // kubectl (client-go) never sends credentials over plain http; the API server's old
        // insecure port treated such requests as system:masters, and so does kube-local unless
        // told otherwise.
        None if shared.unauthenticated_admin => User::insecure_port(),
        None => return Err(ApiError::unauthorized()),
    };
    if segs.first() == Some(&"_kube-local") {
        if !user.is_admin() {
            return Err(ApiError::forbidden(
                "the kube-local admin endpoint is for the admin user only",
            ));
        }
        return admin(shared, req, &segs[1..]).await;
    }
    {
        let st = shared.store.lock();
        match segs.as_slice() {
            ["api"] => {
                return Ok(json_response(
                    200,
                    &discovery::api_versions(&shared.addr.to_string()),
                ));
            }
            ["apis"] => return Ok(json_response(200, &discovery::api_group_list(&st.registry))),
            ["api", v] => {
                return discovery::resource_list(&st.registry, "", v)
                    .map(|d| json_response(200, &d))
                    .ok_or_else(not_found_path);
            }
            ["apis", g] => {
                return discovery::api_group(&st.registry, g)
                    .map(|d| json_response(200, &d))
                    .ok_or_else(not_found_path);
            }
            ["apis", g, v] => {
                return discovery::resource_list(&st.registry, g, v)
                    .map(|d| json_response(200, &d))
                    .ok_or_else(not_found_path);
            }
            ["openapi", "v2"] => {
                let accept = req
                    .headers()
                    .get(hyper::header::ACCEPT)
                    .and_then(|a| a.to_str().ok())
                    .unwrap_or_default();
                let protobuf = accept.contains("protobuf");
                let mut resp = bytes_response(200, discovery::openapi_v2(protobuf));
                if protobuf {
                    resp.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(discovery::OPENAPI_V2_PROTOBUF),
                    );
                }
                return Ok(resp);
            }
            ["openapi", "v3"] => {
                return Ok(json_response(
                    200,
                    &discovery::openapi_v3_root(&st.registry),
                ));
            }
            ["openapi", "v3", "api", v] => {
                return discovery::openapi_v3_gv(&st.registry, "", v)
                    .map(|d| json_response(200, &d))
                    .ok_or_else(not_found_path);
            }
            ["openapi", "v3", "apis", g, v] => {
                return discovery::openapi_v3_gv(&st.registry, g, v)
                    .map(|d| json_response(200, &d))
                    .ok_or_else(not_found_path);
            }
            _ => {}
        }
    }
    let target = parse_target(shared, &segs)?.ok_or_else(not_found_path)?;
    let verb = verb_of(req.method(), &target, &q).ok_or_else(|| {
        ApiError::method_not_supported(&target.rt.group, &target.rt.plural, req.method().as_str())
    })?;
    let mut record = Request {
        seq: 0,
        verb: verb.to_string(),
        group: target.rt.group.clone(),
        resource: target.rt.plural.clone(),
        subresource: target.subresource.clone(),
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        caller: user.name.clone(),
        code: 0,
        at: std::time::Duration::ZERO, // stamped by the log
    };
    let result = serve_resource(shared, req, &q, &user, &target, verb).await;
    record.code = match &result {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.code,
    };
    shared.requests.record(record);
    result
}

async fn serve_resource(
    shared: &Arc<Shared>,
    req: HttpRequest<Incoming>,
    q: &Query,
    user: &User,
    t: &Target,
    verb: &str,
) -> Result<Response<Body>, ApiError> {
    let latency = shared.faults.current_latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(e) = shared
        .faults
        .take(verb, &t.rt.plural, t.subresource.as_deref())
    {
        return Err(e);
    }
    let fields = q
        .get("fieldSelector")
        .map(FieldSelector::parse)
        .transpose()?
        .unwrap_or_default();
    if shared.rbac {
        let attrs = Attributes {
            verb: verb.to_string(),
            group: t.rt.group.clone(),
            resource: t.rt.plural.clone(),
            subresource: t.subresource.clone(),
            namespace: t.namespace.clone(),
            name: t.name.clone().or_else(|| {
                matches!(verb, "list" | "watch")
                    .then(|| fields.pinned_name().map(str::to_string))
                    .flatten()
            }),
        };
        let allowed = rbac::allows(&shared.store.lock(), user, &attrs);
        if !allowed {
            return Err(rbac::forbidden(user, &attrs));
        }
    }
    let rt = &t.rt;
    let ns = t.namespace.clone().unwrap_or_default();
    let accept = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let as_table = accept.contains("as=Table");
    // `as=PartialObjectMetadata` (and `...List`): kube's metadata-only watches and lists.
    let metadata_only = accept.contains("as=PartialObjectMetadata");
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let user_agent = req
        .headers()
        .get(hyper::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let opts = WriteOptions {
        field_manager: q.get("fieldManager").map(str::to_string).or_else(|| {
            Some(
                user_agent
                    .split('/')
                    .next()
                    .unwrap_or("unknown")
                    .to_string(),
            )
            .filter(|s| !s.is_empty())
        }),
        dry_run: q.get("dryRun") == Some("All"),
        strict: q.get("fieldValidation") == Some("Strict"),
        force: q.flag("force"),
    };
    let filter = Filter {
        namespace: t.namespace.clone(),
        labels: q
            .get("labelSelector")
            .map(LabelSelector::parse)
            .transpose()?
            .unwrap_or_default(),
        fields,
    };
    match verb {
        "get" => {
            let stored =
                shared
                    .store
                    .lock()
                    .get_stored(rt, &ns, t.name.as_deref().unwrap_or_default())?;
            // Presented outside the store lock; as stored unless the version converts it.
            if as_table {
                let obj = store::present_owned(rt, stored.value());
                let rv = stored.resource_version().to_string();
                return Ok(json_response(200, &discovery::table(rt, &[obj], &rv, None)));
            }
            Ok(bytes_response(
                200,
                presented(rt, &stored, metadata_only).into_owned(),
            ))
        }
        "list" => {
            let limit = q.get("limit").and_then(|l| l.parse().ok());
            let res = shared
                .store
                .lock()
                .list(rt, &filter, limit, q.get("continue"))?;
            let rv = res.resource_version.to_string();
            if as_table {
                let items: Vec<Value> = res
                    .items
                    .iter()
                    .map(|o| store::present_owned(rt, o.value()))
                    .collect();
                return Ok(json_response(
                    200,
                    &discovery::table(rt, &items, &rv, res.continue_token.as_deref()),
                ));
            }
            let mut meta = json!({"resourceVersion": rv});
            if let Some(c) = &res.continue_token {
                meta["continue"] = json!(c);
            }
            if let Some(n) = res.remaining {
                meta["remainingItemCount"] = json!(n);
            }
            Ok(bytes_response(
                200,
                list_body(rt, &meta, &res.items, metadata_only),
            ))
        }
        "watch" => start_watch(shared, rt.clone(), filter, q, metadata_only),
        "create" => {
            let body = parse_json_or_yaml(&read_body(req).await?, false)?;
            create(shared, user, t, body, &opts)
        }
        "update" => {
            let body = parse_json_or_yaml(&read_body(req).await?, false)?;
            let obj = shared.store.lock().update(
                rt,
                &ns,
                t.name.as_deref().unwrap_or_default(),
                body,
                t.subresource.as_deref(),
                &opts,
            )?;
            Ok(json_response(200, &obj))
        }
        "patch" => {
            let ptype = PatchType::from_content_type(&content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(&content_type))?;
            let body = parse_json_or_yaml(&read_body(req).await?, ptype == PatchType::Apply)?;
            if ptype != PatchType::Apply && opts.force {
                return Err(ApiError::bad_request(
                    "force is only allowed for apply requests",
                ));
            }
            let (obj, created) = shared.store.lock().patch(
                rt,
                &ns,
                t.name.as_deref().unwrap_or_default(),
                ptype,
                &body,
                t.subresource.as_deref(),
                &opts,
            )?;
            Ok(json_response(if created { 201 } else { 200 }, &obj))
        }
        "delete" | "deletecollection" => {
            let body = parse_json_or_yaml(&read_body(req).await?, false)?;
            let dopts = DeleteOptions {
                propagation: body["propagationPolicy"]
                    .as_str()
                    .or(q.get("propagationPolicy"))
                    .map(str::to_string),
                precondition_uid: body["preconditions"]["uid"].as_str().map(str::to_string),
                precondition_rv: body["preconditions"]["resourceVersion"]
                    .as_str()
                    .map(str::to_string),
                dry_run: opts.dry_run
                    || body["dryRun"]
                        .as_array()
                        .is_some_and(|d| d.iter().any(|x| x == "All")),
            };
            if verb == "deletecollection" {
                let items = shared.store.lock().delete_collection(rt, &filter, &dopts)?;
                return Ok(json_response(
                    200,
                    &json!({"kind": rt.list_kind, "apiVersion": rt.api_version(), "metadata": {}, "items": items}),
                ));
            }
            let name = t.name.as_deref().unwrap_or_default();
            let (obj, gone) = shared.store.lock().delete(rt, &ns, name, &dopts)?;
            let code = if gone { 200 } else { 202 };
            // Custom resources and pods return the object; other built-ins a Success Status.
            if rt.custom.is_some() || rt.plural == "pods" || !gone {
                return Ok(json_response(code, &obj));
            }
            let mut details =
                json!({"name": name, "kind": rt.plural, "uid": obj["metadata"]["uid"]});
            if !rt.group.is_empty() {
                details["group"] = json!(rt.group);
            }
            Ok(json_response(
                code,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
            ))
        }
        _ => Err(ApiError::method_not_supported(&rt.group, &rt.plural, verb)),
    }
}

fn create(
    shared: &Arc<Shared>,
    user: &User,
    t: &Target,
    body: Value,
    opts: &WriteOptions,
) -> Result<Response<Body>, ApiError> {
    let rt = &t.rt;
    let ns = t.namespace.clone().unwrap_or_default();
    if t.subresource.as_deref() == Some("token") {
        let uid_of = |plural: &str, name: &str| {
            shared
                .store
                .lock()
                .uid_of(plural, &ns, name)
                .map(str::to_string)
        };
        let (resp, warning) = shared.tokens.token_request(
            uid_of,
            &ns,
            t.name.as_deref().unwrap_or_default(),
            &body,
        )?;
        let mut r = json_response(201, &resp);
        if let Some(w) = warning
            && let Ok(v) = hyper::header::HeaderValue::from_str(&format!("299 - \"{w}\""))
        {
            r.headers_mut().insert(hyper::header::WARNING, v);
        }
        return Ok(r);
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("authentication.k8s.io", "tokenreviews") => {
            let st = shared.store.lock();
            return Ok(json_response(201, &shared.tokens.token_review(&st, &body)));
        }
        ("authentication.k8s.io", "selfsubjectreviews") => {
            let info = json!({"username": user.name, "uid": user.uid, "groups": user.groups});
            return Ok(json_response(
                201,
                &json!({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1", "metadata": {"creationTimestamp": null}, "status": {"userInfo": info}}),
            ));
        }
        ("authorization.k8s.io", "selfsubjectaccessreviews") => {
            let st = shared.store.lock();
            return Ok(json_response(
                201,
                &rbac::self_subject_access_review(&st, user, &body),
            ));
        }
        ("authorization.k8s.io", _) => {
            return Err(ApiError::method_not_supported(
                &rt.group, &rt.plural, "create",
            ));
        }
        _ => {}
    }
    let obj = shared.store.lock().create(rt, &ns, body, opts)?;
    Ok(json_response(201, &obj))
}

/// A list response, each item encoded straight from storage (no copy of the list as a Value).
fn list_body(
    rt: &ResourceType,
    meta: &Value,
    items: &[Arc<store::Obj>],
    metadata_only: bool,
) -> Vec<u8> {
    let head = if metadata_only {
        json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
    } else {
        json!({"kind": rt.list_kind, "apiVersion": rt.api_version(), "metadata": meta})
    };
    let mut out = head.to_string().into_bytes();
    // Reopen the head object to append the items.
    out.pop();
    out.extend_from_slice(b",\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(presented(rt, item, metadata_only).as_bytes());
    }
    out.extend_from_slice(b"]}");
    out
}

/// The object as the client asked for it: whole, or only its metadata (as the API server
/// answers `as=PartialObjectMetadata`, e.g. a metadata-only watch of Secrets holds no data).
fn presented<'a>(
    rt: &ResourceType,
    obj: &'a store::Obj,
    metadata_only: bool,
) -> std::borrow::Cow<'a, str> {
    #[derive(serde::Deserialize)]
    struct Metadata {
        #[serde(default)]
        metadata: Value,
    }
    if !metadata_only {
        return store::present_json(rt, obj);
    }
    let metadata = serde_json::from_str::<Metadata>(obj.json())
        .map(|m| m.metadata)
        .unwrap_or_default();
    std::borrow::Cow::Owned(
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata})
            .to_string(),
    )
}

fn event_line(kind: &str, obj: &Value) -> Bytes {
    event_line_json(kind, &obj.to_string())
}

/// One line of a watch stream around an object's JSON text.
fn event_line_json(kind: &str, obj: &str) -> Bytes {
    let mut line = Vec::with_capacity(obj.len() + 32);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(obj.as_bytes());
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

/// What one store event looks like to a filtered watch, if it sees it at all.
fn view(ev: &Event, filter: &Filter) -> Option<EventType> {
    let now = ev.object.matches(filter);
    let before = ev.old.as_ref().is_some_and(|o| o.matches(filter));
    match ev.kind {
        EventType::Added => now.then_some(EventType::Added),
        EventType::Deleted => now.then_some(EventType::Deleted),
        EventType::Modified => match (before, now) {
            (true, true) => Some(EventType::Modified),
            (false, true) => Some(EventType::Added),
            (true, false) => Some(EventType::Deleted),
            (false, false) => None,
        },
    }
}

struct WatchState {
    rt: Arc<ResourceType>,
    filter: Filter,
    metadata_only: bool,
    backlog: std::collections::VecDeque<Arc<Event>>,
    follower: Follower,
    drop_rx: watch::Receiver<u64>,
    deadline: tokio::time::Instant,
    bookmarks: bool,
    /// Highest resourceVersion this watch has passed (for bookmarks).
    last_rv: u64,
    /// Send the initial-events-end bookmark once the backlog is drained.
    initial_end_bookmark: bool,
    /// A periodic bookmark waits for the backlog to drain.
    bookmark_due: bool,
    /// When the next periodic bookmark is due.
    next_bookmark: tokio::time::Instant,
    bookmark_every: Duration,
    done: bool,
}

/// ERROR event with a 410 Status (how the API server answers a too-old watch: 200, then this).
fn gone_response(e: &ApiError) -> Response<Body> {
    let mut resp = Response::new(full(event_line("ERROR", &e.status())));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta}),
    )
}

fn start_watch(
    shared: &Arc<Shared>,
    rt: Arc<ResourceType>,
    filter: Filter,
    q: &Query,
    metadata_only: bool,
) -> Result<Response<Body>, ApiError> {
    let key = rt.storage_key();
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1800);
    let send_initial = q.flag("sendInitialEvents");
    let rv_param = q.get("resourceVersion").unwrap_or_default();
    let (backlog, follower) = if rv_param.is_empty() || rv_param == "0" || send_initial {
        // The initial state: what the selection holds now, through the indexes.
        let (initial, follower) = shared.store.follow_now(&key, |st| st.select(&key, &filter));
        let events: Vec<Arc<Event>> = initial
            .into_iter()
            .map(|o| {
                Arc::new(Event {
                    rv: o.resource_version(),
                    kind: EventType::Added,
                    object: o,
                    old: None,
                })
            })
            .collect();
        (events, follower)
    } else {
        let from: u64 = rv_param
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv_param}")))?;
        match shared.store.follow_from(&key, from) {
            // The events after `from` come with the follower's first read.
            Ok(follower) => (Vec::new(), follower),
            Err(e) => return Ok(gone_response(&e)),
        }
    };
    let state = WatchState {
        rt,
        filter,
        metadata_only,
        backlog: backlog.into(),
        last_rv: follower.cursor(),
        follower,
        drop_rx: shared.faults.drop_watches.subscribe(),
        deadline: tokio::time::Instant::now() + Duration::from_secs(timeout),
        bookmarks: q.flag("allowWatchBookmarks"),
        initial_end_bookmark: send_initial && q.flag("allowWatchBookmarks"),
        bookmark_due: false,
        next_bookmark: tokio::time::Instant::now() + shared.bookmark_every,
        bookmark_every: shared.bookmark_every,
        done: false,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            if let Some(ev) = s.backlog.pop_front() {
                s.last_rv = s.last_rv.max(ev.rv);
                if let Some(kind) = view(&ev, &s.filter) {
                    let obj = presented(&s.rt, &ev.object, s.metadata_only);
                    return Some((
                        Ok::<_, Infallible>(Frame::data(event_line_json(kind.as_str(), &obj))),
                        s,
                    ));
                }
                continue;
            }
            if s.initial_end_bookmark {
                s.initial_end_bookmark = false;
                return Some((Ok(Frame::data(bookmark(&s.rt, s.last_rv, true))), s));
            }
            if s.bookmark_due {
                s.bookmark_due = false;
                return Some((Ok(Frame::data(bookmark(&s.rt, s.last_rv, false))), s));
            }
            tokio::select! {
                _ = tokio::time::sleep_until(s.deadline) => return None,
                _ = s.drop_rx.changed() => return None,
                _ = tokio::time::sleep_until(s.next_bookmark), if s.bookmarks => {
                    s.next_bookmark = tokio::time::Instant::now() + s.bookmark_every;
                    // Bookmarks carry the newest version, as the API server's do, so a quiet
                    // kind's watch can resume past later compactions of others; this kind's
                    // changes up to it go out first.
                    match s.follower.poll() {
                        Ok((events, newest)) => {
                            s.backlog.extend(events);
                            s.last_rv = s.last_rv.max(newest);
                            s.bookmark_due = true;
                        }
                        Err(_) => s.done = true,
                    }
                }
                r = s.follower.next() => match r {
                    Ok(events) => s.backlog.extend(events),
                    // Too slow (its next change left the history) or shut down: end the watch;
                    // the client resumes from its last version (and gets 410 if it is gone).
                    Err(_) => s.done = true,
                },
            }
        }
    });
    let mut resp = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}

/// `/_kube-local/...`: faults and accounting over HTTP, for the binary.
async fn admin(
    shared: &Arc<Shared>,
    req: HttpRequest<Incoming>,
    segs: &[&str],
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let body = parse_json_or_yaml(&read_body(req).await?, false)?;
    let millis = |b: &Value| Duration::from_millis(b["millis"].as_u64().unwrap_or(0));
    let ok = || json_response(200, &json!({"ok": true}));
    match (method.as_str(), segs) {
        ("POST", ["faults", "fail-next"]) => {
            let rule: FaultRule = serde_json::from_value(body)
                .map_err(|e| ApiError::bad_request(format!("fault rule: {e}")))?;
            shared.faults.fail_next(rule);
            Ok(ok())
        }
        ("POST", ["faults", "latency"]) => {
            shared.faults.latency(millis(&body));
            Ok(ok())
        }
        ("POST", ["faults", "drop-watches"]) => {
            shared.faults.drop_watches();
            Ok(ok())
        }
        ("POST", ["faults", "compact"]) => {
            shared.faults.compact();
            Ok(ok())
        }
        ("POST", ["faults", "refuse-connections"]) => {
            shared.faults.refuse_connections_for(millis(&body));
            Ok(ok())
        }
        ("POST", ["faults", "clear"]) => {
            shared.faults.clear();
            Ok(ok())
        }
        ("GET", ["requests"]) => Ok(json_response(
            200,
            &serde_json::to_value(shared.requests.snapshot()).unwrap_or_default(),
        )),
        ("GET", ["requests", "counts"]) => {
            let counts: Vec<Value> = shared.requests.counts().into_iter().map(|((verb, resource, caller), n)| json!({"verb": verb, "resource": resource, "caller": caller, "count": n})).collect();
            Ok(json_response(200, &Value::Array(counts)))
        }
        ("DELETE", ["requests"]) => {
            shared.requests.clear();
            Ok(ok())
        }
        _ => Err(not_found_path()),
    }
}
