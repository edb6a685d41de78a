//! `render`: offline, the objects the operator would create for an InferenceAccess, from the
//! same pure builders the reconciler uses (src/reconcile/build.rs). Nothing is sent anywhere.

use std::path::PathBuf;

use jiff::{SignedDuration, Timestamp};
use kube::Resource as _;
use serde_json::{Value, json};

use super::Output;
use crate::api::keys;
use crate::api::keys::KEY_COOKIE;
use crate::api::{InferenceAccess, MeshMode};
use crate::core::credential::{Inputs, IssuedCredential, TokenRequestInputs};
use crate::core::endpoint::Endpoint;
use crate::gateway::probe::Credential;
use crate::reconcile::build;

/// Stands in for the uid the API server assigns, so owner references can be shown.
const EXAMPLE_UID: &str = "00000000-0000-0000-0000-000000000000";
const REDACTED: &str = "<redacted>";
/// KServe's default domain: the URL the InferenceService will publish is not known offline.
const EXAMPLE_DOMAIN: &str = "example.com";

#[derive(clap::Args)]
pub struct Args {
    /// A YAML or JSON file with one or more InferenceAccess documents.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// Namespace for documents that name none.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Output format; the default (human) is multi-document YAML, as `kubectl apply -f` takes.
    #[arg(short, long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
}

pub fn run(args: &Args) -> Result<(), String> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    let accesses =
        parse(&text, &args.namespace).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let now = Timestamp::now();
    let mut objects = Vec::new();
    for access in &accesses {
        objects.extend(render(access, now)?);
    }
    print!("{}", format_objects(&objects, args.output)?);
    Ok(())
}

/// The InferenceAccess documents of a file, checked as the API server would (schema defaults,
/// CEL rules) and as the reconciler does.
pub fn parse(text: &str, namespace: &str) -> Result<Vec<InferenceAccess>, String> {
    let mut accesses = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value: Value =
            serde::Deserialize::deserialize(document).map_err(|e| format!("not YAML: {e}"))?;
        if value.is_null() || value["kind"] != "InferenceAccess" {
            continue;
        }
        let name = value["metadata"]["name"]
            .as_str()
            .unwrap_or("<unnamed>")
            .to_owned();
        let mut access: InferenceAccess =
            serde_json::from_value(value).map_err(|e| format!("InferenceAccess {name}: {e}"))?;
        if access.metadata.namespace.is_none() {
            access.metadata.namespace = Some(namespace.to_owned());
        }
        access.metadata.uid = Some(EXAMPLE_UID.to_owned());
        access
            .validate_cel()
            .map_err(|e| format!("InferenceAccess {name} is invalid: {e:?}"))?;
        crate::reconcile::validate(&access)
            .map_err(|e| format!("InferenceAccess {name} is invalid: {e}"))?;
        accesses.push(access);
    }
    if accesses.is_empty() {
        return Err("no InferenceAccess document found (kind: InferenceAccess)".into());
    }
    Ok(accesses)
}

/// The objects, in the order the operator applies them.
pub fn render(access: &InferenceAccess, now: Timestamp) -> Result<Vec<Value>, String> {
    let mut objects: Vec<Value> = Vec::new();
    let namespace = access.meta().namespace.clone().unwrap_or_default();
    let isvc = &access.spec.inference_service.name;
    if let Some(templated) = build::templated_inference_service(access) {
        objects.push(to_value(&templated)?);
    } else if access.spec.mesh.mode == MeshMode::DisableSidecarInjection {
        let mut patch = build::sidecar_annotation_patch(isvc);
        patch["metadata"]["namespace"] = json!(namespace);
        objects.push(patch);
    }
    let (service_account, dedicated) = access.service_account();
    if dedicated {
        objects.push(to_value(&build::service_account(access, &service_account))?);
    }
    let endpoint = Endpoint::resolve(
        &format!("http://{isvc}.{namespace}.{EXAMPLE_DOMAIN}"),
        &access.spec.gateway.url,
        isvc,
    )
    .map_err(|e| e.to_string())?;
    let seconds = std::time::Duration::from(access.spec.token.duration).as_secs();
    let lifetime = SignedDuration::from_secs(i64::try_from(seconds).unwrap_or(i64::MAX));
    let token = IssuedCredential {
        value: Credential::Bearer(REDACTED.to_owned()),
        issued_at: now,
        expires_at: now.checked_add(lifetime).map_err(|e| e.to_string())?,
        inputs: Inputs::ServiceAccountToken(TokenRequestInputs {
            service_account: service_account.clone(),
            audiences: access.spec.token.audiences.clone(),
            expiration_seconds: lifetime.as_secs(),
        }),
    };
    let secret = build::credential_secret(access, &endpoint, &token);
    objects.push(redact(to_value(&secret)?));
    if access.spec.mesh.mode == MeshMode::AuthorizationPolicy {
        objects.push(to_value(&build::authorization_policy(
            access,
            &build::service_account_user(&namespace, &service_account),
        ))?);
    }
    Ok(objects)
}

/// Secret data as readable `stringData`, credential values replaced.
fn redact(mut secret: Value) -> Value {
    let Some(data) = secret.as_object_mut().and_then(|s| s.remove("data")) else {
        return secret;
    };
    let mut string_data = serde_json::Map::new();
    for (key, value) in data.as_object().into_iter().flatten() {
        let shown =
            if [keys::KEY_TOKEN, keys::KEY_AUTHORIZATION, KEY_COOKIE].contains(&key.as_str()) {
                REDACTED.to_owned()
            } else {
                decode(value.as_str().unwrap_or_default())
            };
        string_data.insert(key.clone(), json!(shown));
    }
    secret["stringData"] = Value::Object(string_data);
    secret
}

