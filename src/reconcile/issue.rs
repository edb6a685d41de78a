//! Step 3: the credential Secret. It must exist (owned, labelled) before a token can be bound
//! to it; then a credential is obtained when the held one is missing, due, stale or a renewal
//! was asked for; then every key is written in one apply, so clients never read a half-written
//! Secret and the old credential stays until the new one replaces it.

use jiff::Timestamp;

use super::apply::{Applied, Applier};
use super::build;
use super::error::{Error, Kind};
use super::identity::Identity;
use super::obtain::obtain;
use super::plan::Plan;
use crate::core::credential::IssuedCredential;
use crate::core::endpoint::Endpoint;
use crate::core::renewal::{IssueReason, needs_issue};
use crate::core::secret_codec::{decode_issued, encode};
use crate::gateway::client::GatewayClient;

#[derive(Debug)]
pub struct IssueOutcome {
    /// Where clients send requests, once `status.url` gave it.
    pub endpoint: Option<Endpoint>,
    /// The Secret was read: its name goes into the status.
    pub secret_seen: bool,
    /// The credential the Secret now holds (new or kept): its expiry goes into the status.
    pub held: Option<IssuedCredential>,
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

pub async fn ensure(applier: &Applier, plan: &Plan, inputs: Inputs<'_>) -> IssueOutcome {
    let mut outcome = IssueOutcome {
        endpoint: None,
        secret_seen: false,
        held: None,
        login_refusals: plan.login_refusals.clone(),
        result: IssueResult::SecretConflict,
    };
    let resolved = match inputs.status_url {
        None => Err(format!(
            "waiting for InferenceService {} to publish status.url",
            plan.target.name
        )),
        Some(url) => {
            Endpoint::resolve(url, &plan.gateway_url, &plan.target.name).map_err(|e| e.to_string())
        }
    };
    let endpoint = match resolved {
        Ok(endpoint) => endpoint,
        Err(message) => {
            outcome.result = IssueResult::WaitingForUrl { message };
            return outcome;
        }
    };
    outcome.endpoint = Some(endpoint.clone());
    let secret = match applier
        .ensure_exists(Kind::Secret, &build::empty_secret(plan))
        .await
    {
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
    let current = decode_issued(&secret);
    outcome.held = current.clone();
    let minted = needs_issue(
        current.as_ref(),
        &inputs.identity.inputs(),
        plan.renew_before,
        plan.renew_request.as_deref(),
        inputs.now,
    );
    let refusals = refusals_for(plan, inputs.identity);
    let issued = match (minted, current) {
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
                &secret,
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
                Ok(issued) => issued,
                Err(err) => {
                    outcome.result = IssueResult::ObtainFailed(err);
                    return outcome;
                }
            }
        }
    };
    let wanted = build::credential_secret(plan, &encode(&issued, &endpoint));
    outcome.result = match applier
        .ensure_over(Kind::Secret, Some(secret), &wanted)
        .await
    {
        Ok(applied) => {
            outcome.held = Some(issued);
            IssueResult::Ready {
                minted,
                written: applied.changed(),
            }
        }
        Err(err) => IssueResult::Failed(err),
    };
    outcome
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
