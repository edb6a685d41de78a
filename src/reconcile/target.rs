//! Step 1: the InferenceService, applied from the template when there is one, read otherwise;
//! or an LLMInferenceService, read, as the same view (its uid, status.url and conditions).

use std::sync::Arc;

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};

use super::apply::{Applied, Applier};
use super::build;
use super::consent;
use super::error::{Error, Kind, api_status, describe};
use super::plan::Plan;
use crate::api::InferenceService;
use crate::api::TargetKind;
use crate::api::inference_service::InferenceServiceStatus;

#[derive(Debug)]
pub enum TargetOutcome {
    Found {
        isvc: Arc<InferenceService>,
        /// This reconcile applied the template.
        applied: bool,
    },
    /// Referenced, and not there.
    NotFound,
    /// In another namespace, and no ReferenceGrant there admits this access: the model was not
    /// even looked up (whether it exists is its owner's to tell).
    ConsentPending {
        /// What the consent let the access have could not be removed.
        withdraw_failed: Option<Error>,
    },
    /// The InferenceService kind is not served: KServe is not installed.
    NotServed,
    /// Templated, but it exists and this access does not control it.
    TemplateConflict {
        owner: Option<String>,
    },
    /// KServe refused the template: a spec error, waiting for a change.
    InvalidTemplate {
        message: String,
    },
    Failed(Error),
}

impl TargetOutcome {
    pub fn found(&self) -> Option<&InferenceService> {
        match self {
            TargetOutcome::Found { isvc, .. } => Some(isvc),
            _ => None,
        }
    }
}

pub async fn resolve(applier: &Applier<'_>, plan: &Plan) -> TargetOutcome {
    if let Some(model_namespace) = &plan.target.other_namespace {
        return match consent::model_consents(applier.client(), plan).await {
            Ok(true) => {
                match applier.cached_in::<InferenceService>(model_namespace, &plan.target.name) {
                    Some(isvc) => TargetOutcome::Found {
                        isvc,
                        applied: false,
                    },
                    None => TargetOutcome::NotFound,
                }
            }
            Ok(false) => TargetOutcome::ConsentPending {
                withdraw_failed: consent::withdraw(applier, plan).await.err(),
            },
            Err(err) => TargetOutcome::Failed(err),
        };
    }
    if plan.target.kind == TargetKind::LlmInferenceService {
        return read_llm(applier.client(), plan).await;
    }
    let Some(wanted) = build::templated_inference_service(plan) else {
        return match applier.cached::<InferenceService>(&plan.target.name) {
            Some(isvc) => TargetOutcome::Found {
                isvc,
                applied: false,
            },
            None => TargetOutcome::NotFound,
        };
    };
    match applier.ensure(Kind::InferenceService, &wanted).await {
        Ok(Applied::Changed(isvc)) => TargetOutcome::Found {
            isvc,
            applied: true,
        },
        Ok(Applied::Unchanged(isvc)) => TargetOutcome::Found {
            isvc,
            applied: false,
        },
        Ok(Applied::Conflict { owner }) => TargetOutcome::TemplateConflict { owner },
        Ok(Applied::NotServed) => TargetOutcome::NotServed,
        // Admission (KServe's webhook or the CRD schema) refused what the user wrote.
        Err(Error::Api { source, .. })
            if api_status(&source).is_some_and(|c| c == 400 || c == 422) =>
        {
            TargetOutcome::InvalidTemplate {
                message: format!(
                    "KServe refused the InferenceService template: {}",
                    describe(&source)
                ),
            }
        }
        Err(err) => TargetOutcome::Failed(err),
    }
}

/// KServe's LLMInferenceService, the version it stores.
pub fn llm_inference_service() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("serving.kserve.io", "v1alpha2", "LLMInferenceService"),
        "llminferenceservices",
    )
}

/// A GET on each reconcile: the kind is not watched yet, so a changed status.url is seen at the
/// next reconcile (within a minute while the URL is missing, else at the renewal).
async fn read_llm(client: &Client, plan: &Plan) -> TargetOutcome {
    let api = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &plan.access.namespace,
        &llm_inference_service(),
    );
    match api.get_opt(&plan.target.name).await {
        Ok(Some(llm)) => TargetOutcome::Found {
            isvc: Arc::new(llm_view(llm)),
            applied: false,
        },
        Ok(None) => TargetOutcome::NotFound,
        Err(err) if api_status(&err) == Some(404) => TargetOutcome::NotServed,
        Err(err) => TargetOutcome::Failed(Error::api(Kind::InferenceService)(err)),
    }
}

/// What the later steps read of an LLMInferenceService, in the InferenceService view: metadata,
/// `status.url` and the conditions (its `Ready` has KServe's meaning).
pub fn llm_view(llm: DynamicObject) -> InferenceService {
    InferenceService {
        kind: "LLMInferenceService".into(),
        api_version: "serving.kserve.io/v1alpha2".into(),
        status: serde_json::from_value::<InferenceServiceStatus>(llm.data["status"].clone()).ok(),
        metadata: llm.metadata,
        ..InferenceService::default()
    }
}
