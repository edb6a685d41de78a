//! Step 3: the credential Secret. It must exist (owned, labelled) before a token can be bound
//! to it; then a credential is obtained when the held one is missing, due, stale or a renewal
//! was asked for; then every key is written in one apply, so clients never read a half-written
//! Secret and the old credential stays until the new one replaces it.
//!
//! The decision needs only the Secret's metadata: the record (issue time, expiry, inputs) and a
//! fingerprint of the endpoint keys are annotations. The data is read only when it must be
//! rewritten without a new credential (the endpoint moved).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;

use super::apply::{Applied, Applier};
use super::build;
use super::error::{Error, Kind};
use super::identity::Identity;
use super::obtain::obtain;
use super::plan::Plan;
use crate::core::credential::{Credential, IssuedCredential, Record};
use crate::core::endpoint::Endpoint;
use crate::core::renewal::{IssueReason, needs_issue};
use crate::core::secret_codec::{
    SecretFields, annotations, decode_credential, decode_issued, decode_record, encode,
};
use crate::gateway::client::GatewayClient;

#[derive(Debug)]
pub struct IssueOutcome {
    /// Where clients send requests, once `status.url` gave it.
    pub endpoint: Option<Endpoint>,
    /// The Secret was read: its name goes into the status.
    pub secret_seen: bool,
    /// The record of the credential the Secret now holds (new or kept): its expiry goes into
    /// the status.
    pub held: Option<Record>,
    /// The credential itself, when this reconcile obtained or read it.
    pub credential: Option<Credential>,
    /// DexSession: the refused-login count to publish.
    pub login_refusals: Option<LoginRefusals>,
    pub result: IssueResult,
}

/// Dex logins refused in a row, for one version of the credentials Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoginRefusals {
    pub count: u32,
    pub secret_version: String,
}

/// Refused logins in a row after which the operator stops trying: an account must never be
/// locked out by the operator retrying a wrong password.
pub const MAX_LOGIN_REFUSALS: u32 = 3;

#[derive(Debug)]
pub enum IssueResult {
    /// No usable `status.url` yet.
    WaitingForUrl { message: String },
    /// A Secret of that name exists and this access did not create it: left untouched.
    SecretConflict,
    Ready {
        /// Why a credential was obtained this time, if one was.
        minted: Option<IssueReason>,
        /// This reconcile wrote the Secret's data.
        written: bool,
    },
    /// Obtaining a new credential failed; `held` is the old one, if any.
    ObtainFailed(Error),
    /// Dex refused this Secret's login too often: no more attempts until the spec or the
    /// Secret changes.
    LoginStopped,
    /// Reading or writing the Secret failed.
    Failed(Error),
}

/// Everything the step needs besides the plan.
pub struct Inputs<'a> {
    pub status_url: Option<&'a str>,
    pub identity: &'a Identity,
    pub gateway: Option<&'a GatewayClient>,
    pub now: Timestamp,
}

