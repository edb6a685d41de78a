//! The CRD's rules, as the API server evaluates them, and its defaults.

use super::*;
use serde_json::json;

use crate::fixtures;

fn access(spec: serde_json::Value) -> InferenceAccess {
    fixtures::access(spec).build()
}

/// Every CEL rule of the CRD, valid and invalid, evaluated as the API server would.
#[test]
fn cel_rules_table() {
    let isvc = json!({"name": "sklearn-iris"});
    let cases = [
        (json!({"inferenceService": isvc}), None),
        (
            json!({"inferenceService": isvc, "token": {"duration": "10m"}}),
            None,
        ),
        (
            json!({"inferenceService": isvc, "token": {"duration": "24h", "renewBefore": "23h59m"}}),
            None,
        ),
        (
            json!({"inferenceService": isvc, "token": {"duration": "9m59s"}}),
            Some("at least 10m"),
        ),
        (
            json!({"inferenceService": isvc, "token": {"duration": "1h", "renewBefore": "1h"}}),
            Some("shorter than duration"),
        ),
        (
            json!({"inferenceService": isvc, "token": {"duration": "1h", "renewBefore": "2h"}}),
            Some("shorter than duration"),
        ),
        (
            json!({"inferenceService": isvc, "token": {"duration": "1h", "renewBefore": "0s"}}),
            Some("must be positive"),
        ),
        (
            json!({"inferenceService": isvc, "token": {"audiences": [""]}}),
            Some("must not be empty strings"),
        ),
        (
            json!({"inferenceService": {"name": "Sklearn_Iris"}}),
            Some("DNS-1035"),
        ),
        (
            json!({"inferenceService": {"name": "9model"}}),
            Some("DNS-1035"),
        ),
        (
            json!({"inferenceService": isvc, "secretName": "my.credential-1"}),
            None,
        ),
        (
            json!({"inferenceService": isvc, "secretName": "My_Secret"}),
            Some("DNS-1123"),
        ),
        (
            json!({"inferenceService": isvc, "serviceAccount": {"name": "default-editor"}}),
            None,
        ),
        (
            json!({"inferenceService": isvc, "serviceAccount": {"name": "-bad"}}),
            Some("DNS-1123"),
        ),
        (
            json!({"inferenceService": isvc, "mesh": {"userIdHeader": "Kubeflow-UserID"}}),
            Some("lowercase HTTP header"),
        ),
        (
            json!({"inferenceService": isvc, "gateway": {"url": "http://localhost:8080"}}),
            None,
        ),
        (
            json!({"inferenceService": isvc, "gateway": {"url": "localhost:8080"}}),
            Some("http:// or https://"),
        ),
        (
            json!({"inferenceService": isvc, "auth": {"type": "DexSession"}}),
            Some("auth.dexSession is required"),
        ),
        (
            json!({"inferenceService": isvc, "auth": {"type": "DexSession", "dexSession": {"credentialsSecret": {"name": "dex-user"}}}}),
            None,
        ),
        (
            json!({"inferenceService": isvc, "auth": {"type": "DexSession", "dexSession": {"credentialsSecret": {"name": "dex-user"}, "loginURL": "kubeflow"}}}),
            Some("http:// or https://"),
        ),
    ];
    for (spec, expected) in cases {
        let result = access(spec.clone()).validate_cel();
        match (expected, result) {
            (None, Ok(())) => {}
            (Some(message), Err(errors)) => {
                let text = format!("{errors:?}");
                assert!(
                    text.contains(message),
                    "{spec}: expected {message:?}, got {text}"
                );
            }
            (expected, result) => panic!("{spec}: expected {expected:?}, got {result:?}"),
        }
    }
}

#[test]
fn defaults_are_the_kubeflow_ones() {
    let spec = access(json!({"inferenceService": {"name": "sklearn-iris"}})).spec;
    assert_eq!(
        serde_json::to_value(&spec).unwrap(),
        json!({
            "inferenceService": {"name": "sklearn-iris"},
            "auth": {"type": "ServiceAccountToken"},
            "serviceAccount": {},
            "token": {"audiences": [DEFAULT_AUDIENCE], "duration": "3600s"},
            "mesh": {
                "mode": "AuthorizationPolicy",
                "userIdHeader": "kubeflow-userid",
                "sourcePrincipals": [DEFAULT_GATEWAY_PRINCIPAL],
                "probePaths": ["/healthz", "/ready", "/metrics", "/wait-for-drain"]
            },
            "gateway": {"url": DEFAULT_GATEWAY_URL},
            "verification": {"enabled": true}
        })
    );
}
