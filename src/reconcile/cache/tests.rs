use super::*;
use serde_json::json;

/// A cache, and how its watch delivers an event.
fn cache() -> (
    Cache<ServiceAccount>,
    impl FnMut(&watcher::Event<ServiceAccount>),
) {
    let (cache, mut writer) = Cache::<ServiceAccount>::encoded();
    (cache, move |e: &watcher::Event<ServiceAccount>| {
        writer.apply_watcher_event(e);
    })
}

fn sa(rv: &str, label: &str) -> ServiceAccount {
    serde_json::from_value(json!({
        "metadata": {"name": "client", "namespace": "ns", "resourceVersion": rv, "labels": {"v": label}}
    }))
    .unwrap()
}

#[test]
fn trimming_keeps_every_annotation_but_kubectls_copy() {
    let mut account: ServiceAccount = serde_json::from_value(json!({"metadata": {
        "name": "client", "namespace": "ns",
        "annotations": {LAST_APPLIED: "{\"kind\":\"ServiceAccount\"}", "team": "a"},
        "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
    }}))
    .unwrap();
    trim(&mut account);
    assert_eq!(
        serde_json::to_value(&account.metadata).unwrap(),
        json!({"name": "client", "namespace": "ns", "annotations": {"team": "a"}})
    );
}

#[test]
fn a_write_wins_until_the_watch_catches_up() {
    let (cache, mut feed) = cache();
    feed(&watcher::Event::Apply(sa("5", "old")));
    cache.wrote(sa("7", "mine"));
    let label = |c: &Cache<ServiceAccount>| {
        c.get("ns", "client")
            .and_then(|s| s.metadata.labels.clone())
            .map(|l| l["v"].clone())
    };
    assert_eq!(label(&cache).as_deref(), Some("mine"));
    // An older event arrives late: still ours.
    let late = watcher::Event::Apply(sa("6", "older"));
    feed(&late);
    cache.observe(&late);
    assert_eq!(label(&cache).as_deref(), Some("mine"));
    // The watch delivers our write (or anything newer): the store is the truth again.
    let ours = watcher::Event::Apply(sa("7", "mine"));
    feed(&ours);
    cache.observe(&ours);
    let newer = watcher::Event::Apply(sa("9", "theirs"));
    feed(&newer);
    cache.observe(&newer);
    assert_eq!(label(&cache).as_deref(), Some("theirs"));
}

#[test]
fn a_write_recorded_after_the_watch_delivered_newer_changes_does_not_hide_them() {
    let (cache, mut feed) = cache();
    // The watch delivers the write (7) and a change made right after it (8) before the
    // write's response is recorded.
    for event in [
        watcher::Event::Apply(sa("7", "mine")),
        watcher::Event::Apply(sa("8", "theirs")),
    ] {
        feed(&event);
        cache.observe(&event);
    }
    cache.wrote(sa("7", "mine"));
    let label = cache
        .get("ns", "client")
        .and_then(|s| s.metadata.labels.clone())
        .map(|l| l["v"].clone());
    assert_eq!(label.as_deref(), Some("theirs"));
}

#[test]
fn an_inference_service_no_access_controls_is_cached_without_its_spec() {
    let isvc = |owners: serde_json::Value| -> InferenceService {
        serde_json::from_value(json!({
            "metadata": {"name": "m", "namespace": "ns", "ownerReferences": owners,
                "managedFields": [{"manager": "kserve"}]},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}}}},
            "status": {"url": "http://m.ns.example.com", "components": {"predictor": {}},
                "conditions": [{"type": "IngressReady", "status": "True"},
                    {"type": "Ready", "status": "True"}]},
        }))
        .unwrap()
    };
    let mut theirs = isvc(json!([]));
    Cached::trim(&mut theirs);
    let mut ours = isvc(json!([{"apiVersion": "inference-access.io/v1alpha1",
        "kind": "InferenceAccess", "name": "a", "uid": "u", "controller": true}]));
    Cached::trim(&mut ours);
    for trimmed in [&theirs, &ours] {
        let status = trimmed.status.as_ref().unwrap();
        assert_eq!(status.url.as_deref(), Some("http://m.ns.example.com"));
        let kept: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(kept, ["Ready"], "only the condition a reconcile reads");
        assert!(status.rest.is_empty() && trimmed.metadata.managed_fields.is_none());
    }
    assert!(theirs.spec.is_null());
    assert_eq!(
        ours.spec["predictor"]["model"]["modelFormat"]["name"],
        "sklearn"
    );
}

