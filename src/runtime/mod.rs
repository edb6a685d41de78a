//! The controller process: watches, leader election, metrics and health endpoints.

pub mod controller;
pub mod index;
pub mod leader;
pub mod lean;
pub mod metrics;
pub mod ops;
pub mod recorder;
pub mod run;
pub mod triggers;
pub mod watches;
