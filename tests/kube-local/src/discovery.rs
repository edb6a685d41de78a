//! Discovery documents, the OpenAPI v3 index kubectl reads, and server-side Table printing.

use rsa::sha2::{Digest, Sha256};
use serde_json::{Value, json};

use crate::resources::{Registry, ResourceType};
use crate::util;

pub const KUBERNETES_VERSION: &str = "v1.35.0";

pub fn version() -> Value {
    json!({
        "major": "1", "minor": "35", "gitVersion": format!("{KUBERNETES_VERSION}+kube-local"),
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25.0", "compiler": "gc", "platform": "linux/amd64",
    })
}

pub fn api_versions(host: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}]})
}

fn group_doc(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

pub fn api_group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .groups()
        .iter()
        .map(|(g, vs)| group_doc(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(reg: &Registry, group: &str) -> Option<Value> {
    let (_, versions) = reg.groups().into_iter().find(|(g, _)| g == group)?;
    let mut doc = group_doc(group, &versions);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut resources = Vec::new();
    for rt in reg
        .all()
        .filter(|rt| rt.group == group && rt.version == version)
    {
        let mut r = json!({
            "name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced, "kind": rt.kind, "verbs": rt.verbs(),
        });
        if !rt.short_names.is_empty() {
            r["shortNames"] = json!(rt.short_names);
        }
        if !rt.categories.is_empty() {
            r["categories"] = json!(rt.categories);
        }
        resources.push(r);
        if rt.status_subresource {
            resources.push(json!({"name": format!("{}/status", rt.plural), "singularName": "", "namespaced": rt.namespaced, "kind": rt.kind, "verbs": ["get", "patch", "update"]}));
        }
        if rt.plural == "serviceaccounts" && group.is_empty() {
            resources.push(json!({"name": "serviceaccounts/token", "singularName": "", "namespaced": true, "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest", "verbs": ["create"]}));
        }
    }
    if resources.is_empty() {
        return None;
    }
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The OpenAPI v3 document of one group-version: paths only, with the PATCH parameters and
/// media types kubectl inspects (fieldValidation support; no strategic merge, so kubectl falls
/// back to its compiled-in types for built-ins and to JSON merge patch for custom resources).
pub fn openapi_v3_gv(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let query = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    for rt in reg
        .all()
        .filter(|rt| rt.group == group && rt.version == version)
    {
        let gvk = json!({"group": group, "version": version, "kind": rt.kind});
        let base = if rt.namespaced {
            format!(
                "/{}/namespaces/{{namespace}}/{}",
                gv_path(group, version),
                rt.plural
            )
        } else {
            format!("/{}/{}", gv_path(group, version), rt.plural)
        };
        let ok = json!({"200": {"description": "OK"}});
        let content = |types: &[&str]| -> Value {
            let mut m = serde_json::Map::new();
            for t in types {
                m.insert(t.to_string(), json!({"schema": {"type": "object"}}));
            }
            json!({"content": m})
        };
        let write_params = json!([
            query("dryRun"),
            query("fieldManager"),
            query("fieldValidation")
        ]);
        let op = |id: &str, params: &Value, body: Option<Value>| -> Value {
            let mut o = json!({"operationId": id, "x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": ok});
            if let Some(b) = body {
                o["requestBody"] = b;
            }
            o
        };
        if rt.create_only {
            paths.insert(
                base,
                json!({"post": op("create", &write_params, Some(content(&["application/json"])))}),
            );
            continue;
        }
        paths.insert(base.clone(), json!({
            "get": op("list", &json!([query("labelSelector"), query("fieldSelector"), query("limit"), query("continue"), query("watch")]), None),
            "post": op("create", &write_params, Some(content(&["application/json"]))),
        }));
        let mut patch_params = write_params.as_array().cloned().unwrap_or_default();
        patch_params.push(query("force"));
        let item = json!({
            "get": op("read", &json!([]), None),
            "put": op("replace", &write_params, Some(content(&["application/json"]))),
            "patch": op("patch", &Value::Array(patch_params), Some(content(&["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]))),
            "delete": op("delete", &json!([query("dryRun"), query("propagationPolicy")]), None),
        });
        paths.insert(format!("{base}/{{name}}"), item);
    }
    if paths.is_empty() {
        return None;
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION}, "paths": paths, "components": {"schemas": {}}}),
    )
}

/// The OpenAPI v2 document, as protobuf (what kubectl and Helm ask for) or JSON. They download it
/// to validate on the client the kinds the server-side field validation check does not cover
/// (create-only kinds such as TokenReview, kinds it cannot find a PATCH for). It has no
/// definitions: kubectl skips client-side validation of a kind it finds no schema for, and the
/// server still validates what it stores (see the README, "Where it differs").
pub fn openapi_v2(protobuf: bool) -> Vec<u8> {
    if !protobuf {
        let doc = json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION}, "paths": {}, "definitions": {}});
        return doc.to_string().into_bytes();
    }
    // gnostic's openapi_v2.Document: swagger = 1, info = 2 (Info: title = 1, version = 2).
    let mut info = Vec::new();
    proto_string(&mut info, 1, "Kubernetes");
    proto_string(&mut info, 2, KUBERNETES_VERSION);
    let mut doc = Vec::new();
    proto_string(&mut doc, 1, "2.0");
    proto_bytes(&mut doc, 2, &info);
    doc
}

/// The media type of the protobuf form of `/openapi/v2`.
pub const OPENAPI_V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

fn proto_string(out: &mut Vec<u8>, field: u64, value: &str) {
    proto_bytes(out, field, value.as_bytes());
}

fn proto_bytes(out: &mut Vec<u8>, field: u64, value: &[u8]) {
    proto_varint(out, (field << 3) | 2);
    proto_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

fn proto_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn hash(doc: &Value) -> String {
    let digest = Sha256::digest(doc.to_string().as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02X}")).collect()
}

pub fn openapi_v3_root(reg: &Registry) -> Value {
    let mut gvs: Vec<(String, String)> = reg
        .all()
        .map(|rt| (rt.group.clone(), rt.version.clone()))
        .collect();
    gvs.dedup();
    let mut paths = serde_json::Map::new();
    for (g, v) in gvs {
        if let Some(doc) = openapi_v3_gv(reg, &g, &v) {
            let p = gv_path(&g, &v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash(&doc))}),
            );
        }
    }
    json!({"paths": paths})
}

