//! Step 2: who the credential is for. A ServiceAccount (the dedicated one is applied, a named
//! one must exist), or a Dex user whose login comes from the user's own Secret (read only; the
//! password goes to the login form and nowhere else).

use std::fmt;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::ResourceExt;

use super::apply::{Applied, Applier};
use super::build;
use super::error::{Error, Kind};
use super::plan::{IdentityPlan, Plan, check_user_id, dex_user_id, service_account_user};
use crate::api::keys::{ANNOTATION_ALLOWED_ACCESSES, DEX_LOGIN_LABEL};
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
        /// The credentials Secret's resourceVersion: refused logins are counted per version.
        secret_version: String,
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
    /// A named ServiceAccount that does not consent to this access (its annotation).
    ServiceAccountNotAllowed,
    /// The Dex credentials Secret is not marked as a Dex login.
    CredentialsSecretNotAllowed,
    /// The Dex credentials Secret is missing, lacks its keys, or holds no usable username.
    CredentialsSecretInvalid {
        problem: &'static str,
    },
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

pub async fn resolve(applier: &Applier<'_>, plan: &Plan) -> IdentityOutcome {
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
                match applier.cached::<ServiceAccount>(name) {
                    Some(sa) if consents(&sa, &plan.access.name) => ready(false),
                    Some(_) => IdentityOutcome::ServiceAccountNotAllowed,
                    None => IdentityOutcome::ServiceAccountNotFound,
                }
            }
        }
        IdentityPlan::DexUser {
            credentials,
            connector,
            login_url,
            user_id,
        } => {
            // Read each time (not cached): the operator keeps no passwords in memory.
            let secret = match applier
                .fetch::<Secret>(Kind::CredentialsSecret, &credentials.name)
                .await
            {
                Ok(secret) => secret,
                Err(err) => return IdentityOutcome::Failed(err),
            };
            let Some(secret) = secret else {
                return IdentityOutcome::CredentialsSecretInvalid {
                    problem: "does not exist in this namespace",
                };
            };
            if secret.labels().get(DEX_LOGIN_LABEL).map(String::as_str) != Some("true") {
                return IdentityOutcome::CredentialsSecretNotAllowed;
            }
            let text = |key: &str| secret.text(key).map(str::to_owned);
            let (Some(username), Some(password)) = (
                text(&credentials.username_key),
                text(&credentials.password_key),
            ) else {
                return IdentityOutcome::CredentialsSecretInvalid {
                    problem: "lacks a non-empty username or password key",
                };
            };
            let user_id = dex_user_id(user_id.as_deref(), &username);
            if check_user_id("the username", &user_id).is_err() {
                return IdentityOutcome::CredentialsSecretInvalid {
                    problem: "holds a username that is not one user id (no '*', no spaces)",
                };
            }
            IdentityOutcome::Ready {
                identity: Identity::DexUser {
                    user_id,
                    secret_version: secret.resource_version().unwrap_or_default(),
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

/// Whether the ServiceAccount's owner allowed this access to mint tokens for it.
pub fn consents(service_account: &ServiceAccount, access: &str) -> bool {
    service_account
        .annotations()
        .get(ANNOTATION_ALLOWED_ACCESSES)
        .is_some_and(|list| {
            list.split(',')
                .map(str::trim)
                .any(|allowed| allowed == "*" || allowed == access)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consent_is_an_annotation_naming_the_access() {
        let sa = |annotation: Option<&str>| -> ServiceAccount {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "default-editor", "annotations": annotation
                    .map(|v| serde_json::json!({ANNOTATION_ALLOWED_ACCESSES: v}))
                    .unwrap_or_default()}
            }))
            .unwrap()
        };
        for (annotation, access, allowed) in [
            (None, "client", false),
            (Some(""), "client", false),
            (Some("client"), "client", true),
            (Some("other, client"), "client", true),
            (Some("*"), "client", true),
            (Some("clients"), "client", false),
            (Some("client-2"), "client", false),
        ] {
            assert_eq!(consents(&sa(annotation), access), allowed, "{annotation:?}");
        }
    }
}
