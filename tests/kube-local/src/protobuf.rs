//! Decoding of the Kubernetes protobuf request bodies kubectl's typed clients send
//! (`kubectl create namespace|token|secret|configmap|serviceaccount`). Responses are always JSON,
//! which those clients accept too. Only the kinds and fields listed here are understood.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::error::ApiError;

const MAGIC: &[u8] = b"k8s\x00";

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bytes,
    Int,
    Bool,
    Time,
    Msg(fn(u64) -> Option<(&'static str, Kind, bool)>),
    StrMap,
    BytesMap,
}

/// (field name, kind, repeated) by field number, per message type.
type Schema = fn(u64) -> Option<(&'static str, Kind, bool)>;

fn type_meta(n: u64) -> Option<(&'static str, Kind, bool)> {
    Some(match n {
        1 => ("apiVersion", Kind::Str, false),
        2 => ("kind", Kind::Str, false),
        _ => return None,
    })
}

fn unknown(n: u64) -> Option<(&'static str, Kind, bool)> {
    Some(match n {
        1 => ("typeMeta", Kind::Msg(type_meta), false),
        2 => ("raw", Kind::Bytes, false),
        _ => return None,
    })
}

fn owner_ref(n: u64) -> Option<(&'static str, Kind, bool)> {
    Some(match n {
        1 => ("kind", Kind::Str, false),
        3 => ("name", Kind::Str, false),
        4 => ("uid", Kind::Str, false),
        5 => ("apiVersion", Kind::Str, false),
        6 => ("controller", Kind::Bool, false),
        7 => ("blockOwnerDeletion", Kind::Bool, false),
        _ => return None,
    })
}

fn object_meta(n: u64) -> Option<(&'static str, Kind, bool)> {
    Some(match n {
        1 => ("name", Kind::Str, false),
        2 => ("generateName", Kind::Str, false),
        3 => ("namespace", Kind::Str, false),
        5 => ("uid", Kind::Str, false),
        6 => ("resourceVersion", Kind::Str, false),
        7 => ("generation", Kind::Int, false),
        8 => ("creationTimestamp", Kind::Time, false),
        11 => ("labels", Kind::StrMap, false),
        12 => ("annotations", Kind::StrMap, false),
        13 => ("ownerReferences", Kind::Msg(owner_ref), true),
        14 => ("finalizers", Kind::Str, true),
        _ => return None,
    })
}

fn local_ref(n: u64) -> Option<(&'static str, Kind, bool)> {
    (n == 1).then_some(("name", Kind::Str, false))
}

fn metadata_only(n: u64) -> Option<(&'static str, Kind, bool)> {
    (n == 1).then_some(("metadata", Kind::Msg(object_meta), false))
}

fn bound_ref(n: u64) -> Option<(&'static str, Kind, bool)> {
    Some(match n {
        1 => ("kind", Kind::Str, false),
        2 => ("apiVersion", Kind::Str, false),
        3 => ("name", Kind::Str, false),
        4 => ("uid", Kind::Str, false),
        _ => return None,
    })
}

fn token_request_spec(n: u64) -> Option<(&'static str, Kind, bool)> {
    Some(match n {
        1 => ("audiences", Kind::Str, true),
        3 => ("boundObjectRef", Kind::Msg(bound_ref), false),
        4 => ("expirationSeconds", Kind::Int, false),
        _ => return None,
    })
}

fn token_request(n: u64) -> Option<(&'static str, Kind, bool)> {
    Some(match n {
        1 => ("metadata", Kind::Msg(object_meta), false),
        2 => ("spec", Kind::Msg(token_request_spec), false),
        _ => return None,
    })
}

fn resource_attributes(n: u64) -> Option<(&'static str, Kind, bool)> {
    Some(match n {
        1 => ("namespace", Kind::Str, false),
        2 => ("verb", Kind::Str, false),
        3 => ("group", Kind::Str, false),
        4 => ("version", Kind::Str, false),
        5 => ("resource", Kind::Str, false),
        6 => ("subresource", Kind::Str, false),
        7 => ("name", Kind::Str, false),
        _ => return None,
    })
}

fn non_resource_attributes(n: u64) -> Option<(&'static str, Kind, bool)> {
    Some(match n {
        1 => ("path", Kind::Str, false),
        2 => ("verb", Kind::Str, false),
        _ => return None,
    })
}

fn access_review_spec(n: u64) -> Option<(&'static str, Kind, bool)> {
    Some(match n {
        1 => ("resourceAttributes", Kind::Msg(resource_attributes), false),
        2 => (
            "nonResourceAttributes",
            Kind::Msg(non_resource_attributes),
            false,
        ),
        _ => return None,
    })
}

fn self_subject_access_review(n: u64) -> Option<(&'static str, Kind, bool)> {
    Some(match n {
        1 => ("metadata", Kind::Msg(object_meta), false),
        2 => ("spec", Kind::Msg(access_review_spec), false),
        _ => return None,
    })
}

fn secret(n: u64) -> Option<(&'static str, Kind, bool)> {
    Some(match n {
        1 => ("metadata", Kind::Msg(object_meta), false),
        2 => ("data", Kind::BytesMap, false),
        3 => ("type", Kind::Str, false),
        4 => ("stringData", Kind::StrMap, false),
        5 => ("immutable", Kind::Bool, false),
        _ => return None,
    })
}

fn config_map(n: u64) -> Option<(&'static str, Kind, bool)> {
    Some(match n {
        1 => ("metadata", Kind::Msg(object_meta), false),
        2 => ("data", Kind::StrMap, false),
        3 => ("binaryData", Kind::BytesMap, false),
        4 => ("immutable", Kind::Bool, false),
        _ => return None,
    })
}

fn service_account(n: u64) -> Option<(&'static str, Kind, bool)> {
    Some(match n {
        1 => ("metadata", Kind::Msg(object_meta), false),
        3 => ("imagePullSecrets", Kind::Msg(local_ref), true),
        4 => ("automountServiceAccountToken", Kind::Bool, false),
        _ => return None,
    })
}

fn preconditions(n: u64) -> Option<(&'static str, Kind, bool)> {
    Some(match n {
        1 => ("uid", Kind::Str, false),
        2 => ("resourceVersion", Kind::Str, false),
        _ => return None,
    })
}

/// meta/v1 DeleteOptions, which client-go's typed deletes send (Helm's uninstall of its release
/// Secret, for one).
fn delete_options(n: u64) -> Option<(&'static str, Kind, bool)> {
    Some(match n {
        1 => ("gracePeriodSeconds", Kind::Int, false),
        2 => ("preconditions", Kind::Msg(preconditions), false),
        3 => ("orphanDependents", Kind::Bool, false),
        4 => ("propagationPolicy", Kind::Str, false),
        5 => ("dryRun", Kind::Str, true),
        _ => return None,
    })
}

/// One wire field: number, varint value (Null otherwise), length-delimited payload.
type WireField<'a> = (u64, Value, Option<&'a [u8]>);

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn bad() -> ApiError {
    ApiError::bad_request("the protobuf body could not be decoded")
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or_else(bad)?;
            self.pos += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(bad())
    }

    fn bytes(&mut self) -> Result<&'a [u8], ApiError> {
        let len = self.varint()? as usize;
        let end = self
            .pos
            .checked_add(len)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(bad)?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Next (field number, wire type, payload) triple.
    fn field(&mut self) -> Result<Option<WireField<'a>>, ApiError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let (num, wire) = (tag >> 3, tag & 7);
        Ok(Some(match wire {
            0 => (num, json!(self.varint()?), None),
            2 => (num, Value::Null, Some(self.bytes()?)),
            1 => {
                self.pos += 8;
                (num, Value::Null, None)
            }
            5 => {
                self.pos += 4;
                (num, Value::Null, None)
            }
            _ => return Err(bad()),
        }))
    }
}

