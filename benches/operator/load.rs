//! What the benchmark sends: accesses in a burst (and when each turned Ready), the bare client's
//! seven requests per access, and the sample's manual path with the real kubectl.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use inference_access::api::{InferenceAccess, InferenceService};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::world::{AUDIENCE, Result};

/// Accesses are spread over this many namespaces, as in a Kubeflow with several profiles.
const NAMESPACES: usize = 10;
/// Accesses being created at once by the benchmark (the user's side).
const CREATE_CONCURRENCY: usize = 32;

pub fn namespace_of(prefix: &str, i: usize) -> String {
    format!("{prefix}-{}", i % NAMESPACES)
}

pub fn namespaces(prefix: &str, count: usize) -> Vec<String> {
    (0..count.min(NAMESPACES))
        .map(|i| namespace_of(prefix, i))
        .collect()
}

/// An access that templates its own InferenceService, with verification off (no gateway in the
/// benchmark) unless `spec` says otherwise.
pub fn access(namespace: &str, i: usize, extra: &Value) -> Result<InferenceAccess> {
    let mut value = json!({
        "apiVersion": "inference-access.io/v1alpha1",
        "kind": "InferenceAccess",
        "metadata": {"name": format!("a-{i}"), "namespace": namespace},
        "spec": {
            "inferenceService": {"name": format!("m-{i}"), "template": {"spec": model_spec()}},
            "verification": {"enabled": false},
        }
    });
    merge(&mut value["spec"], extra);
    Ok(serde_json::from_value(value)?)
}

/// The access that templates InferenceService `model` (`m-7` for `a-7`), as [`access`] names them.
pub fn access_of_model(model: &str) -> String {
    model.replacen("m-", "a-", 1)
}

fn model_spec() -> Value {
    json!({"predictor": {"model": {
        "modelFormat": {"name": "sklearn"},
        "storageUri": "gs://kfserving-examples/models/sklearn/1.0/model",
    }}})
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (k, v) in from {
                merge(into.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (_, Value::Null) => {}
        (into, from) => *into = from.clone(),
    }
}

fn is_ready(access: &InferenceAccess) -> bool {
    access
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// When each access was first seen Ready, from a watch of every access.
pub struct ReadyWatch {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    count: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadyWatch {
    pub async fn start(client: &Client) -> Result<Self> {
        let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let (count_tx, count) = watch::channel(0);
        let (live_tx, mut live) = watch::channel(false);
        let stream = watcher::watcher(
            Api::<InferenceAccess>::all(client.clone()),
            watcher::Config::default(),
        );
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    let access = match event {
                        Ok(watcher::Event::Apply(a) | watcher::Event::InitApply(a)) => a,
                        Ok(watcher::Event::InitDone) => {
                            live_tx.send_replace(true);
                            continue;
                        }
                        _ => continue,
                    };
                    if !is_ready(&access) {
                        continue;
                    }
                    let key = format!(
                        "{}/{}",
                        access.meta().namespace.as_deref().unwrap_or_default(),
                        access.meta().name.as_deref().unwrap_or_default()
                    );
                    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                    if let std::collections::hash_map::Entry::Vacant(entry) = seen.entry(key) {
                        entry.insert(Instant::now());
                        count_tx.send_replace(seen.len());
                    }
                }
            })
        };
        live.wait_for(|l| *l).await?;
        Ok(Self { seen, count, task })
    }

    /// Waits until `n` accesses were Ready. Not a time limit: it gives up only when none
    /// turned Ready for five minutes (a lost trigger, not a slow run), naming the count.
    pub async fn wait_for(&mut self, n: usize) -> Result<()> {
        loop {
            let before = *self.count.borrow();
            if before >= n {
                return Ok(());
            }
            let progress = self.count.wait_for(|c| *c > before);
            match tokio::time::timeout(Duration::from_secs(300), progress).await {
                Ok(changed) => {
                    changed?;
                }
                Err(_) => {
                    return Err(format!("stalled: {before} of {n} accesses Ready").into());
                }
            }
        }
    }

    pub fn ready_at(&self) -> HashMap<String, Instant> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for ReadyWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// When an access's create was sent, and when the API server's answer came back.
