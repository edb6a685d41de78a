//! `render`: offline, the objects the operator would create for an InferenceAccess: its
//! [`Plan`] and the same pure builders the reconciler applies (src/reconcile/build.rs). Nothing
//! is sent anywhere.

use std::path::PathBuf;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};

use super::Output;
use super::limits::LimitsArgs;
use crate::api::InferenceAccess;
use crate::core::credential::{Credential, DexSessionInputs, Inputs, IssuedCredential, Record};
use crate::core::endpoint::Endpoint;
use crate::core::secret_codec::{SecretFields, encode, is_credential_key};
use crate::gateway::dex::SESSION_COOKIES;
use crate::reconcile::build;
use crate::reconcile::limits::Limits;
use crate::reconcile::obtain::DEFAULT_SESSION_LIFETIME;
use crate::reconcile::plan::{self, IdentityPlan, MeshPlan, Plan};

/// Stands in for the uid the API server assigns, so owner references can be shown.
const EXAMPLE_UID: &str = "00000000-0000-0000-0000-000000000000";
const REDACTED: &str = "<redacted>";
/// KServe's default domain: the URL the InferenceService will publish is not known offline.
const EXAMPLE_DOMAIN: &str = "example.com";

#[derive(clap::Args)]
pub struct Args {
    /// A YAML or JSON file with one or more InferenceAccess documents (and, for DexSession, the
    /// credentials Secret, whose username the policy admits).
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// Namespace for documents that name none.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Output format; the default (human) is multi-document YAML, as `kubectl apply -f` takes.
    #[arg(short, long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    /// The limits the operator runs with (the same flags as `controller`).
    #[command(flatten)]
    pub limits: LimitsArgs,
}

pub fn run(args: &Args) -> Result<(), String> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    let limits = args.limits.limits()?;
    let file = parse(&text, &args.namespace, &limits)
        .map_err(|e| format!("{}: {e}", args.file.display()))?;
    let now = Timestamp::now();
    let mut objects = Vec::new();
    for access in &file.accesses {
        objects.extend(render(access, &file.secrets, &limits, now)?);
    }
    print!("{}", format_objects(&objects, args.output)?);
    Ok(())
}

/// What a file holds: the accesses, and the Secrets that may carry a Dex login.
pub struct File {
    pub accesses: Vec<InferenceAccess>,
    pub secrets: Vec<Secret>,
}

/// The documents of a file, accesses checked as the API server would (schema defaults, CEL
/// rules) and as the reconciler does (its plan).
pub fn parse(text: &str, namespace: &str, limits: &Limits) -> Result<File, String> {
    let mut file = File {
        accesses: Vec::new(),
        secrets: Vec::new(),
    };
    for document in serde_yaml::Deserializer::from_str(text) {
        let value: Value =
            serde::Deserialize::deserialize(document).map_err(|e| format!("not YAML: {e}"))?;
        let name = value["metadata"]["name"]
            .as_str()
            .unwrap_or("<unnamed>")
            .to_owned();
        match value["kind"].as_str() {
            Some("InferenceAccess") => {
                let mut access: InferenceAccess = serde_json::from_value(value)
                    .map_err(|e| format!("InferenceAccess {name}: {e}"))?;
                access
                    .metadata
                    .namespace
                    .get_or_insert_with(|| namespace.to_owned());
                access.metadata.uid = Some(EXAMPLE_UID.to_owned());
                access
                    .validate_cel()
                    .map_err(|e| format!("InferenceAccess {name} is invalid: {e:?}"))?;
                plan::validate(&access, limits).map_err(|e| {
                    format!("InferenceAccess {name} is refused ({}): {e}", e.reason)
                })?;
                file.accesses.push(access);
            }
            Some("Secret") => {
                let mut secret: Secret =
                    serde_json::from_value(value).map_err(|e| format!("Secret {name}: {e}"))?;
                secret
                    .metadata
                    .namespace
                    .get_or_insert_with(|| namespace.to_owned());
                // As the API server stores it: stringData folded into data.
                let strings = secret.string_data.take().unwrap_or_default();
                let data = secret.data.get_or_insert_with(Default::default);
                for (key, value) in strings {
                    data.insert(key, ByteString(value.into_bytes()));
                }
                file.secrets.push(secret);
            }
            _ => {}
        }
    }
    if file.accesses.is_empty() {
        return Err("no InferenceAccess document found (kind: InferenceAccess)".into());
    }
    Ok(file)
}

