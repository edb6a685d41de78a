//! When a credential must be obtained again, and when the current one is renewed: pure
//! decisions over the record kept in the Secret and a `now`.

use jiff::{SignedDuration, Timestamp};

use super::credential::{Inputs, Record};

/// The API server refuses `expirationSeconds` below this.
pub const MIN_TOKEN_LIFETIME: SignedDuration = SignedDuration::from_secs(600);

impl Record {
    /// When to renew: `renew_before` ahead of expiry, or a third of the lifetime when unset.
    /// A server cap can make the real lifetime shorter than `renew_before`; renewing at once
    /// would then loop forever, so the default third applies instead.
    pub fn renewal_time(&self, renew_before: Option<SignedDuration>) -> Timestamp {
        let lifetime = self.expires_at.duration_since(self.issued_at);
        let third = lifetime / 3;
        let before = match renew_before {
            Some(before) if before < lifetime => before,
            _ => third,
        };
        self.expires_at - before
    }

    /// The renewal time spread by [`jitter`]: when the operator really renews.
    pub fn scheduled_renewal(&self, renew_before: Option<SignedDuration>, uid: &str) -> Timestamp {
        let renewal = self.renewal_time(renew_before);
        renewal + jitter(uid, self.expires_at.duration_since(renewal))
    }
}

/// Why a new credential is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueReason {
    /// The Secret holds no credential yet.
    Missing,
    /// The renewal time has come (or the credential already expired).
    Renewal,
    /// The ServiceAccount, audiences, duration or login changed since it was issued.
    SpecChanged,
    /// A person asked for a renewal (`inference-access renew`).
    Requested,
}

impl IssueReason {
    /// Whether a credential existed before: a renewal rather than a first issue.
    pub fn is_renewal(self) -> bool {
        self != IssueReason::Missing
    }
}

/// Whether the held credential is still good at `now`; `None` when it is.
///
/// A renew request is served once per distinct value, compared as text: no clocks are compared,
/// so a client whose clock differs from the operator's is still served.
pub fn needs_issue(
    current: Option<&Record>,
    wanted: &Inputs,
    renew_before: Option<SignedDuration>,
    renew_request: Option<&str>,
    now: Timestamp,
) -> Option<IssueReason> {
    let Some(current) = current else {
        return Some(IssueReason::Missing);
    };
    if &current.inputs != wanted {
        return Some(IssueReason::SpecChanged);
    }
    if let Some(request) = renew_request {
        let served = match &current.renew_request {
            Some(served) => served == request,
            // Written before requests were recorded: served if older than the credential.
            None => request
                .parse::<Timestamp>()
                .is_ok_and(|at| at <= current.issued_at),
        };
        if !served {
            return Some(IssueReason::Requested);
        }
    }
    (now >= current.renewal_time(renew_before)).then_some(IssueReason::Renewal)
}