#[test]
fn a_delete_is_seen_at_once_and_a_recreation_after() {
    let (cache, mut feed) = cache();
    feed(&watcher::Event::Apply(sa("5", "old")));
    cache.removed(&sa("5", "old"));
    assert!(cache.get("ns", "client").is_none());
    let gone = watcher::Event::Delete(sa("5", "old"));
    feed(&gone);
    cache.observe(&gone);
    assert!(cache.get("ns", "client").is_none());
    let again = watcher::Event::Apply(sa("8", "new"));
    feed(&again);
    cache.observe(&again);
    assert!(cache.get("ns", "client").is_some());
}

#[test]
fn a_relist_replaces_the_objects_when_complete_and_keeps_writes_it_did_not_include() {
    let (cache, mut feed) = cache();
    feed(&watcher::Event::Apply(sa("5", "old")));
    cache.wrote(sa("9", "mine"));
    feed(&watcher::Event::Init);
    feed(&watcher::Event::InitApply(sa("8", "listed")));
    // Until the list is complete, the objects before it are read.
    let label = |c: &Cache<ServiceAccount>| {
        c.objects()
            .entries()
            .iter()
            .filter_map(encoded::Entry::decode::<ServiceAccount>)
            .map(|s| s.metadata.labels.unwrap_or_default()["v"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(label(&cache), ["old"]);
    feed(&watcher::Event::InitDone);
    cache.observe(&watcher::Event::InitDone);
    assert_eq!(label(&cache), ["listed"]);
    // The list was older than the write: the write still wins.
    let got = cache.get("ns", "client").unwrap();
    assert_eq!(got.metadata.labels.as_ref().unwrap()["v"], "mine");
    // A relist that includes it: the store is the truth.
    feed(&watcher::Event::Init);
    feed(&watcher::Event::InitApply(sa("10", "relisted")));
    feed(&watcher::Event::InitDone);
    cache.observe(&watcher::Event::InitDone);
    let got = cache.get("ns", "client").unwrap();
    assert_eq!(got.metadata.labels.as_ref().unwrap()["v"], "relisted");
    // An empty relist: gone.
    feed(&watcher::Event::Init);
    feed(&watcher::Event::InitDone);
    cache.observe(&watcher::Event::InitDone);
    assert!(cache.get("ns", "client").is_none());
}

#[test]
fn an_encoded_object_reads_back_as_it_was_cached() {
    let (cache, mut writer) = Cache::<InferenceService>::encoded();
    let isvc: InferenceService = serde_json::from_value(json!({
        "metadata": {"name": "m", "namespace": "ns", "resourceVersion": "3",
            "labels": {"a": "b"}, "ownerReferences": [{"apiVersion": "v1", "kind": "X",
            "name": "x", "uid": "u", "controller": true}]},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}}}},
        "status": {"url": "http://m.ns.example.com", "conditions": [{"type": "Ready", "status": "True"}]},
    }))
    .unwrap();
    writer.apply_watcher_event(&watcher::Event::Apply(isvc.clone()));
    let got = cache.get("ns", "m").unwrap();
    assert_eq!(
        serde_json::to_value(&*got).unwrap(),
        serde_json::to_value(&isvc).unwrap()
    );
    assert!(cache.get("ns", "other").is_none() && cache.get("other", "m").is_none());
}

