//! The cluster admin's limits as command-line flags (each also an environment variable): the
//! controller enforces them, `render` applies the same ones so it shows what the operator does.

use crate::api::{
    DEFAULT_AUDIENCE, DEFAULT_GATEWAY_PRINCIPAL, DEFAULT_GATEWAY_URL, DEFAULT_USER_ID_HEADER,
};
use crate::reconcile::limits::{DEFAULT_MAX_TOKEN_LIFETIME, Limits};

#[derive(clap::Args, Clone, Debug)]
pub struct LimitsArgs {
    /// Audiences a token may be minted for (comma-separated). The API server's own audiences
    /// are never allowed.
    #[arg(long, env = "INFERENCE_ACCESS_ALLOWED_AUDIENCES", value_delimiter = ',', default_value = DEFAULT_AUDIENCE)]
    pub allowed_audiences: Vec<String>,
    /// The longest token lifetime; longer requests are capped (Go duration).
    #[arg(
        long,
        env = "INFERENCE_ACCESS_MAX_TOKEN_LIFETIME",
        default_value = "24h"
    )]
    pub max_token_lifetime: kube::core::Duration,
    /// Where tokens, cookies and passwords may be sent: origins `scheme://host[:port]`
    /// (comma-separated; `https://*.example.com` matches subdomains).
    #[arg(long, env = "INFERENCE_ACCESS_ALLOWED_GATEWAYS", value_delimiter = ',', default_value = DEFAULT_GATEWAY_URL)]
    pub allowed_gateways: Vec<String>,
    /// Headers the gateway overwrites with the verified identity (comma-separated).
    #[arg(long, env = "INFERENCE_ACCESS_ALLOWED_USER_ID_HEADERS", value_delimiter = ',', default_value = DEFAULT_USER_ID_HEADER)]
    pub allowed_user_id_headers: Vec<String>,
    /// Mesh identities of the gateways that may forward to predictors (comma-separated).
    #[arg(long, env = "INFERENCE_ACCESS_ALLOWED_SOURCE_PRINCIPALS", value_delimiter = ',', default_value = DEFAULT_GATEWAY_PRINCIPAL)]
    pub allowed_source_principals: Vec<String>,
    /// Whether an access may create its InferenceService from a template (which runs pods).
    #[arg(long, env = "INFERENCE_ACCESS_ALLOW_TEMPLATES", default_value_t = true, action = clap::ArgAction::Set)]
    pub allow_templates: bool,
}

impl LimitsArgs {
    /// The limits, checked: a configuration that would mint API credentials is refused.
    pub fn limits(&self) -> Result<Limits, String> {
        let max = std::time::Duration::from(self.max_token_lifetime);
        let limits = Limits {
            allowed_audiences: clean(&self.allowed_audiences),
            max_token_lifetime: jiff::SignedDuration::try_from(max)
                .unwrap_or(DEFAULT_MAX_TOKEN_LIFETIME),
            allowed_gateways: clean(&self.allowed_gateways),
            allowed_user_id_headers: clean(&self.allowed_user_id_headers),
            allowed_source_principals: clean(&self.allowed_source_principals),
            templates: self.allow_templates,
            ..Limits::default()
        };
        limits.check()?;
        Ok(limits)
    }
}

fn clean(values: &[String]) -> Vec<String> {
    values
        .iter()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}
