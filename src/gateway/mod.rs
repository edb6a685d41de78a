//! Talking to the ingress gateway: the HTTP client, the Dex login and the endpoint probe.

pub mod client;
pub mod dex;
pub mod probe;
