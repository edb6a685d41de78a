//! Request accounting: every API request by verb, resource and caller.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// When the response was ready (a watch: when it started), since the log was created;
    /// lets a benchmark see where the time of a burst goes.
    pub at: Duration,
}

impl Request {
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }
}

fn full_resource(resource: &str, subresource: Option<&str>) -> String {
    match subresource {
        Some(s) => format!("{resource}/{s}"),
        None => resource.to_string(),
    }
}

/// One request as the log keeps it: the few distinct strings (verbs, resources, callers,
/// namespaces) shared, so a long benchmark's log stays small.
struct Record {
    seq: u64,
    verb: Arc<str>,
    group: Arc<str>,
    resource: Arc<str>,
    subresource: Option<Arc<str>>,
    namespace: Option<Arc<str>>,
    name: Option<Box<str>>,
    caller: Arc<str>,
    code: u16,
    at: Duration,
}

impl Record {
    fn request(&self) -> Request {
        Request {
            seq: self.seq,
            verb: self.verb.to_string(),
            group: self.group.to_string(),
            resource: self.resource.to_string(),
            subresource: self.subresource.as_deref().map(str::to_string),
            namespace: self.namespace.as_deref().map(str::to_string),
            name: self.name.as_deref().map(str::to_string),
            caller: self.caller.to_string(),
            code: self.code,
            at: self.at,
        }
    }
}

#[derive(Default)]
struct Log {
    next_seq: u64,
    records: Vec<Record>,
    strings: HashSet<Arc<str>>,
}

impl Log {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(v) = self.strings.get(s) {
            return v.clone();
        }
        let v: Arc<str> = s.into();
        self.strings.insert(v.clone());
        v
    }
}

pub struct RequestLog {
    inner: Mutex<Log>,
    started: Instant,
}

impl Default for RequestLog {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            started: Instant::now(),
        }
    }
}

impl RequestLog {
    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn record(&self, r: Request) {
        let mut g = self.log();
        let record = Record {
            seq: g.next_seq,
            verb: g.intern(&r.verb),
            group: g.intern(&r.group),
            resource: g.intern(&r.resource),
            subresource: r.subresource.as_deref().map(|s| g.intern(s)),
            namespace: r.namespace.as_deref().map(|s| g.intern(s)),
            name: r.name.map(String::into_boxed_str),
            caller: g.intern(&r.caller),
            code: r.code,
            at: self.started.elapsed(),
        };
        g.next_seq += 1;
        g.records.push(record);
    }

    /// Every request recorded since the last `clear`.
    pub fn snapshot(&self) -> Vec<Request> {
        self.log().records.iter().map(Record::request).collect()
    }

    /// Counts by (verb, resource, caller); resource includes `/subresource`.
    pub fn counts(&self) -> BTreeMap<(String, String, String), usize> {
        let g = self.log();
        let mut out = BTreeMap::new();
        for r in &g.records {
            let resource = full_resource(&r.resource, r.subresource.as_deref());
            *out.entry((r.verb.to_string(), resource, r.caller.to_string()))
                .or_insert(0) += 1;
        }
        out
    }

    /// Requests of one verb on one resource (`serviceaccounts/token` form for subresources).
    pub fn count(&self, verb: &str, resource: &str) -> usize {
        let g = self.log();
        g.records
            .iter()
            .filter(|r| {
                &*r.verb == verb && full_resource(&r.resource, r.subresource.as_deref()) == resource
            })
            .count()
    }

    pub fn clear(&self) {
        self.log().records.clear();
    }

    /// When the log was created: what each request's `at` counts from.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// A position to compare later requests against.
    pub fn mark(&self) -> u64 {
        self.log().next_seq
    }

    pub fn since(&self, mark: u64) -> Vec<Request> {
        let g = self.log();
        // Recorded in seq order: only the tail is copied.
        let start = g.records.partition_point(|r| r.seq < mark);
        g.records[start..].iter().map(Record::request).collect()
    }

    /// Writes (create/update/patch/delete/deletecollection) recorded at or after `mark`.
    pub fn writes_since(&self, mark: u64) -> Vec<Request> {
        self.since(mark)
            .into_iter()
            .filter(Request::is_write)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(verb: &str) -> Request {
        Request {
            seq: 0,
            verb: verb.to_string(),
            group: String::new(),
            resource: "secrets".to_string(),
            subresource: None,
            namespace: Some("ns".to_string()),
            name: Some("s".to_string()),
            caller: "admin".to_string(),
            code: 200,
            at: Duration::ZERO,
        }
    }

    #[test]
    fn each_request_is_stamped_in_order_after_the_log_started() {
        let log = RequestLog::default();
        let mark = log.mark();
        log.record(request("create"));
        let between = log.started().elapsed();
        log.record(request("patch"));
        let recorded = log.since(mark);
        assert_eq!(recorded.len(), 2);
        assert!(
            recorded[0].at <= between,
            "stamped when recorded, not later"
        );
        assert!(
            recorded[1].at >= between,
            "stamped when recorded, not earlier"
        );
        assert_eq!(
            recorded.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [mark, mark + 1]
        );
    }
}
