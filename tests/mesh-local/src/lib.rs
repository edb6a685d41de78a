#![forbid(unsafe_code)]
//! Test doubles for the Istio ingress gateway, oauth2-proxy and Dex; see README.md.

pub mod policy;
pub mod jwt;
