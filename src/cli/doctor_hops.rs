//! `doctor`'s hops as it prints them: each finding and verdict from what was read (pure), and the
//! human rendering of the report.

use std::fmt::Write as _;

use jiff::Timestamp;

use super::doctor::Report;
use super::doctor_checks::{self as checks, Claims, Hop, JwtRuleView, PolicyView, Verdict};
use super::output::relative;
use crate::api::InferenceService;
use crate::api::inference_service::Readiness;
use crate::core::credential::Credential;
use crate::core::secret_codec::ClientSecret;
use crate::reconcile::detect::Observed;

pub fn target_hop(
    ns: &str,
    model: &str,
    isvc: &Result<Option<InferenceService>, kube::Error>,
    stored: Option<&ClientSecret>,
) -> Hop {
    match isvc {
        Err(error) => Hop::new(
            "target",
            Verdict::Warn,
            format!("cannot read InferenceService {ns}/{model}: {error}"),
        ),
        Ok(None) => Hop::new(
            "target",
            Verdict::Fail,
            format!("InferenceService {ns}/{model} does not exist"),
        )
        .fix("create it, or let the access template it (spec.inferenceService.template)"),
        Ok(Some(isvc)) => match (isvc.readiness(), isvc.url()) {
            (Readiness::NotReady { reason, message }, _) => Hop::new(
                "target",
                Verdict::Warn,
                format!("InferenceService {model} is not Ready ({reason}: {message})"),
            )
            .fix("look at its predictor pods and `kubectl describe isvc`"),
            (Readiness::Ready, None) => Hop::new(
                "target",
                Verdict::Warn,
                format!("InferenceService {model} is Ready but has no status.url"),
            ),
            (Readiness::Ready, Some(url)) if stored.is_some_and(|s| s.url != url) => Hop::new(
                "target",
                Verdict::Warn,
                format!(
                    "InferenceService {model} is Ready at {url}, but the Secret still says {}",
                    stored.map(|s| s.url.as_str()).unwrap_or_default()
                ),
            )
            .fix("the operator rewrites the Secret on its next reconcile"),
            (Readiness::Ready, Some(url)) => Hop::new(
                "target",
                Verdict::Ok,
                format!("InferenceService {model} is Ready at {url}"),
            ),
        },
    }
}

pub fn token_hop(stored: Option<&ClientSecret>, claims: Option<&Claims>, now: Timestamp) -> Hop {
    match (stored.map(|s| &s.credential), claims) {
        (None, _) => Hop::new("token", Verdict::Skip, "no credential yet"),
        (Some(Credential::Cookie { name, .. }), _) => Hop::new(
            "token",
            Verdict::Ok,
            format!("a Dex session cookie {name}; only oauth2-proxy knows when the session ends"),
        ),
        (Some(Credential::Bearer(_)), None) => {
            Hop::new("token", Verdict::Fail, "the token is not a JWT")
                .fix("run `inference-access renew` for a new one")
        }
        (Some(Credential::Bearer(_)), Some(claims)) => {
            let who = format!(
                "sub {}, iss {}, aud {}",
                claims.subject.as_deref().unwrap_or("(none)"),
                claims.issuer.as_deref().unwrap_or("(none)"),
                claims.audiences.join(", ")
            );
            match claims.expires.and_then(|e| Timestamp::from_second(e).ok()) {
                Some(exp) if exp <= now => Hop::new("token", Verdict::Fail, format!("{who}; expired {}", relative(exp, now)))
                    .fix("the operator renews before expiry: check CredentialIssued (`inference-access status`), or run `inference-access renew`"),
                Some(exp) => Hop::new("token", Verdict::Ok, format!("{who}; expires {} ({exp})", relative(exp, now))),
                None => Hop::new("token", Verdict::Warn, format!("{who}; no exp claim")),
            }
        }
    }
}

pub fn gateway_hop(
    stored: Option<&ClientSecret>,
    gateway: Option<String>,
    rules: &[JwtRuleView],
    claims: Option<&Claims>,
    views: &[PolicyView],
) -> Hop {
    let at = match (&gateway, stored) {
        (Some(g), _) => format!("Gateway {g}"),
        (None, Some(s)) => format!("the ingress gateway at {}", s.gateway_url),
        (None, None) => "the ingress gateway".to_owned(),
    };
    let policies = checks::judge_policies("gateway", views);
    let (verdict, authn) = match claims {
        Some(claims) => checks::judge_authentication(rules, claims),
        None => (
            Verdict::Ok,
            "the credential is a session cookie, checked by oauth2-proxy".to_owned(),
        ),
    };
    let verdict = [verdict, policies.verdict]
        .into_iter()
        .max_by_key(|v| match v {
            Verdict::Fail => 3,
            Verdict::Warn => 2,
            Verdict::Ok => 1,
            Verdict::Skip => 0,
        })
        .unwrap_or(Verdict::Ok);
    let hop = Hop::new(
        "gateway",
        verdict,
        format!("{at}: {authn}; {}", policies.finding),
    );
    match policies.fix {
        Some(fix) if policies.verdict != Verdict::Ok => hop.fix(fix),
        _ => hop,
    }
}

