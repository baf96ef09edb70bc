//! A finished sync attempt as it is handed on to everything that reports it: the board,
//! the metrics and commit statuses. The scheduler produces these; status reads them, so
//! the type lives here, below the daemon that wires the two.

use crate::sync::UnitResult;

/// A finished sync attempt, with whether it was the unit's first.
#[derive(Debug, Clone)]
pub struct SyncReport {
    pub result: UnitResult,
    pub first_attempt: bool,
    /// The unit's team left the repo (or this cluster): this was its removal.
    pub removal: bool,
}
