//! Custom-resource admission as the API server does it: prune unknown fields, drop non-nullable
//! nulls, apply defaults, validate against the structural schema, then run CEL rules.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use regex::Regex;
use serde_json::{Map, Value};

use crate::error::FieldError;

/// Prunes and defaults `obj` in place; returns the paths of the fields it pruned
/// (for `fieldValidation=Strict`, which turns them into errors).
pub fn prune_and_default(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut pruned = Vec::new();
    walk_prune(schema, obj, "", true, &mut pruned);
    pruned
}

fn preserves(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn walk_prune(schema: &Value, value: &mut Value, path: &str, root: bool, pruned: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let props = schema["properties"].as_object();
            let additional = &schema["additionalProperties"];
            let embedded = schema["x-kubernetes-embedded-resource"].as_bool() == Some(true);
            if let Some(props) = props {
                // Non-nullable nulls are dropped before defaulting.
                let nulls: Vec<String> = map
                    .iter()
                    .filter(|(k, v)| {
                        v.is_null()
                            && props
                                .get(*k)
                                .is_some_and(|p| p["nullable"].as_bool() != Some(true))
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in nulls {
                    map.remove(&k);
                }
                for (k, prop) in props {
                    if !map.contains_key(k)
                        && let Some(d) = prop.get("default")
                    {
                        map.insert(k.clone(), d.clone());
                    }
                }
            }
            let keep_unknown = preserves(schema) || additional.as_bool() == Some(true);
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let always_kept =
                    (root || embedded) && matches!(k.as_str(), "apiVersion" | "kind" | "metadata");
                let child_schema = props
                    .and_then(|p| p.get(&k))
                    .or_else(|| additional.as_object().map(|_| additional));
                match child_schema {
                    Some(cs) if !(root && k == "metadata") => {
                        if let Some(child) = map.get_mut(&k) {
                            walk_prune(cs, child, &join(path, &k), false, pruned);
                        }
                    }
                    Some(_) => {}
                    None if always_kept || keep_unknown => {}
                    None => {
                        map.remove(&k);
                        pruned.push(join(path, &k));
                    }
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, item) in items.iter_mut().enumerate() {
                walk_prune(
                    &schema["items"],
                    item,
                    &format!("{path}[{i}]"),
                    false,
                    pruned,
                );
            }
        }
        _ => {}
    }
}

/// Structural validation: types, required, enum, pattern, bounds, formats, combinators.
pub fn validate_schema(schema: &Value, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    check(schema, obj, "", &mut errs);
    errs
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(want: &str, v: &Value) -> bool {
    match want {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => true,
    }
}

pub(crate) fn shown(v: &Value) -> Value {
    match v {
        Value::Object(_) | Value::Array(_) | Value::Null => Value::String(type_name(v).to_string()),
        other => other.clone(),
    }
}

fn field_name(path: &str) -> String {
    if path.is_empty() {
        "<root>".to_string()
    } else {
        path.to_string()
    }
}

/// The compiled pattern, shared: a cloned `Regex` starts with an empty match cache, which costs
/// more to fill than the match itself.
fn regex_cached(pattern: &str) -> Option<Arc<Regex>> {
    type Cache = Mutex<HashMap<String, Option<Arc<Regex>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(re) = map.get(pattern) {
        return re.clone();
    }
    let re = Regex::new(pattern).ok().map(Arc::new);
    map.insert(pattern.to_string(), re.clone());
    re
}

fn check(schema: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let f = field_name(path);
    if v.is_null() {
        if schema["nullable"].as_bool() != Some(true) && schema.get("type").is_some() {
            errs.push(FieldError::type_invalid(
                &f,
                v,
                format!(
                    "{f} in body must be of type {}: \"null\"",
                    schema["type"].as_str().unwrap_or("object")
                ),
            ));
        }
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"].as_bool() == Some(true);
    if int_or_string {
        if !(v.is_string() || type_matches("integer", v)) {
            errs.push(FieldError::type_invalid(
                &f,
                v,
                format!(
                    "{f} in body must be of type integer,string: \"{}\"",
                    type_name(v)
                ),
            ));
            return;
        }
    } else if let Some(t) = schema["type"].as_str()
        && !type_matches(t, v)
    {
        errs.push(FieldError::type_invalid(
            &f,
            v,
            format!("{f} in body must be of type {t}: \"{}\"", type_name(v)),
        ));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(v)
    {
        errs.push(FieldError::not_supported(&f, v, allowed));
    }
    match v {
        Value::String(s) => check_string(schema, s, v, &f, errs),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let excl_min = schema["exclusiveMinimum"].as_bool() == Some(true);
            let excl_max = schema["exclusiveMaximum"].as_bool() == Some(true);
            if let Some(min) = schema["minimum"].as_f64()
                && ((excl_min && x <= min) || (!excl_min && x < min))
            {
                let op = if excl_min {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                errs.push(FieldError::invalid(
                    &f,
                    v,
                    format!("{f} in body should be {op} {}", schema["minimum"]),
                ));
            }
            if let Some(max) = schema["maximum"].as_f64()
                && ((excl_max && x >= max) || (!excl_max && x > max))
            {
                let op = if excl_max {
                    "less than"
                } else {
                    "less than or equal to"
                };
                errs.push(FieldError::invalid(
                    &f,
                    v,
                    format!("{f} in body should be {op} {}", schema["maximum"]),
                ));
            }
        }
        Value::Array(items) => {
            if let Some(min) = schema["minItems"].as_u64()
                && (items.len() as u64) < min
            {
                errs.push(FieldError::invalid(
                    &f,
                    v,
                    format!("{f} in body should have at least {min} items"),
                ));
            }
            if let Some(max) = schema["maxItems"].as_u64()
                && items.len() as u64 > max
            {
                errs.push(FieldError {
                    reason: "FieldValueTooMany",
                    field: f.clone(),
                    value: None,
                    detail: format!("must have at most {max} items"),
                });
            }
            let list_type = schema["x-kubernetes-list-type"].as_str();
            if list_type == Some("set") || schema["uniqueItems"].as_bool() == Some(true) {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        errs.push(FieldError {
                            reason: "FieldValueDuplicate",
                            field: format!("{f}[{i}]"),
                            value: Some(shown(item)),
                            detail: String::new(),
                        });
                    }
                }
            }
            if list_type == Some("map") {
                let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let key_of = |item: &Value| -> Vec<Value> {
                    keys.iter().map(|k| item[*k].clone()).collect()
                };
                for (i, item) in items.iter().enumerate() {
                    let key = key_of(item);
                    if items[..i].iter().any(|earlier| key_of(earlier) == key) {
                        let shown_key: serde_json::Map<String, Value> = keys
                            .iter()
                            .map(|k| (k.to_string(), item[*k].clone()))
                            .collect();
                        errs.push(FieldError {
                            reason: "FieldValueDuplicate",
                            field: format!("{f}[{i}]"),
                            value: Some(Value::Object(shown_key)),
                            detail: String::new(),
                        });
                    }
                }
            }
            if schema["items"].is_object() {
                for (i, item) in items.iter().enumerate() {
                    check(&schema["items"], item, &format!("{path}[{i}]"), errs);
                }
            }
        }
        Value::Object(map) => check_object(schema, map, v, path, &f, errs),
        _ => {}
    }
    for sub in schema["allOf"].as_array().into_iter().flatten() {
        check(sub, v, path, errs);
    }
    if let Some(any) = schema["anyOf"].as_array()
        && !any.iter().any(|s| validate_at(s, v, path).is_empty())
    {
        errs.push(FieldError::invalid(
            &f,
            &shown(v),
            format!("{f} in body must validate at least one schema (anyOf)"),
        ));
    }
    if let Some(one) = schema["oneOf"].as_array() {
        let n = one
            .iter()
            .filter(|s| validate_at(s, v, path).is_empty())
            .count();
        if n != 1 {
            errs.push(FieldError::invalid(
                &f,
                &shown(v),
                format!("{f} in body must validate one and only one schema (oneOf)"),
            ));
        }
    }
    if let Some(not) = schema.get("not")
        && validate_at(not, v, path).is_empty()
    {
        errs.push(FieldError::invalid(
            &f,
            &shown(v),
            format!("{f} in body must not validate the schema (not)"),
        ));
    }
}

fn validate_at(schema: &Value, v: &Value, path: &str) -> Vec<FieldError> {
    let mut e = Vec::new();
    check(schema, v, path, &mut e);
    e
}

fn check_object(
    schema: &Value,
    map: &Map<String, Value>,
    v: &Value,
    path: &str,
    f: &str,
    errs: &mut Vec<FieldError>,
) {
    for req in schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !map.contains_key(req) {
            errs.push(FieldError::required(&join(path, req), ""));
        }
    }
    if let Some(min) = schema["minProperties"].as_u64()
        && (map.len() as u64) < min
    {
        errs.push(FieldError::invalid(
            f,
            &shown(v),
            format!("{f} in body should have at least {min} properties"),
        ));
    }
    if let Some(max) = schema["maxProperties"].as_u64()
        && map.len() as u64 > max
    {
        errs.push(FieldError {
            reason: "FieldValueTooMany",
            field: f.to_string(),
            value: None,
            detail: format!("must have at most {max} items"),
        });
    }
    let props = schema["properties"].as_object();
    for (k, child) in map {
        if path.is_empty() && k == "metadata" {
            continue;
        }
        if let Some(ps) = props.and_then(|p| p.get(k)) {
            check(ps, child, &join(path, k), errs);
        } else if schema["additionalProperties"].is_object() {
            check(&schema["additionalProperties"], child, &join(path, k), errs);
        }
    }
}

fn check_string(schema: &Value, s: &str, v: &Value, f: &str, errs: &mut Vec<FieldError>) {
    let len = s.chars().count() as u64;
    if let Some(max) = schema["maxLength"].as_u64()
        && len > max
    {
        errs.push(FieldError {
            reason: "FieldValueTooLong",
            field: f.to_string(),
            value: None,
            detail: format!("may not be more than {max} bytes"),
        });
    }
    if let Some(min) = schema["minLength"].as_u64()
        && len < min
    {
        errs.push(FieldError::invalid(
            f,
            v,
            format!("{f} in body should be at least {min} chars long"),
        ));
    }
    if let Some(p) = schema["pattern"].as_str()
        && regex_cached(p).is_some_and(|re| !re.is_match(s))
    {
        errs.push(FieldError::invalid(
            f,
            v,
            format!("{f} in body should match '{p}'"),
        ));
    }
    if let Some(fmt) = schema["format"].as_str()
        && !format_ok(fmt, s)
    {
        errs.push(FieldError::invalid(
            f,
            v,
            format!("{f} in body must be of type {fmt}: {v}"),
        ));
    }
}

/// The string formats the API server validates; others (int32, password, ...) pass.
fn format_ok(format: &str, s: &str) -> bool {
    use base64::Engine as _;
    match format {
        "date-time" | "datetime" => s.parse::<jiff::Timestamp>().is_ok(),
        "date" => s.parse::<jiff::civil::Date>().is_ok(),
        "byte" => base64::engine::general_purpose::STANDARD.decode(s).is_ok(),
        "uuid" => uuid::Uuid::parse_str(s).is_ok(),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| {
            ip.parse::<std::net::IpAddr>().is_ok() && bits.parse::<u8>().is_ok()
        }),
        "hostname" => !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label),
        "email" => s
            .split_once('@')
            .is_some_and(|(a, b)| !a.is_empty() && b.contains('.')),
        "uri" => s.contains(':'),
        "duration" => parse_go_duration(s).is_some(),
        _ => true,
    }
}

