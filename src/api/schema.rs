//! Schema pieces the derive cannot express: shared by the CRD's types.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

pub(super) fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A count as Kubernetes types it: int32, without a `minimum`. The CRD types hold a minimum as a
/// float, which YAML tools (kustomize) round-trip from `0.0` to `0`, which reads as drift; only
/// the operator writes this count, so the bound guards nothing.
pub(super) fn count_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "integer",
        "format": "int32",
        "nullable": true,
    })
}

/// Conditions as a map list keyed by type, so server-side apply merges them per condition.
pub(super) fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema
}
