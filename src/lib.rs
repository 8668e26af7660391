//! k3s-autoscaler: turns Prometheus/Alertmanager alerts into safe EC2 scaling of K3s workers.
//!
//! The crate is split by job: [`core`] holds the pure decision logic (no I/O, no clock),
//! [`adapters`] the edges to AWS and Kubernetes behind small traits, [`service`] the
//! orchestration that runs a decision under the DynamoDB lease, and [`http`] the thin axum
//! layer Alertmanager talks to.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod adapters;
pub mod cli;
pub mod config;
pub mod core;
pub mod doctor;
pub mod http;
pub mod metrics;
pub mod secrets;
pub mod service;
pub mod status;
pub mod telemetry;
