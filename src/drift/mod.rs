//! Drift: one watch per managed kind per cluster, and a decision per change that agrees
//! with server-side apply. Fields pontoon never set — defaults, status, an HPA's
//! replicas, other controllers' annotations — are not drift, and neither are pontoon's
//! own writes.
//!
//! In `correct` mode a drifted object's unit is synced at once (the sync re-applies the
//! unit's last desired state and recreates deleted objects); in `report` mode it is only
//! recorded, and the sync leaves it alone.
//!
//! Where things are: the comparison of applied and live values, and the reading of
//! `managedFields` (who changed a field, what a person added, the patch removing it), are
//! in [`crate::ssa`], shared with the sync engine; here `watch` (the watches of a cluster),
//! `judge` (one change: drift or not, and what to do), `events` (Kubernetes Events about
//! drifted objects), `error` (failures, which reach the daemon). Drift knows nothing of
//! the daemon: it is handed its settings and channels.

mod error;
mod events;
mod judge;
mod side_writes;
mod watch;

use std::time::Instant;

use k8s_openapi::api::core::v1::ObjectReference;

use crate::desired::{DriftMode, ObjectKey, UnitId};

pub use crate::ssa::compare::differences;
pub use crate::ssa::managed_fields::{
    Addition, HUMAN_MANAGERS, changed_by, human_additions, last_writer, removal_patch,
};
pub use error::{DriftError, DriftFailure, FailureScope};
pub use watch::{DriftSettings, DriftWatch, kinds_of, kinds_of_units};

/// One drift seen on a cluster.
#[derive(Debug, Clone)]
pub struct DriftEvent {
    pub unit: UnitId,
    pub key: ObjectKey,
    /// Paths of fields that no longer hold the applied value (or `(deleted)`).
    pub paths: Vec<String>,
    /// Who changed the object last (from managedFields), and when.
    pub manager: String,
    pub at: String,
    pub mode: DriftMode,
    /// The manager stands for a person (kubectl's managers, or one the config names).
    pub by_person: bool,
    pub detected: Instant,
    /// Set on the follow-up event once the object is back to what pontoon applied.
    pub corrected: bool,
    /// Set when the object's drift was already open and a later change left it drifted
    /// still (or again): in `correct` mode its unit must be synced once more. Nothing new
    /// to count or show; the drift stays the one first reported.
    pub again: bool,
    /// Fields people added that pontoon never set (removed in correct mode).
    pub added: Vec<String>,
    /// The object, for Kubernetes Events about it.
    pub reference: ObjectReference,
}