/// A little deterministic jitter (up to 1% of the renew window, at most 30 s), derived from the
/// object's uid so a fleet of accesses created together does not renew in one burst.
pub fn jitter(uid: &str, window: SignedDuration) -> SignedDuration {
    let spread = (window.as_millis() / 100).clamp(0, 30_000) as u64;
    if spread == 0 {
        return SignedDuration::ZERO;
    }
    SignedDuration::from_millis((super::fnv1a(uid.as_bytes()) % spread) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::credential::TokenRequestInputs;
    use crate::fixtures::ts;

    fn token_inputs() -> TokenRequestInputs {
        TokenRequestInputs {
            service_account: "client".into(),
            audiences: vec!["istio-ingressgateway.istio-system.svc.cluster.local".into()],
            expiration_seconds: 3600,
        }
    }

    fn inputs() -> Inputs {
        Inputs::ServiceAccountToken(token_inputs())
    }

    fn issued(issued_at: &str, expires_at: &str) -> Record {
        Record {
            issued_at: ts(issued_at),
            expires_at: ts(expires_at),
            inputs: inputs(),
            renew_request: None,
        }
    }

    #[test]
    fn renewal_time_defaults_to_a_third_of_the_lifetime() {
        let token = issued("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z");
        assert_eq!(token.renewal_time(None), ts("2026-01-01T00:40:00Z"));
        assert_eq!(
            token.renewal_time(Some(SignedDuration::from_mins(5))),
            ts("2026-01-01T00:55:00Z")
        );
    }

    #[test]
    fn renewal_time_survives_a_server_cap_shorter_than_renew_before() {
        // Asked for 24h with renewBefore 2h; the server capped the token at 1h.
        let token = issued("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z");
        assert_eq!(
            token.renewal_time(Some(SignedDuration::from_hours(2))),
            ts("2026-01-01T00:40:00Z")
        );
    }

    #[test]
    fn scheduled_renewal_adds_at_most_a_percent_of_the_window() {
        let token = issued("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z");
        let scheduled = token.scheduled_renewal(None, "uid-a");
        assert!(scheduled >= ts("2026-01-01T00:40:00Z"), "{scheduled}");
        assert!(scheduled <= ts("2026-01-01T00:40:12Z"), "{scheduled}");
    }

    #[test]
    fn needs_issue_table() {
        let token = issued("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z");
        let served = Record {
            renew_request: Some("2026-01-01T00:05:00Z".into()),
            ..token.clone()
        };
        let mut other = token_inputs();
        other.audiences = vec!["other".into()];
        let other = Inputs::ServiceAccountToken(other);
        let cases = [
            (
                None,
                inputs(),
                None,
                "2026-01-01T00:10:00Z",
                Some(IssueReason::Missing),
            ),
            (Some(&token), inputs(), None, "2026-01-01T00:39:59Z", None),
            (
                Some(&token),
                inputs(),
                None,
                "2026-01-01T00:40:00Z",
                Some(IssueReason::Renewal),
            ),
            (
                Some(&token),
                inputs(),
                None,
                "2026-01-01T02:00:00Z",
                Some(IssueReason::Renewal),
            ),
            (
                Some(&token),
                other,
                None,
                "2026-01-01T00:10:00Z",
                Some(IssueReason::SpecChanged),
            ),
            (
                Some(&token),
                inputs(),
                Some("2026-01-01T00:05:00Z"),
                "2026-01-01T00:10:00Z",
                Some(IssueReason::Requested),
            ),
            // A renew request older than a token that records none was already served.
            (
                Some(&token),
                inputs(),
                Some("2025-12-31T23:00:00Z"),
                "2026-01-01T00:10:00Z",
                None,
            ),
            // The token records the request it served: the same value is not served twice,
            // whatever the clocks say.
            (
                Some(&served),
                inputs(),
                Some("2026-01-01T00:05:00Z"),
                "2026-01-01T00:10:00Z",
                None,
            ),
            (
                Some(&served),
                inputs(),
                Some("2025-01-01T00:00:00Z"),
                "2026-01-01T00:10:00Z",
                Some(IssueReason::Requested),
            ),
        ];
        for (current, wanted, requested, now, expected) in cases {
            assert_eq!(
                needs_issue(current, &wanted, None, requested, ts(now)),
                expected,
                "at {now}"
            );
        }
    }

    #[test]
    fn jitter_is_small_stable_and_spread() {
        let window = SignedDuration::from_mins(20);
        let a = jitter("uid-a", window);
        assert_eq!(a, jitter("uid-a", window));
        assert!(a <= SignedDuration::from_secs(12));
        let distinct: std::collections::BTreeSet<_> = (0..50)
            .map(|i| jitter(&format!("uid-{i}"), window))
            .collect();
        assert!(
            distinct.len() > 40,
            "jitter should spread accesses: {distinct:?}"
        );
        assert_eq!(jitter("uid-a", SignedDuration::ZERO), SignedDuration::ZERO);
    }
}
