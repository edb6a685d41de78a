//! The values the operator reasons about, free of Kubernetes clients and HTTP: endpoints and
//! URLs, credentials and their renewal, and what a gateway's answer means.

pub mod credential;
pub mod diagnosis;
pub mod endpoint;
pub mod renewal;
pub mod secret_codec;
pub mod url;
