//! KServe `InferenceService` (`serving.kserve.io/v1beta1`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::namespaced_resource;

/// Istio's per-pod switch for sidecar injection; KServe copies the InferenceService's
/// annotations onto the predictor pods.
pub const SIDECAR_INJECT_ANNOTATION: &str = "sidecar.istio.io/inject";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct InferenceService {
    #[serde(
        rename = "apiVersion",
        default = "super::api_version::<InferenceService>"
    )]
    pub api_version: String,
    #[serde(default = "super::kind::<InferenceService>")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `null` only in a patch that sets metadata alone (it is then left out).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub spec: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<InferenceServiceStatus>,
}

impl Default for InferenceService {
    fn default() -> Self {
        Self {
            api_version: super::api_version::<Self>(),
            kind: super::kind::<Self>(),
            metadata: ObjectMeta::default(),
            spec: serde_json::Value::Object(Default::default()),
            status: None,
        }
    }
}

namespaced_resource!(
    InferenceService,
    group = "serving.kserve.io",
    version = "v1beta1",
    kind = "InferenceService",
    plural = "inferenceservices"
);

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InferenceServiceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Addressable>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<KnativeCondition>,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Addressable {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Knative's condition shape: unlike metav1.Condition, reason and message are optional.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct KnativeCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What the access needs to know about its InferenceService's readiness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Not ready yet, with KServe's own reason and message when it gave them.
    NotReady {
        reason: String,
        message: String,
    },
}

impl InferenceService {
    /// The externally routable URL, once KServe has published one.
    pub fn url(&self) -> Option<&str> {
        self.status
            .as_ref()?
            .url
            .as_deref()
            .filter(|u| !u.is_empty())
    }

    pub fn readiness(&self) -> Readiness {
        let ready = self
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
        match ready {
            Some(c) if c.status == "True" => Readiness::Ready,
            Some(c) => Readiness::NotReady {
                reason: c.reason.clone().unwrap_or_else(|| "NotReady".into()),
                message: c.message.clone().unwrap_or_default(),
            },
            None => Readiness::NotReady {
                reason: "NoStatus".into(),
                message: "KServe has not reported a Ready condition yet".into(),
            },
        }
    }

    /// Whether KServe's predictor pods run without an Istio sidecar, so no
    /// AuthorizationPolicy can be enforced on them.
    pub fn sidecar_disabled(&self) -> bool {
        let on_metadata = self
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SIDECAR_INJECT_ANNOTATION));
        let on_predictor = self
            .spec
            .pointer("/predictor/annotations")
            .and_then(|a| a.get(SIDECAR_INJECT_ANNOTATION))
            .and_then(|v| v.as_str());
        on_predictor
            .or(on_metadata.map(String::as_str))
            .is_some_and(|v| v.eq_ignore_ascii_case("false"))
    }
}
