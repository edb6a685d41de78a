//! Test fixtures, shared by the unit tests and the integration tests (`tests/`): one access
//! builder, one clock helper, one issued-credential builder. Compiled only for tests (the
//! integration tests enable the `testing` feature through the crate's dev-dependency on itself).
#![allow(clippy::expect_used)] // a fixture that cannot build its value is a broken test

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::api::InferenceAccess;
use crate::core::credential::{Credential, Inputs, IssuedCredential, Record, TokenRequestInputs};

/// The namespace of the KServe sample.
pub const SAMPLE_NAMESPACE: &str = "kubeflow-user-example-com";
/// The sample's model.
pub const SAMPLE_MODEL: &str = "sklearn-iris";
pub const GATEWAY_AUDIENCE: &str = "istio-ingressgateway.istio-system.svc.cluster.local";

/// A timestamp from RFC 3339 text.
pub fn ts(text: &str) -> Timestamp {
    text.parse().expect("an RFC 3339 timestamp")
}

/// An InferenceAccess as the API server stores it: `client` in namespace `ns`, uid
/// `access-uid`, generation 1, unless the builder says otherwise.
#[derive(Clone, Debug)]
pub struct AccessBuilder {
    name: String,
    namespace: String,
    uid: Option<String>,
    generation: Option<i64>,
    spec: Value,
    annotations: Value,
}

/// An access for `spec`, e.g. `access(json!({"inferenceService": {"name": "m"}})).build()`.
pub fn access(spec: Value) -> AccessBuilder {
    AccessBuilder {
        name: "client".into(),
        namespace: "ns".into(),
        uid: Some("access-uid".into()),
        generation: Some(1),
        spec,
        annotations: json!({}),
    }
}

impl AccessBuilder {
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// As a user writes it: no uid or generation yet.
    pub fn unsaved(mut self) -> Self {
        self.uid = None;
        self.generation = None;
        self
    }

    pub fn generation(mut self, generation: i64) -> Self {
        self.generation = Some(generation);
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations[key] = json!(value);
        self
    }

    /// The JSON form, for tests that send it somewhere.
    pub fn value(&self) -> Value {
        let mut metadata = json!({"name": self.name, "namespace": self.namespace});
        if let Some(uid) = &self.uid {
            metadata["uid"] = json!(uid);
        }
        if let Some(generation) = self.generation {
            metadata["generation"] = json!(generation);
        }
        if self.annotations.as_object().is_some_and(|a| !a.is_empty()) {
            metadata["annotations"] = self.annotations.clone();
        }
        json!({
            "apiVersion": "inference-access.io/v1alpha1",
            "kind": "InferenceAccess",
            "metadata": metadata,
            "spec": self.spec,
        })
    }

    pub fn build(&self) -> InferenceAccess {
        serde_json::from_value(self.value()).expect("a well-formed InferenceAccess")
    }
}

/// The record of a token for `service_account`, issued and expiring at the given times.
pub fn token_record(service_account: &str, issued_at: &str, expires_at: &str) -> Record {
    let (issued_at, expires_at) = (ts(issued_at), ts(expires_at));
    Record {
        issued_at,
        expires_at,
        inputs: Inputs::ServiceAccountToken(TokenRequestInputs {
            service_account: service_account.into(),
            audiences: vec![GATEWAY_AUDIENCE.into()],
            expiration_seconds: expires_at.duration_since(issued_at).as_secs(),
        }),
        renew_request: None,
    }
}

/// A token credential for `service_account`, issued and expiring at the given times.
pub fn issued_token(
    token: &str,
    service_account: &str,
    issued_at: &str,
    expires_at: &str,
) -> IssuedCredential {
    IssuedCredential {
        value: Credential::Bearer(token.into()),
        record: token_record(service_account, issued_at, expires_at),
    }
}

/// An error as the API server answers it.
pub fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
    kube::Error::Api(Box::new(
        serde_json::from_value(json!({"code": code, "reason": reason, "message": message}))
            .expect("a Status"),
    ))
}

/// An InferenceService as KServe publishes it: with `status.url` and Ready when `url` is set.
pub fn inference_service(name: &str, url: Option<&str>) -> crate::api::InferenceService {
    let mut isvc = json!({
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": SAMPLE_NAMESPACE, "uid": "isvc-uid"},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "gs://kfserving-examples/models/sklearn/1.0/model"}}},
    });
    if let Some(url) = url {
        isvc["status"] = json!({"url": url, "conditions": [
            {"type": "Ready", "status": "True"}, {"type": "IngressReady", "status": "True"}
        ]});
    }
    serde_json::from_value(isvc).expect("a well-formed InferenceService")
}
