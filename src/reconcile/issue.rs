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
    pub result: IssueResult,
}

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
        plan.renew_requested_at,
        inputs.now,
    );
    let issued = match (minted, current) {
        (None, Some(current)) => current,
        _ => match obtain(
            applier,
            inputs.gateway,
            inputs.identity,
            &secret,
            inputs.now,
        )
        .await
        {
            Ok(issued) => issued,
            Err(err) => {
                outcome.result = IssueResult::ObtainFailed(err);
                return outcome;
            }
        },
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
