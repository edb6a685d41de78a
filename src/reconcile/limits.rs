//! What the cluster admin allows an InferenceAccess to ask for. The spec is written by whoever
//! may create an access (in Kubeflow: every namespace editor) while the operator holds
//! cluster-wide rights, so every field that chooses an audience, a lifetime, a destination for
//! a credential or a hole in a policy is checked against these limits (GUIDE §5). Defaults are
//! Kubeflow's: the ingress gateway's audience and address, its mesh identity and user-id header.

use jiff::SignedDuration;

use crate::api::{
    DEFAULT_AUDIENCE, DEFAULT_GATEWAY_PRINCIPAL, DEFAULT_GATEWAY_URL, DEFAULT_USER_ID_HEADER,
};
use crate::core::renewal::MIN_TOKEN_LIFETIME;
use crate::core::url::HttpUrl;

/// Audiences the API server accepts on most distributions (its issuer, `--api-audiences`'
/// default): a token for any of them is a Kubernetes API credential. Never minted, whatever the
/// spec or the allow-list says; the issuer the cluster really uses is added at start.
pub const API_AUDIENCES: [&str; 4] = [
    "https://kubernetes.default.svc.cluster.local",
    "https://kubernetes.default.svc",
    "https://kubernetes.default",
    "kubernetes",
];

/// Kubeflow's default session length is 24 h; a token that lives longer outlives the person's
/// own login, for no benefit when renewal is automatic.
pub const DEFAULT_MAX_TOKEN_LIFETIME: SignedDuration = SignedDuration::from_hours(24);

#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Audiences a token may be minted for.
    pub allowed_audiences: Vec<String>,
    /// Longer requests are capped to this (and the status says so).
    pub max_token_lifetime: SignedDuration,
    /// Where a token, cookie or password may be sent: origins (`scheme://host[:port]`); a host
    /// `*.example.com` matches its subdomains.
    pub allowed_gateways: Vec<String>,
    /// Headers the gateway overwrites with the verified identity: only these may carry the
    /// user id an AuthorizationPolicy admits.
    pub allowed_user_id_headers: Vec<String>,
    /// Mesh identities that may forward requests to a predictor (the gateways).
    pub allowed_source_principals: Vec<String>,
    /// Whether an access may template (create) its InferenceService: creating an
    /// InferenceService runs pods, a right RBAC grants separately.
    pub templates: bool,
    /// Whether an access may reach a model in another namespace (with its owner's consent):
    /// only an operator that watches every namespace follows consents as they change.
    pub cross_namespace: bool,
    /// Audiences never minted (the API server's).
    pub api_audiences: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            allowed_audiences: vec![DEFAULT_AUDIENCE.to_owned()],
            max_token_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
            allowed_gateways: vec![DEFAULT_GATEWAY_URL.to_owned()],
            allowed_user_id_headers: vec![DEFAULT_USER_ID_HEADER.to_owned()],
            allowed_source_principals: vec![DEFAULT_GATEWAY_PRINCIPAL.to_owned()],
            templates: true,
            cross_namespace: true,
            api_audiences: API_AUDIENCES.iter().map(|a| (*a).to_owned()).collect(),
        }
    }
}

impl Limits {
    /// Refuses a configuration that would let the operator mint API credentials or that cannot
    /// be met: checked once at start, so a mistake stops the process instead of every access.
    pub fn check(&self) -> Result<(), String> {
        if let Some(api) = self
            .allowed_audiences
            .iter()
            .find(|a| self.is_api_audience(a))
        {
            return Err(format!(
                "allowed audience {api:?} is the API server's own: a token for it would be a Kubernetes API credential"
            ));
        }
        if self.allowed_audiences.iter().any(|a| a.is_empty()) {
            return Err("allowed audiences must not be empty strings".into());
        }
        if self.max_token_lifetime < MIN_TOKEN_LIFETIME {
            return Err(
                "the maximum token lifetime must be at least 10m (the API server's minimum)".into(),
            );
        }
        for gateway in &self.allowed_gateways {
            let url = HttpUrl::parse(gateway.replacen("*.", "wildcard.", 1).as_str())
                .map_err(|e| format!("allowed gateway {gateway:?} {e}"))?;
            if url.has_userinfo() || !url.path_or_root().eq("/") {
                return Err(format!(
                    "allowed gateway {gateway:?} must be an origin: scheme://host[:port]"
                ));
            }
        }
        for principal in &self.allowed_source_principals {
            if principal.is_empty() || principal.contains('*') {
                return Err(format!(
                    "allowed source principal {principal:?} must be one exact identity, without wildcards"
                ));
            }
        }
        Ok(())
    }