/// Renders one cell of a Table row from the object.
type CellFn = Box<dyn Fn(&Value) -> Value>;

fn column(name: &str, kind: &str, format: &str, priority: i64) -> Value {
    json!({"name": name, "type": kind, "format": format, "description": "", "priority": priority})
}

/// The API server's Table rendering (kubectl get asks for it).
pub fn table(
    rt: &ResourceType,
    items: &[Value],
    resource_version: &str,
    continue_token: Option<&str>,
) -> Value {
    let mut cols = vec![column("Name", "string", "name", 0)];
    let mut cell_fns: Vec<CellFn> = vec![Box::new(|o: &Value| o["metadata"]["name"].clone())];
    let age = |o: &Value| {
        json!(util::human_age(
            o["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or_default()
        ))
    };
    let count = |v: &Value| json!(v.as_object().map(|m| m.len()).unwrap_or(0));
    match &rt.custom {
        Some(custom) => {
            let defined = !custom.printer_columns.is_empty();
            for pc in &custom.printer_columns {
                let kind = pc["type"].as_str().unwrap_or("string").to_string();
                let path = pc["jsonPath"].as_str().unwrap_or_default().to_string();
                cols.push(column(
                    pc["name"].as_str().unwrap_or_default(),
                    &kind,
                    pc["format"].as_str().unwrap_or_default(),
                    pc["priority"].as_i64().unwrap_or(0),
                ));
                cell_fns.push(Box::new(move |o: &Value| {
                    let found = util::json_path(o, &path);
                    match (found.first(), kind.as_str()) {
                        (None, _) => Value::Null,
                        (Some(Value::String(s)), "date") => json!(util::human_age(s)),
                        (Some(v), _) => (*v).clone(),
                    }
                }));
            }
            if !defined {
                cols.push(column("Age", "date", "", 0));
                cell_fns.push(Box::new(age));
            }
        }
        None => {
            match rt.plural.as_str() {
                "secrets" => {
                    cols.push(column("Type", "string", "", 0));
                    cell_fns.push(Box::new(|o: &Value| o["type"].clone()));
                    cols.push(column("Data", "string", "", 0));
                    cell_fns.push(Box::new(move |o: &Value| count(&o["data"])));
                }
                "configmaps" => {
                    cols.push(column("Data", "string", "", 0));
                    cell_fns.push(Box::new(move |o: &Value| {
                        json!(
                            count(&o["data"]).as_u64().unwrap_or(0)
                                + count(&o["binaryData"]).as_u64().unwrap_or(0)
                        )
                    }));
                }
                "namespaces" => {
                    cols.push(column("Status", "string", "", 0));
                    cell_fns.push(Box::new(|o: &Value| o["status"]["phase"].clone()));
                }
                "pods" => {
                    cols.push(column("Ready", "string", "", 0));
                    cell_fns.push(Box::new(|o: &Value| {
                        let total = o["spec"]["containers"]
                            .as_array()
                            .map(Vec::len)
                            .unwrap_or(0);
                        let ready = o["status"]["containerStatuses"]
                            .as_array()
                            .map(|c| c.iter().filter(|s| s["ready"] == true).count())
                            .unwrap_or(0);
                        json!(format!("{ready}/{total}"))
                    }));
                    cols.push(column("Status", "string", "", 0));
                    cell_fns.push(Box::new(|o: &Value| o["status"]["phase"].clone()));
                    cols.push(column("Restarts", "string", "", 0));
                    cell_fns.push(Box::new(|_: &Value| json!("0")));
                }
                _ => {}
            }
            if rt.plural == "customresourcedefinitions" {
                // The API server prints the creation time itself for CRDs.
                cols.push(column("Created At", "date", "", 0));
                cell_fns.push(Box::new(|o: &Value| {
                    o["metadata"]["creationTimestamp"].clone()
                }));
            } else {
                cols.push(column("Age", "string", "", 0));
                cell_fns.push(Box::new(age));
            }
        }
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|o| json!({"cells": cell_fns.iter().map(|f| f(o)).collect::<Vec<_>>(), "object": o}))
        .collect();
    let mut meta = json!({"resourceVersion": resource_version});
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": cols, "rows": rows})
}
