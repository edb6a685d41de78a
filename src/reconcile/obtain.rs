//! A new credential: a token from the TokenRequest API, bound to the Secret (the server's
//! expiry is the truth: it may have capped the duration), or a Dex session from logging in
//! through the gateway as a person would.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;

use super::apply::Applier;
use super::build;
use super::error::{Error, Kind};
use super::identity::Identity;
use crate::core::credential::{Credential, IssuedCredential, Record};
use crate::gateway::client::GatewayClient;
use crate::gateway::dex;

/// When a Dex session cookie says nothing about its lifetime (oauth2-proxy's default is 168h;
/// Kubeflow sets 24h).
pub const DEFAULT_SESSION_LIFETIME: SignedDuration = SignedDuration::from_hours(24);

pub async fn obtain(
    applier: &Applier<'_>,
    gateway: Option<&GatewayClient>,
    identity: &Identity,
    secret_name: &str,
    secret_uid: &str,
    renew_request: Option<&str>,
    now: Timestamp,
) -> Result<IssuedCredential, Error> {
    let (value, expires_at) = match identity {
        Identity::ServiceAccount(request) => {
            let body = build::token_request(request, secret_name, secret_uid);
            let response: TokenRequest = applier
                .api::<ServiceAccount>()
                .create_subresource(
                    "token",
                    &request.service_account,
                    &PostParams::default(),
                    &body,
                )
                .await
                .map_err(Error::api(Kind::TokenRequest))?;
            let status = response.status.ok_or(Error::EmptyTokenResponse)?;
            if status.token.is_empty() {
                return Err(Error::EmptyTokenResponse);
            }
            (
                Credential::Bearer(status.token),
                status.expiration_timestamp.0,
            )
        }
        Identity::DexUser {
            login,
            password,
            connector,
            ..
        } => {
            let client = gateway.ok_or_else(|| Error::DexLogin {
                message: "no HTTP client could be built".into(),
                refused: false,
            })?;
            let session = dex::login(
                client,
                &login.login_url,
                &login.username,
                &password.0,
                *connector,
                now,
            )
            .await
            .map_err(|e| Error::DexLogin {
                refused: matches!(e, dex::LoginError::InvalidCredentials { .. }),
                message: e.to_string(),
            })?;
            let expires_at = session.expires_at.unwrap_or(now + DEFAULT_SESSION_LIFETIME);
            let cookie = Credential::Cookie {
                name: session.cookie_name,
                value: session.cookie_value,
            };
            (cookie, expires_at)
        }
    };
    Ok(IssuedCredential {
        value,
        record: Record {
            issued_at: now,
            expires_at,
            inputs: identity.inputs(),
            renew_request: renew_request.map(str::to_owned),
        },
    })
}