fn text(b: &[u8]) -> Result<Value, ApiError> {
    Ok(Value::String(
        String::from_utf8(b.to_vec()).map_err(|_| bad())?,
    ))
}

fn map_entry(b: &[u8], bytes_values: bool) -> Result<(String, Value), ApiError> {
    let mut r = Reader { buf: b, pos: 0 };
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    while let Some((num, _, payload)) = r.field()? {
        let p = payload.unwrap_or_default();
        match num {
            1 => k = String::from_utf8(p.to_vec()).map_err(|_| bad())?,
            2 if bytes_values => v = json!(base64::engine::general_purpose::STANDARD.encode(p)),
            2 => v = text(p)?,
            _ => {}
        }
    }
    Ok((k, v))
}

fn decode(buf: &[u8], schema: Schema) -> Result<Value, ApiError> {
    let mut out = Map::new();
    let mut r = Reader { buf, pos: 0 };
    while let Some((num, varint, payload)) = r.field()? {
        let Some((name, kind, repeated)) = schema(num) else {
            continue;
        };
        let p = payload.unwrap_or_default();
        let value = match kind {
            Kind::Str => text(p)?,
            Kind::Bytes => json!(base64::engine::general_purpose::STANDARD.encode(p)),
            Kind::Int => varint,
            Kind::Bool => json!(varint.as_u64() == Some(1)),
            Kind::Time => {
                let t = decode(p, |n| (n == 1).then_some(("seconds", Kind::Int, false)))?;
                let secs = t["seconds"].as_i64().unwrap_or(0);
                json!(
                    jiff::Timestamp::from_second(secs)
                        .map(crate::util::rfc3339)
                        .unwrap_or_default()
                )
            }
            Kind::Msg(s) => decode(p, s)?,
            Kind::StrMap | Kind::BytesMap => {
                let (k, v) = map_entry(p, matches!(kind, Kind::BytesMap))?;
                let entry = out.entry(name).or_insert_with(|| json!({}));
                entry[k] = v;
                continue;
            }
        };
        // Go writes empty optional strings and false booleans; JSON would omit them.
        if !repeated && (value == json!("") || value == json!(false)) {
            continue;
        }
        if repeated {
            let list = out.entry(name).or_insert_with(|| json!([]));
            if let Some(a) = list.as_array_mut() {
                a.push(value);
            }
        } else {
            out.insert(name.to_string(), value);
        }
    }
    Ok(Value::Object(out))
}

