//! The one table of order: which phase an object belongs to. Objects are applied phase by
//! phase in [`Phase::APPLY_ORDER`] and pruned in the reverse order, and the prune rules for
//! Namespaces and CRDs ask the same table what an object is. Keyed by API group and kind
//! (never by apiVersion strings), so every version of a kind lands in the same phase.

use super::inventory::Entry;
use crate::desired::Applier;

const CRD_GROUP: &str = "apiextensions.k8s.io";
const CRD_KIND: &str = "CustomResourceDefinition";

/// Where an object goes in a sync, in apply order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Phase {
    /// CustomResourceDefinitions: applied first and waited for until Established, so the
    /// custom resources that come with them can be resolved; pruned last.
    Crds,
    /// Namespaces: everything namespaced needs its namespace first.
    Namespaces,
    /// Every other cluster-scoped object.
    ClusterScoped,
    /// The platform's namespaced objects, the team's RBAC among them: applied before the
    /// team's objects, which need that RBAC, and pruned after them, which are deleted as
    /// the team.
    PlatformNamespaced,
    /// The team's own objects, applied as the team's identity.
    TeamNamespaced,
}

impl Phase {
    /// Every phase, in the order objects are applied; prune walks it backwards.
    pub const APPLY_ORDER: [Phase; 5] = [
        Phase::Crds,
        Phase::Namespaces,
        Phase::ClusterScoped,
        Phase::PlatformNamespaced,
        Phase::TeamNamespaced,
    ];

    /// The phase of an object of `group`/`kind`, applied by `applier`.
    pub fn of(group: &str, kind: &str, namespaced: bool, applier: Applier) -> Phase {
        match (group, kind) {
            (CRD_GROUP, CRD_KIND) => Phase::Crds,
            ("", "Namespace") => Phase::Namespaces,
            _ if !namespaced => Phase::ClusterScoped,
            _ if applier == Applier::Platform => Phase::PlatformNamespaced,
            _ => Phase::TeamNamespaced,
        }
    }

    /// The phase of an object an inventory holds (one with a namespace is namespaced).
    pub fn of_entry(e: &Entry) -> Phase {
        let key = e.key();
        Phase::of(&key.group, &key.kind, !e.namespace.is_empty(), e.applier)
    }

    /// Whether pruning it is the platform's call (`prune.namespaces`).
    pub fn is_namespace(self) -> bool {
        self == Phase::Namespaces
    }

    /// Whether pruning it is the platform's call (`prune.crds`).
    pub fn is_crd(self) -> bool {
        self == Phase::Crds
    }

    /// The rank a prune sorts by: the later an object is applied, the earlier it is pruned.
    pub fn prune_rank(self) -> std::cmp::Reverse<Phase> {
        std::cmp::Reverse(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(api_version: &str, kind: &str, namespace: &str, applier: Applier) -> Entry {
        Entry {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: "x".into(),
            applier,
            uid: None,
            resource_version: None,
            digest: None,
        }
    }

    /// The team's objects are deleted as the team, so the Role that allows it goes after
    /// them whatever their API group sorts like.
    #[test]
    fn prune_order_deletes_the_teams_objects_before_its_rbac_and_namespaces_last() {
        let mut entries = [
            entry(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "",
                Applier::Platform,
            ),
            entry("v1", "Namespace", "", Applier::Platform),
            entry(
                "rbac.authorization.k8s.io/v1",
                "Role",
                "shop",
                Applier::Platform,
            ),
            entry("zz.example.com/v1", "Widget", "shop", Applier::Team),
            entry("v1", "ConfigMap", "shop", Applier::Team),
        ];
        entries.sort_by_key(|e| Phase::of_entry(e).prune_rank());
        let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "Widget",
                "ConfigMap",
                "Role",
                "Namespace",
                "CustomResourceDefinition"
            ]
        );
    }

    /// CRDs, then Namespaces, then the rest of the cluster-scoped objects, then the
    /// platform's namespaced objects, and the team's last.
    #[test]
    fn apply_order_puts_what_others_need_first() {
        let of = |group, kind, namespaced, applier| Phase::of(group, kind, namespaced, applier);
        assert_eq!(
            of(CRD_GROUP, CRD_KIND, false, Applier::Platform),
            Phase::Crds
        );
        assert_eq!(
            of("", "Namespace", false, Applier::Platform),
            Phase::Namespaces
        );
        assert_eq!(
            of(
                "rbac.authorization.k8s.io",
                "ClusterRole",
                false,
                Applier::Platform
            ),
            Phase::ClusterScoped
        );
        assert_eq!(
            of("rbac.authorization.k8s.io", "Role", true, Applier::Platform),
            Phase::PlatformNamespaced
        );
        assert_eq!(
            of("", "ConfigMap", true, Applier::Team),
            Phase::TeamNamespaced
        );
        let mut sorted = Phase::APPLY_ORDER;
        sorted.sort();
        assert_eq!(sorted, Phase::APPLY_ORDER);
    }
}