    /// The issuer the cluster signs ServiceAccount tokens with is an API audience too.
    pub fn with_api_audience(mut self, issuer: &str) -> Self {
        if !issuer.is_empty() && !self.api_audiences.iter().any(|a| a == issuer) {
            self.api_audiences.push(issuer.to_owned());
        }
        self
    }

    pub fn is_api_audience(&self, audience: &str) -> bool {
        let bare = audience.trim_end_matches('/');
        self.api_audiences
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(bare))
    }

    pub fn audience_allowed(&self, audience: &str) -> bool {
        !self.is_api_audience(audience) && self.allowed_audiences.iter().any(|a| a == audience)
    }

    /// Whether credentials may be sent to `url`: same scheme, host and port as an allowed
    /// gateway.
    pub fn gateway_allowed(&self, url: &HttpUrl) -> bool {
        self.allowed_gateways.iter().any(|allowed| {
            let (pattern, wildcard) = match allowed.split_once("://*.") {
                Some((scheme, rest)) => (format!("{scheme}://{rest}"), true),
                None => (allowed.clone(), false),
            };
            let Ok(allowed) = HttpUrl::parse(&pattern) else {
                return false;
            };
            let host_matches = if wildcard {
                url.host()
                    .strip_suffix(allowed.host())
                    .is_some_and(|head| head.ends_with('.') && head.len() > 1)
            } else {
                url.host() == allowed.host()
            };
            host_matches
                && url.scheme() == allowed.scheme()
                && url.effective_port() == allowed.effective_port()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> HttpUrl {
        HttpUrl::parse(text).unwrap()
    }

    #[test]
    fn gateways_match_by_origin() {
        let limits = Limits {
            allowed_gateways: vec![
                DEFAULT_GATEWAY_URL.into(),
                "https://*.example.com".into(),
                "http://127.0.0.1:8080".into(),
            ],
            ..Limits::default()
        };
        let cases = [
            (
                "http://istio-ingressgateway.istio-system.svc.cluster.local",
                true,
            ),
            (
                "http://istio-ingressgateway.istio-system.svc.cluster.local:80/x",
                true,
            ),
            (
                "http://ISTIO-ingressgateway.istio-system.svc.cluster.local",
                true,
            ),
            (
                "https://istio-ingressgateway.istio-system.svc.cluster.local",
                false,
            ),
            (
                "http://istio-ingressgateway.istio-system.svc.cluster.local:8080",
                false,
            ),
            (
                "http://istio-ingressgateway.istio-system.svc.cluster.local.evil.com",
                false,
            ),
            ("https://kubeflow.example.com", true),
            ("https://a.b.example.com/path", true),
            ("https://example.com", false),
            ("https://evilexample.com", false),
            ("http://kubeflow.example.com", false),
            ("http://127.0.0.1:8080", true),
            ("http://127.0.0.1:8081", false),
            ("http://attacker.example.net", false),
        ];
        for (text, expected) in cases {
            assert_eq!(limits.gateway_allowed(&url(text)), expected, "{text}");
        }
    }

    #[test]
    fn api_audiences_are_never_allowed() {
        let limits = Limits::default().with_api_audience("https://oidc.eks.example.com/id/X");
        for audience in [
            "https://kubernetes.default.svc.cluster.local",
            "https://kubernetes.default.svc.cluster.local/",
            "kubernetes",
            "https://oidc.eks.example.com/id/X",
        ] {
            assert!(!limits.audience_allowed(audience), "{audience}");
        }
        assert!(limits.audience_allowed(DEFAULT_AUDIENCE));
        assert!(!limits.audience_allowed("other"));
        let reckless = Limits {
            allowed_audiences: vec!["https://kubernetes.default.svc".into()],
            ..Limits::default()
        };
        assert!(reckless.check().unwrap_err().contains("API server's own"));
    }

    #[test]
    fn the_configuration_itself_is_checked() {
        assert_eq!(Limits::default().check(), Ok(()));
        let cases = [
            (
                Limits {
                    max_token_lifetime: SignedDuration::from_mins(5),
                    ..Limits::default()
                },
                "at least 10m",
            ),
            (
                Limits {
                    allowed_gateways: vec!["https://gw.example.com/kubeflow".into()],
                    ..Limits::default()
                },
                "must be an origin",
            ),
            (
                Limits {
                    allowed_source_principals: vec!["cluster.local/ns/*".into()],
                    ..Limits::default()
                },
                "without wildcards",
            ),
        ];
        for (limits, needle) in cases {
            let err = limits.check().unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }
}
