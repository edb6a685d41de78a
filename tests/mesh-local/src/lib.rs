#![forbid(unsafe_code)]
//! Test doubles for the data path of Kubeflow + KServe: the Istio ingress gateway (with the
//! predictor sidecar's AuthorizationPolicy check), Dex behind oauth2-proxy or oidc-authservice,
//! and a starter for the real KServe model server. See README.md for where they differ.

pub mod gateway;
mod http_util;
pub mod jwt;
pub mod login;
pub mod model_server;
pub mod policy;
pub mod routing;

pub use gateway::{Gateway, GatewayBuilder, GatewayError};
pub use login::{Clock, Flavour, LdapUser, LoginConfig, StaticUser};
pub use model_server::{ModelServer, ModelServerError};