/// The objects, in the order the operator applies them. `secrets` may hold a DexSession's
/// credentials Secret: its username is what the policy admits (otherwise a placeholder says
/// where it will come from).
pub fn render(
    access: &InferenceAccess,
    secrets: &[Secret],
    limits: &Limits,
    now: Timestamp,
) -> Result<Vec<Value>, String> {
    let plan = plan::validate(access, limits).map_err(|e| e.to_string())?;
    let mut objects: Vec<Value> = Vec::new();
    if let Some(templated) = build::templated_inference_service(&plan) {
        objects.push(to_value(&templated)?);
    }
    if let IdentityPlan::ServiceAccount {
        name,
        dedicated: true,
        ..
    } = &plan.identity
    {
        objects.push(to_value(&build::service_account(&plan, name))?);
    }
    let namespace = &plan.access.namespace;
    let model = &plan.target.name;
    let endpoint = Endpoint::resolve(
        &format!("http://{model}.{namespace}.{EXAMPLE_DOMAIN}"),
        &plan.gateway_url,
        model,
    )
    .map_err(|e| e.to_string())?;
    let username = dex_username(&plan, secrets);
    let issued = example_credential(&plan, username.as_deref(), now)?;
    let secret = build::credential_secret(&plan, &encode(&issued, &endpoint));
    objects.push(redact(to_value(&secret)?));
    if let MeshPlan::AuthorizationPolicy(policy) = &plan.mesh {
        let user_id = match (&plan.identity, &username) {
            (IdentityPlan::DexUser { user_id, .. }, Some(username)) => {
                plan::dex_user_id(user_id.as_deref(), username)
            }
            (identity, _) => identity
                .user_id(namespace)
                .unwrap_or_else(|| format!("<the username in Secret {}>", dex_secret_name(&plan))),
        };
        let wanted = match &plan.target.other_namespace {
            Some(model_ns) => build::consumer_policy(&plan, policy, &user_id, model_ns),
            None => build::authorization_policy(&plan, policy, &user_id),
        };
        objects.push(to_value(&wanted)?);
    }
    Ok(objects)
}

fn dex_secret_name(plan: &Plan) -> String {
    match &plan.identity {
        IdentityPlan::DexUser { credentials, .. } => credentials.name.clone(),
        IdentityPlan::ServiceAccount { .. } => String::new(),
    }
}

/// The Dex username from the credentials Secret, when the file carries it.
fn dex_username(plan: &Plan, secrets: &[Secret]) -> Option<String> {
    let IdentityPlan::DexUser { credentials, .. } = &plan.identity else {
        return None;
    };
    secrets
        .iter()
        .find(|s| {
            s.metadata.name.as_deref() == Some(credentials.name.as_str())
                && s.metadata.namespace.as_deref() == Some(plan.access.namespace.as_str())
        })
        .and_then(|s| s.text(&credentials.username_key))
        .map(str::to_owned)
}

/// A stand-in credential of the plan's kind, redacted, with the lifetime the operator would ask
/// for (the server's answer decides the real one).
fn example_credential(
    plan: &Plan,
    username: Option<&str>,
    now: Timestamp,
) -> Result<IssuedCredential, String> {
    let (value, inputs, lifetime) = match &plan.identity {
        IdentityPlan::ServiceAccount { request, .. } => (
            Credential::Bearer(REDACTED.to_owned()),
            Inputs::ServiceAccountToken(request.clone()),
            SignedDuration::from_secs(request.expiration_seconds),
        ),
        IdentityPlan::DexUser {
            connector,
            login_url,
            ..
        } => (
            Credential::Cookie {
                name: SESSION_COOKIES[0].to_owned(),
                value: REDACTED.to_owned(),
            },
            Inputs::DexSession(DexSessionInputs {
                username: username.unwrap_or(REDACTED).to_owned(),
                connector: connector.id().to_owned(),
                login_url: login_url.clone(),
            }),
            DEFAULT_SESSION_LIFETIME,
        ),
    };
    Ok(IssuedCredential {
        value,
        record: Record {
            issued_at: now,
            expires_at: now.checked_add(lifetime).map_err(|e| e.to_string())?,
            inputs,
            renew_request: None,
        },
    })
}