/// Go's `time.ParseDuration` grammar (`1h30m`, `10m`, `1.5s`, `300ms`).
pub fn parse_go_duration(s: &str) -> Option<f64> {
    let mut rest = s
        .strip_prefix('-')
        .or_else(|| s.strip_prefix('+'))
        .unwrap_or(s);
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Some(total)
}

pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Checks every object's metadata the way the API server does for all kinds.
pub fn validate_metadata(obj: &Value, name_is_label: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let meta = &obj["metadata"];
    if let Some(name) = meta["name"].as_str() {
        let ok = if name_is_label {
            is_dns_label(name)
        } else {
            is_dns_subdomain(name)
        };
        if !ok {
            let what = if name_is_label {
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            } else {
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            };
            errs.push(FieldError::invalid("metadata.name", &meta["name"], what));
        }
    }
    if let Some(labels) = meta["labels"].as_object() {
        for (k, v) in labels {
            let value_ok = v.as_str().is_some_and(|s| {
                s.len() <= 63
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                    && s.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
                    && s.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
            });
            if !value_ok {
                errs.push(FieldError::invalid("metadata.labels", v, format!("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (key {k:?})")));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                        "mode": {"type": "string", "enum": ["A", "B"], "default": "A"},
                        "count": {"type": "integer", "minimum": 1, "maximum": 3},
                        "port": {"x-kubernetes-int-or-string": true},
                        "when": {"type": "string", "format": "date-time"},
                        "maybe": {"type": "string", "nullable": true},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "tags": {"type": "object", "additionalProperties": {"type": "string"}}
                    }
                }
            }
        })
    }

    #[test]
    fn prunes_defaults_and_keeps_preserved() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"},
            "spec": {"name": "ab", "junk": 1, "free": {"any": {"thing": 1}}, "tags": {"k": "v"}, "maybe": null}, "extra": true});
        let pruned = prune_and_default(&schema(), &mut obj);
        assert_eq!(pruned, vec!["extra".to_string(), "spec.junk".to_string()]);
        assert_eq!(obj["spec"]["mode"], "A");
        assert_eq!(obj["spec"]["free"]["any"]["thing"], 1);
        assert!(obj["spec"]["maybe"].is_null() && obj["spec"].get("maybe").is_some());
        assert!(validate_schema(&schema(), &obj).is_empty());
    }

    #[test]
    fn reports_each_violation_like_the_api_server() {
        let obj = json!({"spec": {"mode": "C", "count": 9, "port": 1.5, "when": "yesterday", "tags": {"k": 1}}});
        let errs: Vec<String> = validate_schema(&schema(), &obj)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert!(
            errs.contains(&"spec.name: Required value".to_string()),
            "{errs:?}"
        );
        assert!(
            errs.contains(
                &r#"spec.mode: Unsupported value: "C": supported values: "A", "B""#.to_string()
            ),
            "{errs:?}"
        );
        assert!(errs.contains(&"spec.count: Invalid value: 9: spec.count in body should be less than or equal to 3".to_string()), "{errs:?}");
        assert!(
            errs.iter()
                .any(|e| e.starts_with("spec.port: Invalid value")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.contains("must be of type date-time")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("spec.tags.k in body must be of type string")),
            "{errs:?}"
        );
        let bad_name = json!({"spec": {"name": "ABCDEFG"}});
        let errs: Vec<String> = validate_schema(&schema(), &bad_name)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert!(
            errs.iter().any(|e| e.contains("should match '^[a-z]+$'")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("Too long: may not be more than 5 bytes")),
            "{errs:?}"
        );
    }

    #[test]
    fn list_map_keys_must_be_unique() {
        let schema = json!({"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
            "items": {"type": "object", "properties": {"type": {"type": "string"}, "status": {"type": "string"}}}});
        assert!(validate_schema(&schema, &json!([{"type": "A"}, {"type": "B"}])).is_empty());
        let errs = validate_schema(
            &schema,
            &json!([{"type": "A", "status": "x"}, {"type": "A", "status": "y"}]),
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(
            (errs[0].reason, errs[0].field.as_str()),
            ("FieldValueDuplicate", "<root>[1]")
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1h30m"), Some(5400.0));
        assert_eq!(parse_go_duration("10m"), Some(600.0));
        assert_eq!(parse_go_duration("abc"), None);
    }
}
