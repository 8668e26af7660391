//! What a reconcile step ends with and why it fails: the vocabulary the pool worker, the
//! interrupt worker and their steps (launch, drain, supersede, repair, snapshot) share. A leaf
//! module, so those steps depend on it instead of on each other.

use thiserror::Error;

use crate::adapters::kube::cluster::ClusterError;
use crate::adapters::{ComputeError, StoreError};

/// What a reconcile ended with.
#[derive(Debug, Clone, PartialEq)]
pub enum ReconcileOutcome {
    /// Nothing to do now; the decision's reason label.
    Held(&'static str),
    /// An operation was started (and possibly finished).
    Acted {
        /// Its id.
        op_id: String,
    },
    /// An in-flight operation was moved on.
    Progressed,
    /// Another holder has the pool; it will act.
    Contended,
    /// Decided, but `dry_run` kept it from acting.
    DryRun,
}

/// Why a reconcile failed; it is retried at the next trigger or sweep.
#[derive(Debug, Error)]
pub enum ReconcileError {
    /// The pool is not configured.
    #[error("unknown pool {0}")]
    UnknownPool(String),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// EC2 failed.
    #[error(transparent)]
    Compute(#[from] ComputeError),
    /// Kubernetes failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl ReconcileError {
    /// Low-cardinality label for logs and metrics.
    pub fn label(&self) -> String {
        match self {
            ReconcileError::UnknownPool(_) => "unknown_pool".into(),
            ReconcileError::Store(e) => e.label().into(),
            ReconcileError::Compute(e) => e.code(),
            ReconcileError::Cluster(e) => e.label(),
        }
    }
}

/// Whether a launch operation was just written (no instance can exist yet) or is resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fresh {
    /// Just written ahead: skip the search for earlier instances.
    Yes,
    /// Resumed after a crash or an unknown outcome: look for instances of the op first.
    No,
}

/// A new operation id (also the EC2 ClientToken of its launch).
pub(super) fn new_op_id() -> String {
    format!("op-{}", uuid::Uuid::new_v4().simple())
}
