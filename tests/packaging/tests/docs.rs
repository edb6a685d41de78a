//! docs/install.md documents every chart value, so the table cannot drift from values.yaml.

use packaging_tests::{read_yaml, repo_root};
use serde_json::Value;

/// Values whose content is a Kubernetes structure, documented as a whole.
const OPAQUE: &[&str] = &[
    "resources",
    "podSecurityContext",
    "securityContext",
    "affinity",
    "nodeSelector",
];

fn leaves(prefix: &str, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) if !map.is_empty() && !OPAQUE.contains(&prefix) => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                leaves(&path, child, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

/// A value is documented when a line names it in full (`a.b.c`), or names a sibling in full and
/// it by its last segment (`a.b.x`, `.c`), as the table's grouped rows do.
fn documented(doc: &str, path: &str) -> bool {
    let (parent, last) = path.rsplit_once('.').unwrap_or(("", path));
    doc.lines().any(|line| {
        line.contains(&format!("`{path}`"))
            || (!parent.is_empty()
                && line.contains(&format!("`{parent}."))
                && line.contains(&format!("`.{last}`")))
    })
}

#[test]
fn every_chart_value_is_in_the_install_guide() {
    let values =
        read_yaml("charts/inference-access/values.yaml").unwrap_or_else(|err| panic!("{err}"));
    let doc = std::fs::read_to_string(repo_root().join("docs/install.md"))
        .unwrap_or_else(|err| panic!("cannot read docs/install.md: {err}"));
    let mut paths = Vec::new();
    leaves("", &values, &mut paths);
    assert!(paths.len() > 20, "{paths:?}");
    let missing: Vec<&String> = paths
        .iter()
        .filter(|path| !documented(&doc, path))
        .collect();
    assert!(
        missing.is_empty(),
        "values missing from docs/install.md: {missing:?}"
    );
}
