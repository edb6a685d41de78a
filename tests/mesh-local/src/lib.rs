#![forbid(unsafe_code)]
//! Test doubles for the data path of Kubeflow + KServe: Kubeflow's Istio ingress gateway and
//! Gateway API gateways run by Istio, the proxies behind them (a predictor's sidecar, ambient
//! ztunnel and waypoints) with Istio's AuthorizationPolicy and RequestAuthentication semantics,
//! Dex behind oauth2-proxy or oidc-authservice, and a starter for the real KServe model server.
//! See README.md for what each path enforces and where the doubles differ.

pub mod authn;
mod cluster;
pub mod gateway;
mod http_util;
pub mod httproute;
pub mod jwt;
pub mod login;
pub mod mesh;
pub mod model_server;
pub mod policy;
pub mod routing;

pub use gateway::{DENIED_BY_HEADER, Gateway, GatewayBuilder, GatewayError, Hop};
pub use login::{Clock, Flavour, LdapUser, LoginConfig, StaticUser};
pub use model_server::{ModelServer, ModelServerError};
