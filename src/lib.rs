//! inference-access: keeps a ready, self-renewing credential for a KServe InferenceService.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod credential;
pub mod desired;
pub mod dex;
pub mod endpoint;
pub mod error;
pub mod gateway_client;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod ops;
pub mod probe;
pub mod reconcile;
pub mod resources;
pub mod service;
pub mod status;
