//! End to end: the real `inference-access controller` binary, as a subprocess, against a
//! Kubernetes API over real HTTP.
//!
//! By default the API is `kube-local` (tests/kube-local), started per test. With
//! `INFERENCE_ACCESS_E2E_KUBECONFIG=<path>` the scenarios that need no fault injection or request
//! accounting run against that cluster instead (it must have KServe and Istio installed); the
//! others say they are skipped. Every wait is on a condition (a watch or a request-log entry)
//! with a deadline, never a sleep.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod harness;
mod prometheus;

mod consumers;
mod cross_namespace;
mod demo;
mod doctor;
mod examples;
mod helm;
mod llm;
mod refusals;
mod scenarios;
mod scoped;
mod security;
mod serving_modes;
