//! The shipped examples must pass the CRD's own rules: users copy them first.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use inference_access::api::InferenceAccess;
use serde::Deserialize;

#[test]
fn sklearn_iris_example_is_a_valid_access_for_the_sample() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/sklearn-iris.yaml"
    ))
    .unwrap();
    let accesses: Vec<InferenceAccess> = serde_yaml::Deserializer::from_str(&text)
        .map(serde_yaml::Value::deserialize)
        .map(Result::unwrap)
        .filter(|doc| doc["kind"] == "InferenceAccess")
        .map(|doc| serde_yaml::from_value(doc).unwrap())
        .collect();
    assert_eq!(accesses.len(), 1);
    let access = &accesses[0];
    access.validate_cel().unwrap();
    inference_access::reconcile::plan::validate(access, &Default::default()).unwrap();
    assert_eq!(
        access.metadata.namespace.as_deref(),
        Some("kubeflow-user-example-com")
    );
    assert_eq!(access.spec.inference_service.name, "sklearn-iris");
    // The sample's model, and no sidecar annotation: that is mesh.mode's job.
    let template = access.spec.inference_service.template.as_ref().unwrap();
    assert_eq!(
        template.spec.value()["predictor"]["model"]["storageUri"],
        "gs://kfserving-examples/models/sklearn/1.0/model"
    );
    assert!(template.metadata.annotations.is_empty());
}

#[test]
fn dex_session_example_is_valid_and_references_its_credentials_secret() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/dex-session.yaml"
    ))
    .unwrap();
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(serde_yaml::Value::deserialize)
        .map(Result::unwrap)
        .collect();
    let access: InferenceAccess = serde_yaml::from_value(
        docs.iter()
            .find(|d| d["kind"] == "InferenceAccess")
            .unwrap()
            .clone(),
    )
    .unwrap();
    access.validate_cel().unwrap();
    inference_access::reconcile::plan::validate(&access, &Default::default()).unwrap();
    let secret = docs.iter().find(|d| d["kind"] == "Secret").unwrap();
    let dex = access.spec.auth.dex_session.as_ref().unwrap();
    assert_eq!(
        secret["metadata"]["name"].as_str(),
        Some(dex.credentials_secret.name.as_str())
    );
    assert!(secret["stringData"][dex.credentials_secret.username_key.as_str()].is_string());
    assert!(secret["stringData"][dex.credentials_secret.password_key.as_str()].is_string());
    assert!(
        access.spec.inference_service.template.is_none(),
        "the sample's access owns the InferenceService"
    );
}