/// Secret data as k8s-openapi serializes it (base64), back to text.
fn decode(base64: &str) -> String {
    let bytes: Result<k8s_openapi::ByteString, _> = serde_json::from_value(json!(base64));
    bytes
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

pub fn format_objects(objects: &[Value], output: Output) -> Result<String, String> {
    match output {
        Output::Human => {
            let mut text = String::new();
            for object in objects {
                text.push_str("---\n");
                text.push_str(
                    &serde_yaml::to_string(object)
                        .map_err(|e| format!("cannot format YAML: {e}"))?,
                );
            }
            Ok(text)
        }
        Output::Json | Output::Yaml => {
            let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
            Ok(output.render(&list)?.unwrap_or_default())
        }
    }
}

fn to_value<T: serde::Serialize>(object: &T) -> Result<Value, String> {
    serde_json::to_value(object).map_err(|e| format!("cannot serialize an object: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "
apiVersion: inference-access.io/v1alpha1
kind: InferenceAccess
metadata:
  name: sklearn-iris-client
  namespace: kubeflow-user-example-com
spec:
  inferenceService:
    name: sklearn-iris
";

    fn kinds(objects: &[Value]) -> Vec<String> {
        objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    }

    #[test]
    fn renders_what_the_operator_creates_with_values_redacted() {
        let now: Timestamp = "2026-11-27T20:00:00Z".parse().unwrap();
        let access = parse(SAMPLE, "default").unwrap().remove(0);
        let objects = render(&access, now).unwrap();
        assert_eq!(
            kinds(&objects),
            [
                "ServiceAccount/sklearn-iris-client",
                "Secret/sklearn-iris-client-credential",
                "AuthorizationPolicy/sklearn-iris-client"
            ]
        );
        assert_eq!(
            objects[1]["stringData"],
            json!({
                "token": "<redacted>",
                "authorization": "<redacted>",
                "url": "http://sklearn-iris.kubeflow-user-example-com.example.com",
                "host": "sklearn-iris.kubeflow-user-example-com.example.com",
                "predict-url": "http://istio-ingressgateway.istio-system.svc.cluster.local/v1/models/sklearn-iris:predict",
                "infer-url": "http://istio-ingressgateway.istio-system.svc.cluster.local/v2/models/sklearn-iris/infer",
                "gateway-url": "http://istio-ingressgateway.istio-system.svc.cluster.local",
                "expires-at": "2026-11-27T21:00:00Z"
            })
        );
        assert!(objects[1].get("data").is_none());
        assert_eq!(
            objects[0]["metadata"]["ownerReferences"][0]["uid"],
            EXAMPLE_UID
        );
    }

    #[test]
    fn templated_and_sidecar_modes() {
        let now: Timestamp = "2026-11-27T20:00:00Z".parse().unwrap();
        let text = format!(
            "{SAMPLE}    template:\n      spec: {{predictor: {{model: {{modelFormat: {{name: sklearn}}}}}}}}\n  serviceAccount:\n    name: default-editor\n  mesh:\n    mode: DisableSidecarInjection\n"
        );
        let access = parse(&text, "default").unwrap().remove(0);
        let objects = render(&access, now).unwrap();
        assert_eq!(
            kinds(&objects),
            [
                "InferenceService/sklearn-iris",
                "Secret/sklearn-iris-client-credential"
            ]
        );
        assert_eq!(
            objects[0]["metadata"]["annotations"]["sidecar.istio.io/inject"],
            "false"
        );

        let referenced = parse(
            &format!("{SAMPLE}  mesh:\n    mode: DisableSidecarInjection\n"),
            "default",
        )
        .unwrap()
        .remove(0);
        let objects = render(&referenced, now).unwrap();
        assert_eq!(
            objects[0]["metadata"],
            json!({"name": "sklearn-iris", "namespace": "kubeflow-user-example-com", "annotations": {"sidecar.istio.io/inject": "false"}})
        );
    }

    #[test]
    fn refuses_invalid_or_empty_input() {
        let err = parse(&format!("{SAMPLE}  token:\n    duration: 5m\n"), "default").unwrap_err();
        assert!(err.contains("at least 10m"), "{err}");
        let err = parse("kind: ConfigMap\n", "default").unwrap_err();
        assert!(err.contains("no InferenceAccess"), "{err}");
        let no_ns = SAMPLE.replace("  namespace: kubeflow-user-example-com\n", "");
        assert_eq!(
            parse(&no_ns, "team-a").unwrap()[0]
                .metadata
                .namespace
                .as_deref(),
            Some("team-a")
        );
    }

    #[test]
    fn formats() {
        let objects = vec![json!({"kind": "A"}), json!({"kind": "B"})];
        assert_eq!(
            format_objects(&objects, Output::Human).unwrap(),
            "---\nkind: A\n---\nkind: B\n"
        );
        let list: Value =
            serde_json::from_str(&format_objects(&objects, Output::Json).unwrap()).unwrap();
        assert_eq!(list["kind"], "List");
        assert_eq!(list["items"].as_array().unwrap().len(), 2);
    }
}
