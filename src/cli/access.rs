//! Reading an access and its credential Secret with the kubeconfig's identity; `token`.

use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use super::Target;
use crate::api::InferenceAccess;
use crate::core::credential::Credential;
use crate::core::endpoint::Endpoint;
use crate::core::secret_codec::{ClientSecret, Incomplete, decode_credential};
use crate::reconcile::plan;

#[derive(clap::Args)]
pub struct TokenArgs {
    /// Name of the InferenceAccess.
    pub name: String,
    #[command(flatten)]
    pub target: Target,
}

pub async fn run_token(args: TokenArgs) -> Result<(), String> {
    let cluster = Cluster::connect(&args.target).await?;
    let (access, secret) = cluster.access_and_secret(&args.name).await?;
    // Only the credential is needed here, not the URLs.
    let credential = decode_credential(&secret).ok_or_else(|| {
        format!(
            "Secret {} holds no token or cookie yet; see `inference-access status {} -n {}`",
            secret_name(&access),
            args.name,
            cluster.namespace
        )
    })?;
    match credential {
        Credential::Bearer(token) => println!("{token}"),
        Credential::Cookie { name, value } => println!("{name}={value}"),
    }
    Ok(())
}

/// A kube client and the namespace commands act in.
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
}

impl Cluster {
    pub async fn connect(target: &Target) -> Result<Self, String> {
        let options = KubeConfigOptions {
            context: target.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match (&target.kubeconfig, &target.context) {
            (Some(path), _) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .map_err(|e| format!("cannot read the kubeconfig {}: {e}", path.display()))?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| e.to_string())
            }
            (None, Some(_)) => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| e.to_string()),
            (None, None) => Config::infer().await.map_err(|e| e.to_string()),
        }
        .map_err(|e| {
            format!("cannot load a Kubernetes configuration (set KUBECONFIG or --kubeconfig): {e}")
        })?;
        let namespace = target
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config)
            .map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;
        Ok(Self { client, namespace })
    }

    pub fn accesses(&self) -> Api<InferenceAccess> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub async fn access(&self, name: &str) -> Result<InferenceAccess, String> {
        let ns = &self.namespace;
        self.accesses()
            .get_opt(name)
            .await
            .map_err(|e| api_error(&format!("reading InferenceAccess {ns}/{name}"), &e))?
            .ok_or_else(|| {
                format!(
                    "InferenceAccess {name} not found in namespace {ns}; list them with \
                     `kubectl get inferenceaccesses -n {ns}` or pass -n NAMESPACE"
                )
            })
    }

    /// The access and the Secret its status names (or the one its spec names before the first
    /// status).
    pub async fn access_and_secret(&self, name: &str) -> Result<(InferenceAccess, Secret), String> {
        let access = self.access(name).await?;
        let secret_name = secret_name(&access);
        let ns = &self.namespace;
        let secret = Api::<Secret>::namespaced(self.client.clone(), ns)
            .get_opt(&secret_name)
            .await
            .map_err(|e| api_error(&format!("reading Secret {ns}/{secret_name}"), &e))?
            .ok_or_else(|| {
                format!(
                    "Secret {secret_name} of InferenceAccess {name} does not exist yet: the \
                     operator has not issued a credential; see `inference-access status {name} \
                     -n {ns}`"
                )
            })?;
        Ok((access, secret))
    }
}

pub fn secret_name(access: &InferenceAccess) -> String {
    access
        .status
        .as_ref()
        .and_then(|s| s.secret_name.clone())
        .unwrap_or_else(|| plan::secret_name(access))
}

/// Errors from the API server in words that say what to do; 403 names the missing permission.
pub fn api_error(action: &str, error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if status.code == 403 => format!(
            "{action}: forbidden for your kubeconfig's identity ({}); ask for get access to \
             inferenceaccesses.inference-access.io and secrets in this namespace",
            status.message
        ),
        kube::Error::Api(status) if status.code == 404 => format!(
            "{action}: not found ({}); is the InferenceAccess CRD installed (`inference-access \
             crd | kubectl apply -f -`)?",
            status.message
        ),
        other => format!("{action}: {other}"),
    }
}

/// What the operator wrote into the credential Secret, read back for a client; a Secret not
/// complete yet says which key is missing and where to look.
pub fn client_secret(
    secret: &Secret,
    access: &str,
    namespace: &str,
) -> Result<ClientSecret, String> {
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    ClientSecret::decode(secret).map_err(|incomplete| match incomplete {
        Incomplete::NoCredential => format!(
            "Secret {namespace}/{name} holds no token or cookie yet; see `inference-access \
             status {access} -n {namespace}`"
        ),
        Incomplete::MissingKey(key) => format!(
            "Secret {namespace}/{name} has no {key:?} key yet: the operator has not finished \
             issuing the credential; see `inference-access status {access} -n {namespace}`"
        ),
    })
}

/// Where requests go: the Secret's URLs, or the same paths on another gateway address (a
/// port-forward, as the sample's `localhost:8080`).
pub fn endpoint(
    stored: &ClientSecret,
    model: &str,
    gateway: Option<&str>,
) -> Result<Endpoint, String> {
    Endpoint::resolve(&stored.url, gateway.unwrap_or(&stored.gateway_url), model)
        .map_err(|e| e.to_string())
}
