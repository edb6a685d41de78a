//! Step 2: who the credential is for. A ServiceAccount (the dedicated one is applied, a named
//! one must exist), or a Dex user whose login comes from the user's own Secret (read only; the
//! password goes to the login form and nowhere else).

use std::fmt;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};

use super::apply::{Applied, Applier};
use super::build;
use super::error::{Error, Kind};
use super::plan::{IdentityPlan, Plan, dex_user_id, service_account_user};
use crate::core::credential::{DexSessionInputs, Inputs, TokenRequestInputs};
use crate::core::secret_codec::SecretFields;
use crate::gateway::dex::Connector;

/// A Dex password: only ever handed to the login form.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    ServiceAccount(TokenRequestInputs),
    DexUser {
        login: DexSessionInputs,
        password: Password,
        connector: Connector,
        /// What the gateway puts in the user-id header for this session.
        user_id: String,
    },
}

impl Identity {
    /// What the credential is obtained with, as recorded on the Secret.
    pub fn inputs(&self) -> Inputs {
        match self {
            Identity::ServiceAccount(request) => Inputs::ServiceAccountToken(request.clone()),
            Identity::DexUser { login, .. } => Inputs::DexSession(login.clone()),
        }
    }

    /// The value the gateway puts in the user-id header for this identity.
    pub fn user_id(&self, namespace: &str) -> String {
        match self {
            Identity::ServiceAccount(request) => {
                service_account_user(namespace, &request.service_account)
            }
            Identity::DexUser { user_id, .. } => user_id.clone(),
        }
    }

    /// For messages: `ServiceAccount x` or `Dex user y`.
    pub fn describe(&self) -> String {
        match self {
            Identity::ServiceAccount(request) => {
                format!("ServiceAccount {}", request.service_account)
            }
            Identity::DexUser { login, .. } => format!("Dex user {}", login.username),
        }
    }
}

#[derive(Debug)]
pub enum IdentityOutcome {
    Ready {
        identity: Identity,
        /// This reconcile applied the dedicated ServiceAccount.
        applied: bool,
    },
    ServiceAccountNotFound,
    /// The dedicated ServiceAccount's name is taken by one this access does not control.
    ServiceAccountConflict,
    /// The Dex credentials Secret is missing or lacks its keys.
    CredentialsSecretInvalid,
    Failed(Error),
}

impl IdentityOutcome {
    pub fn ready(&self) -> Option<&Identity> {
        match self {
            IdentityOutcome::Ready { identity, .. } => Some(identity),
            _ => None,
        }
    }
}

pub async fn resolve(applier: &Applier, plan: &Plan) -> IdentityOutcome {
    match &plan.identity {
        IdentityPlan::ServiceAccount {
            name,
            dedicated,
            request,
        } => {
            let ready = |applied| IdentityOutcome::Ready {
                identity: Identity::ServiceAccount(request.clone()),
                applied,
            };
            if *dedicated {
                let wanted = build::service_account(plan, name);
                match applier.ensure(Kind::ServiceAccount, &wanted).await {
                    Ok(Applied::Changed(_)) => ready(true),
                    Ok(Applied::Unchanged(_)) => ready(false),
                    Ok(Applied::Conflict { .. }) => IdentityOutcome::ServiceAccountConflict,
                    // Core kinds are always served; a 404 on apply is a vanished namespace.
                    Ok(Applied::NotServed) => IdentityOutcome::ServiceAccountNotFound,
                    Err(err) => IdentityOutcome::Failed(err),
                }
            } else {
                match applier
                    .get::<ServiceAccount>(Kind::ServiceAccount, name)
                    .await
                {
                    Ok(Some(_)) => ready(false),
                    Ok(None) => IdentityOutcome::ServiceAccountNotFound,
                    Err(err) => IdentityOutcome::Failed(err),
                }
            }
        }
        IdentityPlan::DexUser {
            credentials,
            connector,
            login_url,
            user_id,
        } => {
            let secret = match applier
                .get::<Secret>(Kind::CredentialsSecret, &credentials.name)
                .await
            {
                Ok(secret) => secret,
                Err(err) => return IdentityOutcome::Failed(err),
            };
            let text = |key: &str| secret.as_ref().and_then(|s| s.text(key)).map(str::to_owned);
            let (Some(username), Some(password)) = (
                text(&credentials.username_key),
                text(&credentials.password_key),
            ) else {
                return IdentityOutcome::CredentialsSecretInvalid;
            };
            IdentityOutcome::Ready {
                identity: Identity::DexUser {
                    user_id: dex_user_id(user_id.as_deref(), &username),
                    login: DexSessionInputs {
                        username,
                        connector: connector.id().to_owned(),
                        login_url: login_url.clone(),
                    },
                    password: Password(password),
                    connector: *connector,
                },
                applied: false,
            }
        }
    }
}
