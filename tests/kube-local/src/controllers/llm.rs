//! The LLMInferenceService stand-in: publishes what KServe's llmisvc controller reports once the
//! model's route is programmed (`status.url`, `status.addresses`, `Ready`), with the URL in the
//! InferenceService stand-in's style (`KserveSettings::url`). Only what the operator reads: it
//! makes no workload, HTTPRoute or InferencePool (tests play those). Active when the
//! LLMInferenceService CRD is loaded (`Builder::load_crds`).

use serde_json::{Value, json};
use tokio::sync::watch;

use super::{Change, KserveSettings, Watching, write_status};
use crate::store::{EventType, Store};
use crate::util;

const LLM_KEY: &str = "llminferenceservices.serving.kserve.io";
const MANAGER: &str = "llmisvc-controller";

fn meta<'a>(o: &'a Value, k: &str) -> &'a str {
    o["metadata"][k].as_str().unwrap_or_default()
}

fn desired_status(settings: &KserveSettings, llm: &Value) -> Value {
    let url = settings.url(meta(llm, "namespace"), meta(llm, "name"));
    let since = llm["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")
        .and_then(|c| c["lastTransitionTime"].as_str())
        .map_or_else(util::now_rfc3339, str::to_string);
    json!({
        "url": url,
        "addresses": [{"name": "gateway-external", "url": url}],
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": since}],
        "observedGeneration": llm["metadata"]["generation"],
    })
}

fn publish(store: &Store, settings: &KserveSettings, llm: &Value) {
    if llm["metadata"]["deletionTimestamp"].is_string() {
        return;
    }
    let want = desired_status(settings, llm);
    if llm["status"] == want {
        return;
    }
    write_status(
        store,
        ("serving.kserve.io", "v1alpha2", "llminferenceservices"),
        meta(llm, "namespace"),
        meta(llm, "name"),
        want,
        MANAGER,
    );
}

/// Runs the LLMInferenceService stand-in until `shutdown` flips.
pub async fn run_llm(
    store: Store,
    mut settings_rx: watch::Receiver<KserveSettings>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut watching = Watching::start(&store, &[LLM_KEY]);
    let mut rescan = true;
    loop {
        let settings = settings_rx.borrow().clone();
        if rescan {
            rescan = false;
            let all = store.lock().objects_of(LLM_KEY);
            for llm in all {
                publish(&store, &settings, &llm.value());
            }
        }
        tokio::select! {
            _ = shutdown.changed() => break,
            changed = settings_rx.changed() => {
                if changed.is_err() { break; }
                rescan = true;
            }
            change = watching.next() => match change {
                Change::Events(_, events) => {
                    for ev in events.iter().filter(|e| e.kind != EventType::Deleted) {
                        publish(&store, &settings, &ev.object.value());
                    }
                }
                Change::Resync => rescan = true,
            },
        }
    }
}