#[test]
fn objects_packed_against_each_dictionary_read_back_and_fuller_ones_pack_smaller() {
    let (cache, mut writer) = Cache::<InferenceService>::encoded();
    // KServe fills the status in steps: first the URLs, then the Ready condition.
    let isvc = |i: usize, stage: usize| -> InferenceService {
        let status = match stage {
            0 => None,
            1 => Some(
                json!({"url": format!("http://m-{i}.ns.example.com"), "observedGeneration": 1,
                "address": {"url": format!("http://m-{i}-predictor.ns.svc.cluster.local")}}),
            ),
            _ => Some(
                json!({"url": format!("http://m-{i}.ns.example.com"), "observedGeneration": 1,
                "address": {"url": format!("http://m-{i}-predictor.ns.svc.cluster.local")},
                "conditions": [{"type": "PredictorReady", "status": "True",
                    "lastTransitionTime": "2026-12-01T10:00:00Z"}, {"type": "Ready",
                    "status": "True", "lastTransitionTime": "2026-12-01T10:00:00Z"}]}),
            ),
        };
        serde_json::from_value(json!({
            "metadata": {"name": format!("m-{i}"), "namespace": "ns", "resourceVersion": format!("{}", 10 + i),
                "uid": format!("4b3c0e1f-0000-4000-8000-{i:012}"),
                "labels": {"app.kubernetes.io/managed-by": "inference-access", "inference-access.io/access": format!("a-{i}")}},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"},
                "protocolVersion": "v2", "runtime": "kserve-sklearnserver",
                "storageUri": "gs://kfserving-examples/models/sklearn/1.0/model"}}},
            "status": status,
        }))
        .unwrap()
    };
    let objects: Vec<InferenceService> = (0..9).map(|i| isvc(i, i / 3)).collect();
    let size = |stage: usize| serde_json::to_vec(&objects[stage * 3]).unwrap().len();
    // The URLs make an object a quarter fuller, the Ready condition less than that but more
    // than an eighth, as an access's first and second status do: the Ready ones must be packed
    // against a Ready one.
    let (fresh, routed, ready) = (size(0), size(1), size(2));
    assert!(routed * 4 >= fresh * 5, "{fresh} → {routed}");
    assert!(
        ready * 8 > routed * 9 && ready * 4 < routed * 5,
        "{routed} → {ready}"
    );
    for object in &objects {
        writer.apply_watcher_event(&watcher::Event::Apply(object.clone()));
    }
    for object in &objects {
        let name = object.metadata.name.as_deref().unwrap();
        assert_eq!(
            serde_json::to_value(&*cache.get("ns", name).unwrap()).unwrap(),
            serde_json::to_value(object).unwrap(),
            "{name}"
        );
    }
    let packed = cache.objects().get("ns", "m-8").unwrap().packed_len();
    let json = size(2);
    // 53 bytes of 681; 108 when packed against the routed one.
    assert!(packed * 10 < json, "{packed} bytes packed of {json}");
}

#[test]
fn a_relist_yields_only_what_it_changed_and_the_first_list_nothing() {
    let account = |name: &str, rv: &str| -> ServiceAccount {
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}),
        )
        .unwrap()
    };
    let (_cache, mut writer) = Cache::<ServiceAccount>::encoded();
    let mut list = |objects: &[ServiceAccount]| -> Vec<String> {
        writer.apply_watcher_event(&watcher::Event::Init);
        for object in objects {
            writer.apply_watcher_event(&watcher::Event::InitApply(object.clone()));
        }
        let mut changed: Vec<String> = writer
            .apply_watcher_event(&watcher::Event::InitDone)
            .iter()
            .filter_map(encoded::Entry::decode::<ServiceAccount>)
            .map(|sa| {
                format!(
                    "{}@{}",
                    sa.metadata.name.unwrap(),
                    sa.metadata.resource_version.unwrap()
                )
            })
            .collect();
        changed.sort();
        changed
    };
    assert!(
        list(&[
            account("same", "1"),
            account("edited", "2"),
            account("gone", "3")
        ])
        .is_empty()
    );
    assert_eq!(
        list(&[
            account("same", "1"),
            account("edited", "5"),
            account("new", "6")
        ]),
        ["edited@5", "gone@3", "new@6"]
    );
    assert!(
        list(&[
            account("same", "1"),
            account("edited", "5"),
            account("new", "6")
        ])
        .is_empty()
    );
}
