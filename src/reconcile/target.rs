//! Step 1: the InferenceService, applied from the template when there is one, read otherwise.

use std::sync::Arc;

use super::apply::{Applied, Applier};
use super::build;
use super::error::{Error, Kind, api_status, describe};
use super::plan::Plan;
use crate::api::InferenceService;

#[derive(Debug)]
pub enum TargetOutcome {
    Found {
        isvc: Arc<InferenceService>,
        /// This reconcile applied the template.
        applied: bool,
    },
    /// Referenced, and not there.
    NotFound,
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
