//! The daemon instance that owns what it applies: its `sync.owner`, one name per pontoon
//! installation on a cluster. Everything pontoon writes carries it (the label
//! [`LABEL_OWNER`] on applied objects and inventories, the inventory's name, the leader
//! Lease's name, the field manager), and every query and decision of a daemon is limited
//! to what carries its own: another owner's inventories are not read, listed as removed
//! teams nor pruned, and another owner's objects are neither watched nor taken over.
//!
//! What pontoon wrote before owners existed carries no owner label: it is the default
//! owner's ([`DEFAULT_OWNER`]), whose names are those pontoon always used, so a cluster
//! synced by an earlier version keeps its inventories, Lease and field ownership.
//!
//! Pure data and names: no client, no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{
    DesiredState, LABEL_MANAGED_BY, MANAGED_BY_VALUE, Manifest, UnitDesired, is_dns_label,
};

/// Label naming the daemon instance (its `sync.owner`) that applied an object or wrote an
/// inventory or Lease.
pub const LABEL_OWNER: &str = "pontoon.dev/owner";
/// The owner of a daemon whose config names none, and of everything written before
/// owners existed (no owner label).
pub const DEFAULT_OWNER: &str = "pontoon";
/// The longest owner name: it goes into label values (63 at most), object names and
/// field manager names with room to spare.
pub const OWNER_MAX_LEN: usize = 30;

/// A daemon instance's name on its clusters (`sync.owner`): a DNS label of at most
/// [`OWNER_MAX_LEN`] characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Owner(String);