#[derive(Clone, Copy)]
pub struct Created {
    pub sent: Instant,
    pub answered: Instant,
}

/// Creates `count` accesses (CREATE_CONCURRENCY at a time); when each create was sent and
/// answered.
pub async fn create_accesses(
    client: &Client,
    prefix: &str,
    range: std::ops::Range<usize>,
    extra: &Value,
) -> Result<HashMap<String, Created>> {
    let sent = futures::stream::iter(range)
        .map(|i| async move {
            let (ns, _, created) = create_access(client, prefix, i, extra).await?;
            Result::<(String, Created)>::Ok((format!("{ns}/a-{i}"), created))
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(sent)
}

/// Creates access `i` of `prefix`: its namespace, the access as created, and when the create
/// was sent and answered.
async fn create_access(
    client: &Client,
    prefix: &str,
    i: usize,
    extra: &Value,
) -> Result<(String, InferenceAccess, Created)> {
    let ns = namespace_of(prefix, i);
    let object = access(&ns, i, extra)?;
    let sent = Instant::now();
    let created = Api::<InferenceAccess>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &object)
        .await?;
    let answered = Instant::now();
    Ok((ns, created, Created { sent, answered }))
}

/// What it takes without an operator: the seven requests one access needs, sent by a client
/// that knows what to send (no reads, no watches), `concurrency` accesses at a time; and the
/// user's create of the access itself, as in the operator's run.
pub async fn bare_client(
    client: &Client,
    prefix: &str,
    count: usize,
    concurrency: usize,
) -> Result<Duration> {
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| bare_access(client.clone(), prefix, i))
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed())
}