/// A protobuf request body as the JSON object it encodes.
pub fn to_json(body: &[u8]) -> Result<Value, ApiError> {
    let rest = body.strip_prefix(MAGIC).ok_or_else(bad)?;
    let envelope = decode(rest, unknown)?;
    let api_version = envelope["typeMeta"]["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let kind = envelope["typeMeta"]["kind"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(envelope["raw"].as_str().unwrap_or_default())
        .map_err(|_| bad())?;
    let schema: Schema = match kind.as_str() {
        "Namespace" => metadata_only,
        "TokenRequest" => token_request,
        "Secret" => secret,
        "ConfigMap" => config_map,
        "ServiceAccount" => service_account,
        "SelfSubjectAccessReview" => self_subject_access_review,
        "SelfSubjectReview" => metadata_only,
        "DeleteOptions" => delete_options,
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "kube-local decodes protobuf only for Namespace, TokenRequest, Secret, ConfigMap, ServiceAccount, SelfSubjectAccessReview, SelfSubjectReview and DeleteOptions (got {other}); send JSON"
                ),
            ));
        }
    };
    let mut obj = decode(&raw, schema)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((num << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_a_namespace_envelope() {
        let meta = [
            field(1, b"team-a"),
            field(11, &[field(1, b"k"), field(2, b"v")].concat()),
        ]
        .concat();
        let ns = field(1, &meta);
        let type_meta = [field(1, b"v1"), field(2, b"Namespace")].concat();
        let envelope = [MAGIC.to_vec(), field(1, &type_meta), field(2, &ns)].concat();
        let v = to_json(&envelope).unwrap_or_default();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a", "labels": {"k": "v"}}})
        );
    }

    #[test]
    fn decodes_delete_options() {
        let options = [field(4, b"Background"), field(2, &field(1, b"uid-1"))].concat();
        let type_meta = [field(1, b"v1"), field(2, b"DeleteOptions")].concat();
        let envelope = [MAGIC.to_vec(), field(1, &type_meta), field(2, &options)].concat();
        let v = to_json(&envelope).unwrap_or_default();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background", "preconditions": {"uid": "uid-1"}})
        );
    }
}
