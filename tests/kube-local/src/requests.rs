//! Request accounting: every API request by verb, resource and caller.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// Position in the log since the start (marks survive `clear`).
    pub seq: u64,
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    pub group: String,
    /// Plural resource name.
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Authenticated user name (`admin`, `system:serviceaccount:NS:NAME`) or `system:anonymous`.
    pub caller: String,
    /// HTTP status code of the response (200 for a watch that started).
    pub code: u16,
}

impl Request {
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }
}

fn full_resource(r: &Request) -> String {
    match &r.subresource {
        Some(s) => format!("{}/{s}", r.resource),
        None => r.resource.clone(),
    }
}

#[derive(Default)]
pub struct RequestLog {
    inner: Mutex<(u64, Vec<Request>)>,
}

impl RequestLog {
    pub(crate) fn record(&self, mut r: Request) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        r.seq = g.0;
        g.0 += 1;
        g.1.push(r);
    }

    /// Every request recorded since the last `clear`.
    pub fn snapshot(&self) -> Vec<Request> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// Counts by (verb, resource, caller); resource includes `/subresource`.
    pub fn counts(&self) -> BTreeMap<(String, String, String), usize> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = BTreeMap::new();
        for r in &g.1 {
            *out.entry((r.verb.clone(), full_resource(r), r.caller.clone()))
                .or_insert(0) += 1;
        }
        out
    }

    /// Requests of one verb on one resource (`serviceaccounts/token` form for subresources).
    pub fn count(&self, verb: &str, resource: &str) -> usize {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.1.iter()
            .filter(|r| r.verb == verb && full_resource(r) == resource)
            .count()
    }

    pub fn clear(&self) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clear();
    }

    /// A position to compare later requests against.
    pub fn mark(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    pub fn since(&self, mark: u64) -> Vec<Request> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Recorded in seq order: only the tail is copied.
        let start = g.1.partition_point(|r| r.seq < mark);
        g.1[start..].to_vec()
    }

    /// Writes (create/update/patch/delete/deletecollection) recorded at or after `mark`.
    pub fn writes_since(&self, mark: u64) -> Vec<Request> {
        self.since(mark)
            .into_iter()
            .filter(Request::is_write)
            .collect()
    }
}