/// The bare client in the shape of the operator's burst: the accesses are created as
/// `create_accesses` creates them, and `concurrency` workers send each one's seven requests as
/// soon as its create has returned, in that order. The time until the last is done, and
/// create→done of each, sorted: a floor under the operator's create→Ready, which also waits for
/// KServe's URL.
pub async fn bare_burst(
    client: &Client,
    prefix: &str,
    count: usize,
    concurrency: usize,
) -> Result<(Duration, Vec<Duration>)> {
    let started = Instant::now();
    let (created, queue) = futures::channel::mpsc::unbounded();
    // The queue ends when this block has sent every create and dropped `created`.
    let create = async move {
        futures::stream::iter(0..count)
            .map(|i| {
                let created = created.clone();
                async move {
                    let (ns, access, at) = create_access(client, prefix, i, &Value::Null).await?;
                    created
                        .unbounded_send((ns, i, access.meta().uid.clone(), at.sent))
                        .map_err(|_| "the bare client's workers stopped")?;
                    Result::<()>::Ok(())
                }
            })
            .buffer_unordered(CREATE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
    };
    let work = queue
        .map(
            |(ns, i, uid, at): (String, usize, Option<String>, Instant)| async move {
                bare_requests(client.clone(), ns, i, uid).await?;
                Result::<Duration>::Ok(at.elapsed())
            },
        )
        .buffer_unordered(concurrency)
        .try_collect::<Vec<Duration>>();
    let (_, mut latencies) = futures::try_join!(create, work)?;
    latencies.sort();
    Ok((started.elapsed(), latencies))
}

async fn bare_access(client: Client, prefix: &str, i: usize) -> Result<()> {
    let (ns, access, _) = create_access(&client, prefix, i, &Value::Null).await?;
    bare_requests(client, ns, i, access.meta().uid.clone()).await
}

/// The seven requests of access `a-{i}` in `ns`, whose uid is `uid`.
async fn bare_requests(client: Client, ns: String, i: usize, uid: Option<String>) -> Result<()> {
    let apply = PatchParams::apply("bare-client").force();
    let name = format!("a-{i}");
    let model = format!("m-{i}");
    let secret_name = format!("{name}-credential");
    let accesses = Api::<InferenceAccess>::namespaced(client.clone(), &ns);
    let owner = json!([{
        "apiVersion": "inference-access.io/v1alpha1", "kind": "InferenceAccess", "name": name,
        "uid": uid, "controller": true, "blockOwnerDeletion": true,
    }]);
    let labels = json!({"app.kubernetes.io/managed-by": "bare-client", "bench/access": name});
    // 1. the InferenceService
    let isvc = json!({
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": model, "namespace": ns, "labels": labels, "ownerReferences": owner},
        "spec": model_spec(),
    });
    Api::<InferenceService>::namespaced(client.clone(), &ns)
        .patch(&model, &apply, &Patch::Apply(&isvc))
        .await?;
    // 2. the ServiceAccount
    let sa = json!({
        "apiVersion": "v1", "kind": "ServiceAccount", "automountServiceAccountToken": false,
        "metadata": {"name": name, "namespace": ns, "labels": labels, "ownerReferences": owner},
    });
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
    sas.patch(&name, &apply, &Patch::Apply(&sa)).await?;
    // 3. the Secret, empty, to bind the token to
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": secret_name, "namespace": ns, "labels": labels, "ownerReferences": owner},
    }))?;
    let secret = secrets.create(&PostParams::default(), &secret).await?;
    // 4. the TokenRequest bound to it
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![AUDIENCE.to_owned()],
            expiration_seconds: Some(3600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
                name: Some(secret_name.clone()),
                uid: secret.meta().uid.clone(),
            }),
        },
        ..Default::default()
    };
    let token = sas
        .create_subresource::<TokenRequest, TokenRequest>(
            "token",
            &name,
            &PostParams::default(),
            &request,
        )
        .await?
        .status
        .map(|s| s.token)
        .unwrap_or_default();
    // 5. the credential into the Secret
    let url = format!("http://{model}.{ns}.example.com");
    let gateway = "http://istio-ingressgateway.istio-system.svc.cluster.local";
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let data = json!({"data": {
        "token": b64(&token), "authorization": b64(&format!("Bearer {token}")),
        "url": b64(&url), "host": b64(&format!("{model}.{ns}.example.com")),
        "predict-url": b64(&format!("{gateway}/v1/models/{model}:predict")),
        "infer-url": b64(&format!("{gateway}/v2/models/{model}/infer")),
        "gateway-url": b64(gateway), "expires-at": b64("2030-01-01T00:00:00Z"),
    }});
    secrets
        .patch(&secret_name, &PatchParams::default(), &Patch::Merge(&data))
        .await?;
    // 6. the AuthorizationPolicy
    let policy_resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("security.istio.io", "v1", "AuthorizationPolicy"),
        "authorizationpolicies",
    );
    let policy = json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "ownerReferences": owner},
        "spec": {
            "selector": {"matchLabels": {"serving.kserve.io/inferenceservice": model}},
            "action": "ALLOW",
            "rules": [{
                "from": [{"source": {"principals": ["cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"]}}],
                "when": [{"key": "request.headers[kubeflow-userid]", "values": [format!("system:serviceaccount:{ns}:{name}")]}],
            }],
        },
    });
    Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &policy_resource)
        .patch(&name, &apply, &Patch::Apply(&policy))
        .await?;
    // 7. the status
    let status = json!({"status": {
        "observedGeneration": 1, "url": url, "secretName": secret_name, "serviceAccountName": name,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "bare client",
            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}],
    }});
    accesses
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

/// The sample's manual path, per credential: `kubectl create token` for the access's
/// ServiceAccount, then `kubectl apply` of a Secret holding it. The time per credential.
pub fn kubectl_path(
    kubectl: &std::path::Path,
    kubeconfig: &std::path::Path,
    prefix: &str,
    sample: usize,
) -> Result<Duration> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let started = Instant::now();
    for i in 0..sample {
        let ns = namespace_of(prefix, i);
        let sa = format!("a-{i}");
        let out = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["create", "token", &sa, "-n", &ns, "--audience", AUDIENCE])
            .args(["--duration", "1h"])
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "kubectl create token: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let token = String::from_utf8(out.stdout)?.trim().to_owned();
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("kubectl-{i}"), "namespace": ns},
            "stringData": {"token": token},
        });
        let mut child = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(secret.to_string().as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(format!("kubectl apply: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
    }
    Ok(started.elapsed() / sample.max(1) as u32)
}

/// Percentile (0..=100) of sorted durations, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
