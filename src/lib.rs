//! inference-access: keeps a ready, self-renewing credential for a KServe InferenceService.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod core;
#[cfg(any(test, feature = "testing"))]
pub mod fixtures;
pub mod gateway;
pub mod reconcile;
pub mod runtime;