impl Default for Owner {
    fn default() -> Self {
        Owner(DEFAULT_OWNER.to_owned())
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Owner {
    /// The owner named `name`, or why it cannot be one.
    pub fn new(name: &str) -> Result<Owner, String> {
        if !is_dns_label(name) {
            return Err(format!(
                "{name:?} is not a DNS label (lower case letters, digits and '-', starting and ending with a letter or digit)"
            ));
        }
        if name.len() > OWNER_MAX_LEN {
            return Err(format!(
                "{name:?} is longer than {OWNER_MAX_LEN} characters (it goes into object names and label values)"
            ));
        }
        if name == "release" {
            // `pontoon-release` is the field manager of `pontoon release`.
            return Err("\"release\" is reserved".to_owned());
        }
        Ok(Owner(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_OWNER
    }

    /// The owner whose object carries `labels` (pontoon's object or not): the owner label,
    /// or the default owner when there is none (written before owners existed).
    pub fn of_labels(labels: Option<&BTreeMap<String, String>>) -> &str {
        labels
            .and_then(|l| l.get(LABEL_OWNER))
            .map_or(DEFAULT_OWNER, String::as_str)
    }

    /// Whether an object with `labels` is this owner's by its owner label (pontoon's
    /// other labels are checked by the caller).
    pub fn owns(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        Owner::of_labels(labels) == self.0
    }

    /// The field manager of this owner's applies: `pontoon` for the default owner (as
    /// always), `pontoon-<owner>` for the others, so that two owners never share the
    /// ownership of a field and a write of one is never taken for the other's own.
    pub fn field_manager(&self) -> String {
        if self.is_default() {
            super::FIELD_MANAGER.to_owned()
        } else {
            format!("{}-{}", super::FIELD_MANAGER, self.0)
        }
    }

    /// The leader Lease's name when the config names none: `pontoon` for the default
    /// owner (as always), `pontoon-<owner>` for the others. One Lease per owner: the
    /// daemons of one owner are replicas of one daemon, one of which leads.
    pub fn lease_name(&self) -> String {
        if self.is_default() {
            "pontoon".to_owned()
        } else {
            format!("pontoon-{}", self.0)
        }
    }

    /// The label selector of this owner's managed objects, as narrow as a selector can
    /// say it: the default owner's objects include those without an owner label, which no
    /// selector can single out, so its list needs [`Owner::owns`] on each item too.
    pub fn selector_managed(&self) -> String {
        if self.is_default() {
            format!("{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}")
        } else {
            format!(
                "{LABEL_MANAGED_BY}={MANAGED_BY_VALUE},{LABEL_OWNER}={}",
                self.0
            )
        }
    }

    /// Sets the owner label on `object`'s labels (made a mapping when missing or null).
    fn stamp(&self, object: &mut serde_json::Value) {
        let Some(meta) = object
            .as_object_mut()
            .map(|o| o.entry("metadata").or_insert_with(|| serde_json::json!({})))
        else {
            return;
        };
        if !meta.is_object() {
            *meta = serde_json::json!({});
        }
        let Some(meta) = meta.as_object_mut() else {
            return;
        };
        let labels = meta.entry("labels").or_insert(serde_json::Value::Null);
        if !labels.is_object() {
            *labels = serde_json::json!({});
        }
        if let Some(labels) = labels.as_object_mut() {
            labels.insert(LABEL_OWNER.to_owned(), self.0.clone().into());
        }
    }

    /// Whether `object` carries this owner's label already, read from its text (no tree
    /// is built or kept).
    fn stamped(&self, object: &Manifest) -> bool {
        #[derive(serde::Deserialize, Default)]
        struct Object<'a> {
            #[serde(default, borrow)]
            metadata: Metadata<'a>,
        }
        #[derive(serde::Deserialize, Default)]
        struct Metadata<'a> {
            #[serde(default, borrow)]
            labels: Option<BTreeMap<std::borrow::Cow<'a, str>, serde_json::Value>>,
        }
        let json = object.json();
        let read: Object = serde_json::from_str(&json).unwrap_or_default();
        read.metadata
            .labels
            .and_then(|l| l.get(LABEL_OWNER).cloned())
            .and_then(|v| v.as_str().map(str::to_owned))
            .as_deref()
            == Some(self.0.as_str())
    }

    /// `object` with this owner's label: a new manifest, built from a tree that is not
    /// kept.
    fn stamped_copy(&self, object: &Manifest) -> Arc<Manifest> {
        let mut tree = object.to_value();
        self.stamp(&mut tree);
        Arc::new(Manifest::from(tree))
    }

    /// Puts this owner's label on every object of the unit that lacks it.
    pub fn stamp_unit(&self, unit: &mut UnitDesired) {
        for o in &mut unit.objects {
            if !self.stamped(&o.object) {
                o.object = self.stamped_copy(&o.object);
            }
        }
    }

    /// Puts this owner's label on every object of every unit of `state`. An object the
    /// render shares between units stays shared: it is stamped once.
    pub fn stamp_state(&self, state: &mut DesiredState) {
        let mut done: BTreeMap<*const Manifest, Arc<Manifest>> = BTreeMap::new();
        for unit in state.units.values_mut() {
            for o in &mut unit.objects {
                if self.stamped(&o.object) {
                    continue;
                }
                let shared = Arc::as_ptr(&o.object);
                if let Some(stamped) = done.get(&shared) {
                    o.object = stamped.clone();
                    continue;
                }
                let stamped = self.stamped_copy(&o.object);
                done.insert(shared, stamped.clone());
                o.object = stamped;
            }
        }
    }

    /// `unit` with this owner's label on every object: the unit itself when every object
    /// carries it already (the daemon stamps its renders once), a stamped copy otherwise.
    pub fn owned<'a>(&self, unit: &'a UnitDesired) -> std::borrow::Cow<'a, UnitDesired> {
        if unit.objects.iter().all(|o| self.stamped(&o.object)) {
            std::borrow::Cow::Borrowed(unit)
        } else {
            let mut unit = unit.clone();
            self.stamp_unit(&mut unit);
            std::borrow::Cow::Owned(unit)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_is_a_short_dns_label() {
        assert_eq!(Owner::new("blue").map(|o| o.to_string()), Ok("blue".into()));
        assert!(Owner::new("Blue").is_err());
        assert!(Owner::new("a.b").is_err());
        assert!(Owner::new("").is_err());
        assert!(
            Owner::new(&"a".repeat(31))
                .expect_err("too long")
                .contains("longer than 30")
        );
        assert!(Owner::new("release").is_err());
        assert!(Owner::default().is_default());
    }

    #[test]
    fn objects_without_an_owner_label_are_the_default_owners() {
        let labels = |o: Option<&str>| {
            let mut l = BTreeMap::from([(LABEL_MANAGED_BY.to_owned(), "pontoon".to_owned())]);
            if let Some(o) = o {
                l.insert(LABEL_OWNER.to_owned(), o.to_owned());
            }
            l
        };
        let (default, blue) = (Owner::default(), Owner::new("blue").expect("owner"));
        assert!(default.owns(Some(&labels(None))));
        assert!(default.owns(Some(&labels(Some("pontoon")))));
        assert!(!default.owns(Some(&labels(Some("blue")))));
        assert!(blue.owns(Some(&labels(Some("blue")))));
        assert!(!blue.owns(Some(&labels(None))));
        assert!(!blue.owns(None));
    }

    #[test]
    fn the_default_owner_keeps_the_names_pontoon_always_used() {
        let (default, blue) = (Owner::default(), Owner::new("blue").expect("owner"));
        assert_eq!(default.field_manager(), "pontoon");
        assert_eq!(default.lease_name(), "pontoon");
        assert_eq!(
            default.selector_managed(),
            "app.kubernetes.io/managed-by=pontoon"
        );
        assert_eq!(blue.field_manager(), "pontoon-blue");
        assert_eq!(blue.lease_name(), "pontoon-blue");
        assert_eq!(
            blue.selector_managed(),
            "app.kubernetes.io/managed-by=pontoon,pontoon.dev/owner=blue"
        );
    }

    #[test]
    fn stamping_sets_the_label_and_keeps_shared_objects_shared() {
        use crate::desired::{
            Applier, ClusterName, DesiredObject, DriftMode, PrunePolicy, SourceRef, TeamName,
            UnitId,
        };
        let object = Arc::new(Manifest::from(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "labels": null}
        })));
        let unit = |cluster: &str| UnitDesired {
            unit: UnitId {
                team: TeamName("shop".into()),
                cluster: ClusterName(cluster.into()),
            },
            namespaces: Vec::new(),
            objects: vec![DesiredObject {
                object: object.clone(),
                source: SourceRef {
                    file: "a.yaml".into(),
                    line: 1,
                },
                applier: Applier::Team,
                drift: DriftMode::Correct,
                ignore_fields: Vec::new(),
                health: None,
            }],
            prune: PrunePolicy::default(),
            adopt: Vec::new(),
            dependencies: Default::default(),
            components: Default::default(),
        };
        let blue = Owner::new("blue").expect("owner");
        let mut state = DesiredState::default();
        for c in ["a", "b"] {
            let u = unit(c);
            state.units.insert(u.unit.clone(), u);
        }
        blue.stamp_state(&mut state);
        let objects: Vec<&Arc<Manifest>> =
            state.units.values().map(|u| &u.objects[0].object).collect();
        assert!(!objects[0].holds_tree(), "stamped as text");
        assert_eq!(objects[0]["metadata"]["labels"][LABEL_OWNER], "blue");
        assert!(Arc::ptr_eq(objects[0], objects[1]), "stamped once, shared");
        let stamped = state.units.values().next().expect("unit");
        assert!(matches!(blue.owned(stamped), std::borrow::Cow::Borrowed(_)));
        let fresh = unit("a");
        let owned = blue.owned(&fresh);
        assert!(matches!(owned, std::borrow::Cow::Owned(_)));
        assert_eq!(
            owned.objects[0].object["metadata"]["labels"][LABEL_OWNER],
            "blue"
        );
        assert!(fresh.objects[0].object["metadata"]["labels"].is_null());
    }
}