pub async fn ensure(applier: &Applier<'_>, plan: &Plan, inputs: Inputs<'_>) -> IssueOutcome {
    let mut outcome = IssueOutcome {
        endpoint: None,
        secret_seen: false,
        held: None,
        credential: None,
        login_refusals: plan.login_refusals.clone(),
        result: IssueResult::SecretConflict,
    };
    let resolved = match inputs.status_url {
        None => Err(format!(
            "waiting for InferenceService {} to publish status.url",
            plan.target.name
        )),
        Some(url) => plan
            .target
            .endpoint(url, &plan.gateway_url)
            .map_err(|e| e.to_string()),
    };
    let endpoint = match resolved {
        Ok(endpoint) => endpoint,
        Err(message) => {
            outcome.result = IssueResult::WaitingForUrl { message };
            return outcome;
        }
    };
    outcome.endpoint = Some(endpoint.clone());
    let secret = match applier.ensure_secret(&build::empty_secret(plan)).await {
        Ok(Applied::Changed(secret) | Applied::Unchanged(secret)) => secret,
        Ok(Applied::Conflict { .. } | Applied::NotServed) => {
            outcome.secret_seen = true;
            return outcome;
        }
        Err(err) => {
            outcome.result = IssueResult::Failed(err);
            return outcome;
        }
    };
    outcome.secret_seen = true;
    let current = match held(applier, plan, &secret).await {
        Ok(current) => current,
        Err(err) => {
            outcome.result = IssueResult::Failed(err);
            return outcome;
        }
    };
    outcome.held = current.as_ref().map(|(record, _)| record.clone());
    let minted = needs_issue(
        current.as_ref().map(|(record, _)| record),
        &inputs.identity.inputs(),
        plan.renew_before,
        plan.renew_request.as_deref(),
        inputs.now,
    );
    let refusals = refusals_for(plan, inputs.identity);
    let (record, known) = match (minted, current) {
        (None, Some(current)) => current,
        _ if refusals
            .as_ref()
            .is_some_and(|r| r.count >= MAX_LOGIN_REFUSALS) =>
        {
            outcome.result = IssueResult::LoginStopped;
            return outcome;
        }
        _ => {
            let obtained = obtain(
                applier,
                inputs.gateway,
                inputs.identity,
                &secret.name_any(),
                &secret.uid().unwrap_or_default(),
                plan.renew_request.as_deref(),
                inputs.now,
            )
            .await;
            outcome.login_refusals = match (&obtained, refusals) {
                (Err(Error::DexLogin { refused: true, .. }), previous) => Some(LoginRefusals {
                    count: previous.map_or(0, |p| p.count) + 1,
                    secret_version: secret_version(inputs.identity),
                }),
                (Err(_), previous) => previous,
                (Ok(_), _) => None,
            };
            match obtained {
                Ok(issued) => (issued.record, Some(issued.value)),
                Err(err) => {
                    outcome.result = IssueResult::ObtainFailed(err);
                    return outcome;
                }
            }
        }
    };
    // The data is rewritten for a new credential, or when the endpoint (or the record) the
    // annotations describe is not the wanted one.
    let wanted = annotations(&record, &endpoint);
    let current_annotations = secret.annotations();
    let up_to_date = wanted
        .iter()
        .all(|(k, v)| current_annotations.get(k) == Some(v));
    if up_to_date && known.is_none() {
        outcome.result = IssueResult::Ready {
            minted,
            written: false,
        };
        return outcome;
    }
    let value = match known {
        Some(value) => value,
        None => match stored_credential(applier, plan).await {
            Ok(Some(value)) => value,
            Ok(None) => {
                // The record is there but the data is not: obtain a new one next time.
                outcome.held = None;
                outcome.result = IssueResult::Ready {
                    minted,
                    written: false,
                };
                return outcome;
            }
            Err(err) => {
                outcome.result = IssueResult::Failed(err);
                return outcome;
            }
        },
    };
    let issued = IssuedCredential {
        value,
        record: record.clone(),
    };
    let wanted = build::credential_secret(plan, &encode(&issued, &endpoint));
    outcome.result = match applier.apply_secret(&wanted).await {
        Ok(()) => {
            outcome.held = Some(record);
            outcome.credential = Some(issued.value);
            IssueResult::Ready {
                minted,
                written: true,
            }
        }
        Err(err) => IssueResult::Failed(err),
    };
    outcome
}

/// The record of the credential the Secret holds. Secrets written before the record was in the
/// annotations keep the expiry in their data: those are read once.
async fn held(
    applier: &Applier<'_>,
    plan: &Plan,
    secret: &PartialObjectMeta<Secret>,
) -> Result<Option<(Record, Option<Credential>)>, Error> {
    if let Some(record) = decode_record(secret) {
        return Ok(Some((record, None)));
    }
    if secret
        .annotation(crate::core::secret_codec::ANNOTATION_ISSUED_AT)
        .is_none()
    {
        return Ok(None);
    }
    let full = applier
        .fetch::<Secret>(Kind::Secret, &plan.secret.name)
        .await?;
    Ok(full
        .as_ref()
        .and_then(decode_issued)
        .map(|issued| (issued.record, Some(issued.value))))
}

/// The credential in the Secret's data (one request).
pub async fn stored_credential(
    applier: &Applier<'_>,
    plan: &Plan,
) -> Result<Option<Credential>, Error> {
    let full = applier
        .fetch::<Secret>(Kind::Secret, &plan.secret.name)
        .await?;
    Ok(full.as_ref().and_then(decode_credential))
}

impl SecretFields for PartialObjectMeta<Secret> {
    fn data(&self, _key: &str) -> Option<&[u8]> {
        None
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }
}

/// The refusals recorded for the credentials Secret's current version; a changed Secret starts
/// again from zero.
fn refusals_for(plan: &Plan, identity: &Identity) -> Option<LoginRefusals> {
    plan.login_refusals
        .clone()
        .filter(|r| r.secret_version == secret_version(identity))
}

fn secret_version(identity: &Identity) -> String {
    match identity {
        Identity::DexUser { secret_version, .. } => secret_version.clone(),
        Identity::ServiceAccount(_) => String::new(),
    }
}