/// Secret data as readable `stringData`, credential values replaced.
fn redact(mut secret: Value) -> Value {
    let Some(data) = secret.as_object_mut().and_then(|s| s.remove("data")) else {
        return secret;
    };
    let mut string_data = serde_json::Map::new();
    for (key, value) in data.as_object().into_iter().flatten() {
        let shown = if is_credential_key(key) {
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
    use crate::core::secret_codec::CredentialKind;
    use crate::fixtures::ts;

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
        let now = ts("2026-11-27T20:00:00Z");
        let access = parse(SAMPLE, "default", &Limits::default())
            .unwrap()
            .accesses
            .remove(0);
        let objects = render(&access, &[], &Limits::default(), now).unwrap();
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
        let now = ts("2026-11-27T20:00:00Z");
        let text = format!(
            "{SAMPLE}    template:\n      spec: {{predictor: {{model: {{modelFormat: {{name: sklearn}}}}}}}}\n  serviceAccount:\n    name: default-editor\n  mesh:\n    mode: DisableSidecarInjection\n"
        );
        let access = parse(&text, "default", &Limits::default())
            .unwrap()
            .accesses
            .remove(0);
        let objects = render(&access, &[], &Limits::default(), now).unwrap();
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

        // The operator never changes an InferenceService the access does not create.
        let Err(err) = parse(
            &format!("{SAMPLE}  mesh:\n    mode: DisableSidecarInjection\n"),
            "default",
            &Limits::default(),
        ) else {
            panic!("DisableSidecarInjection on a referenced InferenceService was accepted")
        };
        assert!(
            err.contains("needs spec.inferenceService.template"),
            "{err}"
        );
    }

    #[test]
    fn refuses_invalid_or_empty_input() {
        // No Debug on File: it may hold a Dex password.
        let Err(err) = parse(
            &format!("{SAMPLE}  token:\n    duration: 5m\n"),
            "default",
            &Limits::default(),
        ) else {
            panic!("a 5m token was accepted")
        };
        assert!(err.contains("at least 10m"), "{err}");
        let Err(err) = parse("kind: ConfigMap\n", "default", &Limits::default()) else {
            panic!("a file without accesses was accepted")
        };
        assert!(err.contains("no InferenceAccess"), "{err}");
        let no_ns = SAMPLE.replace("  namespace: kubeflow-user-example-com\n", "");
        assert_eq!(
            parse(&no_ns, "team-a", &Limits::default())
                .unwrap()
                .accesses[0]
                .metadata
                .namespace
                .as_deref(),
            Some("team-a")
        );
    }

    #[test]
    fn a_dex_session_renders_a_session_secret_and_admits_the_user() {
        let now = ts("2026-11-27T20:00:00Z");
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/dex-session.yaml"
        ))
        .unwrap();
        let file = parse(&text, "default", &Limits::default()).unwrap();
        let objects = render(&file.accesses[0], &file.secrets, &Limits::default(), now).unwrap();
        assert_eq!(
            kinds(&objects),
            [
                "Secret/sklearn-iris-as-user-credential",
                "AuthorizationPolicy/sklearn-iris-as-user"
            ],
            "no ServiceAccount: a session is a person's"
        );
        let keys: Vec<&str> = objects[0]["stringData"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, CredentialKind::Session.keys());
        assert_eq!(objects[0]["stringData"]["cookie"], "<redacted>");
        assert_eq!(
            objects[1]["spec"]["rules"][0]["when"][0]["values"],
            json!(["user@example.com"])
        );
        // Without the Secret in the file the policy says where the user id will come from.
        let alone = render(&file.accesses[0], &[], &Limits::default(), now).unwrap();
        assert_eq!(
            alone[1]["spec"]["rules"][0]["when"][0]["values"],
            json!(["<the username in Secret dex-user>"])
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
