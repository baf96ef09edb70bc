//! The `Unit` custom resource (`units.pontoon.dev`): one team on one cluster as people
//! see it with `kubectl`. pontoon keeps one in its namespace on each cluster for every
//! team there, writes its status only when it changed, and reads from it what people ask:
//! a sync now (the reconcile-requested-at annotation). The definition (`crd`), the status
//! decided from a sync (`status`, pure), and the requests (`control`).
//!
//! Never a write outside the daemon's leadership: the daemon runs what writes here inside
//! its term and stops it first when the term ends.

pub mod control;
pub mod crd;
pub mod request;
pub mod status;
pub mod suspend;

use crate::desired::{Owner, TeamName};

/// The API group and version of the Unit.
pub const GROUP: &str = "pontoon.dev";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "pontoon.dev/v1alpha1";
pub const KIND: &str = "Unit";
pub const PLURAL: &str = "units";

/// Set to any new value (a time, by convention) to have the unit synced now; the status
/// says `lastHandledReconcileAt` with the value once a sync started after it finished.
pub const ANNOTATION_RECONCILE: &str = "pontoon.dev/reconcile-requested-at";
/// Holding the same value as [`ANNOTATION_RECONCILE`]: poll the platform repo before that
/// sync, so a commit pushed a moment ago is what it applies.
pub const ANNOTATION_RECONCILE_SOURCE: &str = "pontoon.dev/reconcile-with-source";

/// The Unit of `team` for the daemon `owner`: named after the team for the default
/// owner, `<team>.<owner>` for another, as the inventory ConfigMap is.
pub fn unit_name(owner: &Owner, team: &TeamName) -> String {
    if owner.is_default() {
        team.0.clone()
    } else {
        format!("{}.{owner}", team.0)
    }
}

/// The team a Unit's name stands for, for the daemon `owner`; None for another owner's.
pub fn team_of(owner: &Owner, name: &str) -> Option<TeamName> {
    if owner.is_default() {
        return (!name.contains('.')).then(|| TeamName(name.to_owned()));
    }
    name.strip_suffix(&format!(".{owner}"))
        .filter(|t| !t.contains('.'))
        .map(|t| TeamName(t.to_owned()))
}

/// Why a Unit (or its definition) could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error("Unit {name}: {source}")]
    Request {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("CustomResourceDefinition {}: {source}", crd::NAME)]
    Definition {
        #[source]
        source: kube::Error,
    },
    #[error("CustomResourceDefinition {}: not Established after {}s", crd::NAME, crd::ESTABLISH_TIMEOUT.as_secs())]
    NotEstablished,
    #[error("the Unit definition compiled into pontoon does not parse: {0}")]
    Embedded(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_is_named_as_the_inventory_is_for_each_owner() {
        let shop = TeamName("shop".into());
        let blue = Owner::new("blue").expect("owner");
        assert_eq!(unit_name(&Owner::default(), &shop), "shop");
        assert_eq!(unit_name(&blue, &shop), "shop.blue");
        assert_eq!(team_of(&blue, "shop.blue"), Some(shop.clone()));
        assert_eq!(team_of(&Owner::default(), "shop"), Some(shop));
        assert_eq!(team_of(&Owner::default(), "shop.blue"), None);
        assert_eq!(team_of(&blue, "shop"), None);
    }
}