pub fn route_hop(observed: &Observed, at_gateway: bool, stored: Option<&ClientSecret>) -> Hop {
    let host = stored.map(|s| s.host.as_str()).unwrap_or("(unknown)");
    match &observed.route {
        Some(route) if at_gateway => Hop::new(
            "route",
            Verdict::Ok,
            format!(
                "HTTPRoute {} (owned by the InferenceService) routes Host {host}",
                route.name
            ),
        ),
        Some(route) => Hop::new(
            "route",
            Verdict::Warn,
            format!(
                "HTTPRoute {} routes Host {host}, but its Gateway is not run by Istio: no policy there",
                route.name
            ),
        ),
        None => Hop::new(
            "route",
            Verdict::Ok,
            format!("Host {host}, from the InferenceService's status.url"),
        ),
    }
}

pub fn pod_hop_report(hop: &'static str, observed: &Observed, views: &[PolicyView]) -> Hop {
    let sidecars = observed.pod_sidecars.iter().filter(|s| **s).count();
    let pods = observed.pod_sidecars.len();
    let state = match hop {
        "waypoint" => {
            "the namespace is ambient and the predictor Service uses a waypoint".to_owned()
        }
        "ztunnel" => "ambient without a waypoint: ztunnel enforces L4 only".to_owned(),
        "pod" => format!(
            "{pods} predictor pods, no sidecar, not ambient: nothing here enforces a policy"
        ),
        _ => format!("{sidecars} of {pods} predictor pods run an Istio sidecar"),
    };
    let policies = checks::judge_policies(hop, views);
    let verdict = if hop == "pod" {
        Verdict::Warn
    } else {
        policies.verdict
    };
    let found = Hop::new(hop, verdict, format!("{state}; {}", policies.finding));
    match policies.fix {
        Some(fix) => found.fix(fix),
        None if hop == "pod" => found.fix("any caller the gateway authenticates gets through: set spec.mesh.mode to Auto on a path that enforces"),
        None => found,
    }
}

pub fn human(report: &Report) -> String {
    let mut out = format!(
        "InferenceAccess {}/{} (mesh.mode {}{})\n\n",
        report.namespace,
        report.name,
        report.mode,
        report
            .mesh_path
            .as_ref()
            .map(|p| format!(", path {p}"))
            .unwrap_or_default()
    );
    for hop in &report.hops {
        let mark = match hop.verdict {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "-",
        };
        let _ = writeln!(out, "  {mark:<5} {:<9} {}", hop.hop, hop.finding);
        if let Some(fix) = &hop.fix {
            let _ = writeln!(out, "  {:<5} {:<9} fix: {fix}", "", "");
        }
    }
    if !report.policies.is_empty() {
        out.push_str("\nPolicies that apply:\n");
        for p in &report.policies {
            let names = if p.names_identity {
                "names this identity"
            } else {
                "does not name this identity"
            };
            let _ = writeln!(
                out,
                "  {:<9} {:<5} {} ({}): {names}",
                p.hop, p.action, p.name, p.attached
            );
        }
    }
    match &report.failing_hop {
        Some(hop) => {
            let _ = writeln!(
                out,
                "\nVerdict: the request fails at the {hop} hop{}",
                report
                    .reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
        }
        None => out.push_str("\nVerdict: the credential reaches the model\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_output_marks_the_failing_hop_and_its_fix() {
        let report = Report {
            name: "a".into(),
            namespace: "ns".into(),
            mode: "Auto".into(),
            mesh_path: Some("Sidecar".into()),
            hops: vec![
                Hop::new("target", Verdict::Ok, "InferenceService m is Ready"),
                Hop::new(
                    "sidecar",
                    Verdict::Fail,
                    "1 of 1 predictor pods run an Istio sidecar",
                )
                .fix("add the ALLOW"),
            ],
            policies: vec![PolicyView {
                hop: "sidecar",
                name: "ns/p".into(),
                action: "ALLOW".into(),
                attached: "selector",
                names_identity: false,
            }],
            token: None,
            failing_hop: Some("sidecar".into()),
            reason: Some("AccessDenied".into()),
        };
        let text = human(&report);
        assert!(text.contains("mesh.mode Auto, path Sidecar"), "{text}");
        assert!(text.contains("  FAIL  sidecar   1 of 1"), "{text}");
        assert!(text.contains("fix: add the ALLOW"), "{text}");
        assert!(
            text.contains("sidecar   ALLOW ns/p (selector): does not name this identity"),
            "{text}"
        );
        assert!(
            text.ends_with("Verdict: the request fails at the sidecar hop (AccessDenied)\n"),
            "{text}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["failingHop"], "sidecar");
        assert_eq!(json["hops"][1]["verdict"], "fail");
    }
}
