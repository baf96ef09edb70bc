//! The desired state: what `render` produces and what `sync` and `drift` consume.
//!
//! These are plain data types with no Kubernetes client in sight, so the renderer stays
//! pure and the sync engine can be tested with hand-built desired states.
//!
//! Invariants the renderer guarantees and the sync engine relies on:
//! * every object carries `app.kubernetes.io/managed-by: pontoon` and `pontoon.dev/team`
//!   (the daemon adds its owner's `pontoon.dev/owner` before applying: [`owner`]);
//! * within one unit no two objects share a [`ObjectKey`];
//! * a team with any error is in [`DesiredState::failed_teams`] and has no units: its
//!   clusters keep what they have (nothing is pruned after a render error).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod manifest;
pub use manifest::{Head, HeadMetadata, Manifest};
pub mod owner;
pub use owner::{DEFAULT_OWNER, LABEL_OWNER, Owner};
pub mod package;
pub use package::{
    ClusterCapabilities, ExpandedDocument, Expansion, Expansions, FetchedChart, PackageError,
    PackageOwner, PackageRequest, PackageSource,
};

/// Label every object pontoon applies carries.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "pontoon";
/// Label naming the team an object belongs to.
pub const LABEL_TEAM: &str = "pontoon.dev/team";
/// Annotation: `<file>:<line>` the object came from in the platform repo.
pub const ANNOTATION_SOURCE: &str = "pontoon.dev/source";
/// Annotation or label `pontoon.dev/prune: disabled` keeps an object when it leaves the repo.
pub const ANNOTATION_PRUNE: &str = "pontoon.dev/prune";
/// The field manager of the default owner's applies (another owner's is
/// `pontoon-<owner>`: [`Owner::field_manager`]).
pub const FIELD_MANAGER: &str = "pontoon";
/// The Role (and its RoleBinding) in each of a team's namespaces that lets the team's
/// identity manage the kinds the team uses.
pub const TEAM_ROLE: &str = "pontoon-team";

/// A kind's resource name as Kubernetes guesses it without discovery (lower case, an
/// English plural). Render names the team Role's resources with it, having no cluster;
/// the sync puts discovery's names in their place (`Endpoints` is `endpoints`, not this
/// guess's `endpointses`).
pub fn plural_guess(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if lower.ends_with("y") && !lower.ends_with("ey") {
        format!("{}ies", &lower[..lower.len() - 1])
    } else if lower.ends_with('s') || lower.ends_with('x') || lower.ends_with("ch") {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

/// The namespace whose ServiceAccount names are the teams' identities: team `shop` acts
/// as `system:serviceaccount:pontoon-teams:shop`. pontoon may impersonate service
/// accounts of this namespace only (a Role here, `deploy/base/rbac.yaml`), so adding a
/// team needs no RBAC edit, and nothing outside the scheme can be impersonated. The
/// accounts need not exist (impersonation checks RBAC, not the object), and none should:
/// no token can then be issued for one. No team may own this namespace.
pub const TEAM_IDENTITY_NAMESPACE: &str = "pontoon-teams";

/// The group the API server puts every team identity in (with `system:serviceaccounts`
/// and `system:authenticated`): the groups of a service account it is asked to act as.
pub const TEAM_GROUP: &str = "system:serviceaccounts:pontoon-teams";

/// The user a team's objects are applied as (impersonated): a ServiceAccount name of
/// [`TEAM_IDENTITY_NAMESPACE`]. The team's base binds its Role to it.
pub fn team_user(team: &TeamName) -> String {
    format!("system:serviceaccount:{TEAM_IDENTITY_NAMESPACE}:{team}")
}

/// The RoleBinding subject that is the team's identity (see [`team_user`]).
pub fn team_subject(team: &TeamName) -> serde_json::Value {
    serde_json::json!({"kind": "ServiceAccount", "name": team.0, "namespace": TEAM_IDENTITY_NAMESPACE})
}

/// The namespace on every cluster for pontoon's own objects (inventories, leases) when the
/// daemon's config names no other. No team may own it.
pub const DEFAULT_NAMESPACE: &str = "pontoon-system";

/// RFC 1123 label: what Kubernetes accepts for namespace names, and what pontoon accepts
/// for cluster and team names.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Server-side apply as `owner`'s field manager ([`Owner::field_manager`]: `pontoon` for
/// the default owner). Field validation is `Ignore`: for an
/// apply, `Warn` and `Strict` only add a second, strict YAML parse of the body to find
/// duplicate keys, which a body serialized from a JSON value cannot hold; a field the
/// schema does not declare is refused by the apply itself whatever the setting.
pub fn apply_params(owner: &Owner) -> kube::api::PatchParams {
    kube::api::PatchParams::apply(&owner.field_manager()).validation_ignore()
}

/// A team's name, as its folder under `teams/` says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TeamName(pub String);

/// A cluster's name, as `platform.yaml` says; the daemon config maps it to a connection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClusterName(pub String);

impl fmt::Display for TeamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One unit of work, status and commit status: a team on a cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UnitId {
    pub team: TeamName,
    pub cluster: ClusterName,
}

impl fmt::Display for UnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.cluster, self.team)
    }
}

/// Identity an object is applied with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Applier {
    /// pontoon's own identity: the team's base (Namespaces, quota, RBAC, NetworkPolicy)
    /// and anything else the platform itself defines.
    Platform,
    /// The team's impersonated identity (see [`team_user`]):
    /// objects from the team's own files, so the API server enforces the boundary too.
    Team,
}

/// What to do when a managed object drifts.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DriftMode {
    /// Re-apply the desired state; recreate deleted objects; remove fields people added.
    #[default]
    Correct,
    /// Leave it; mark the unit OutOfSync and count it.
    Report,
}

/// Identifies one object on one cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    /// API group, empty for the core group.
    pub group: String,
    pub kind: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gk = if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        };
        if self.namespace.is_empty() {
            write!(f, "{gk}/{}", self.name)
        } else {
            write!(f, "{gk} {}/{}", self.namespace, self.name)
        }
    }
}

impl ObjectKey {
    /// The key of a manifest; `None` when apiVersion, kind or metadata.name is missing.
    pub fn of(object: &serde_json::Value) -> Option<ObjectKey> {
        let meta = object.get("metadata")?;
        ObjectKey::from_parts(
            object.get("apiVersion")?.as_str()?,
            object.get("kind")?.as_str()?,
            meta.get("name")?.as_str()?,
            meta.get("namespace").and_then(|n| n.as_str()),
        )
    }

    /// The key of a manifest kept as text, read without building its tree.
    pub fn of_manifest(object: &Manifest) -> Option<ObjectKey> {
        let head = object.head();
        ObjectKey::from_parts(
            head.api_version.as_deref()?,
            head.kind.as_deref()?,
            head.metadata.name.as_deref()?,
            head.metadata.namespace.as_deref(),
        )
    }

    fn from_parts(
        api_version: &str,
        kind: &str,
        name: &str,
        namespace: Option<&str>,
    ) -> Option<ObjectKey> {
        let group = match api_version.rsplit_once('/') {
            Some((g, _)) => g,
            None => "",
        };
        Some(ObjectKey {
            group: group.to_owned(),
            kind: kind.to_owned(),
            namespace: namespace.unwrap_or("").to_owned(),
            name: name.to_owned(),
        })
    }
}

/// Where in the platform repo something came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourceRef {
    /// Path relative to the repo root, with `/` separators.
    pub file: String,
    /// 1-based line of the document (or instance) that produced the object.
    pub line: u64,
}

impl fmt::Display for SourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One object to apply, with what the sync and drift engines need to know about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredObject {
    /// The full manifest: apiVersion, kind, metadata (with pontoon's labels and
    /// annotations), and the rest. Key order is deterministic. Kept as compact JSON text
    /// (a tree is built only for a reader that needs one, see [`Manifest`]); shared, not
    /// copied, by the units' work queues and the sync engine's record of what it applied.
    pub object: Arc<Manifest>,
    pub source: SourceRef,
    pub applier: Applier,
    pub drift: DriftMode,
    /// JSON pointers (RFC 6901, e.g. `/spec/replicas`) that drift detection leaves alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_fields: Vec<String>,
    /// The platform's own rule for reading this object's health (its Kind resource's, or
    /// `platform.yaml`'s for its group and kind), checked at render time; `None`: the
    /// built-in rules, then kstatus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Arc<HealthRule>>,
}

/// How the platform says an object's health is read, where no built-in rule or
/// convention fits (an operator that reports `status.phase`): CEL expressions over the
/// live object (`self`). They were compiled when the repo rendered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthRule {
    /// True once the object is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_when: Option<String>,
    /// True when waiting will not make it ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_when: Option<String>,
    /// What a failed (or not yet ready) object reports; may hold `${expression}`s over
    /// `self`, e.g. `${self.status.phase}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Where the rule is written (`kinds/database.yaml:12`), named in what it reports.
    pub source: SourceRef,
}

impl DesiredObject {
    pub fn key(&self) -> Option<ObjectKey> {
        ObjectKey::of_manifest(&self.object)
    }

    /// The digest of what applying this object sends: its manifest and the identity it is
    /// applied with.
    pub fn digest(&self) -> Digest {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        // The manifest's text is serde_json's output for its tree, which is deterministic.
        h.update(self.object.json().as_bytes());
        h.update(match self.applier {
            Applier::Platform => b"\0platform".as_slice(),
            Applier::Team => b"\0team".as_slice(),
        });
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize()[..16]);
        Digest(out)
    }
}

/// A digest of one apply (manifest and identity): equal digests, the same apply. Stable
/// across processes and versions (the first 128 bits of a SHA-256), so an inventory can
/// keep it and a restarted pontoon can compare with it. Written as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(pub [u8; 16]);

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::str::FromStr for Digest {
    type Err = hex::FromHexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out)?;
        Ok(Digest(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Safety rules for a unit's pruning, from the platform's policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrunePolicy {
    /// Whether Namespaces may be deleted when they leave the repo.
    pub namespaces: bool,
    /// Whether CustomResourceDefinitions may be deleted when they leave the repo.
    pub crds: bool,
    /// A sync that would delete more than this share (0.0–1.0) of the team's own objects in
    /// a unit (those applied as the team) is held.
    /// `1.0` disables the hold.
    pub max_share: f64,
}

impl Default for PrunePolicy {
    fn default() -> Self {
        PrunePolicy {
            namespaces: false,
            crds: false,
            max_share: 0.5,
        }
    }
}

/// Everything one unit should hold on its cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitDesired {
    pub unit: UnitId,
    /// Namespaces the team owns on this cluster.
    pub namespaces: Vec<String>,
    /// Sorted by [`ObjectKey`]; no duplicates.
    pub objects: Vec<DesiredObject>,
    pub prune: PrunePolicy,
    /// Objects that exist without pontoon's labels and that `platform.yaml` hands to this
    /// team (`spec.adopt`); the sync refuses every other such object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adopt: Vec<Adoption>,

    /// What objects wait for before they are applied (`dependsOn`), by the waiting
    /// object's key; every key named is one of this unit's objects. Kept beside the
    /// objects rather than in them: it decides when an object is applied, never what is
    /// applied, so it is no part of an object's digest, and a unit without dependencies
    /// carries nothing.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "dependency_pairs"
    )]
    pub dependencies: BTreeMap<ObjectKey, Vec<Dependency>>,

    /// The platform's components this unit's objects wait for (a Kind's `requires`), and,
    /// in a `platform` unit, the objects each component stands for on this cluster.
    #[serde(default, skip_serializing_if = "UnitComponents::is_empty")]
    pub components: UnitComponents,
}

/// The team name of the unit that holds a cluster's platform components: reserved, no
/// team folder may take it.
pub const PLATFORM_UNIT: &str = "platform";

/// What a unit has to do with the platform's components (see [`UnitDesired::components`]).
/// Like dependencies, it decides when an object is applied, never what is applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitComponents {
    /// Objects that wait, by key, for the components named (each healthy on the cluster).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "requires_pairs"
    )]
    pub requires: BTreeMap<ObjectKey, Vec<String>>,
    /// In a `platform` unit: each component's objects on this cluster, by its name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub provides: BTreeMap<String, Vec<ObjectKey>>,
}

impl UnitComponents {
    pub fn is_empty(&self) -> bool {
        self.requires.is_empty() && self.provides.is_empty()
    }
}

/// [`UnitComponents::requires`] as `[object, components]` pairs (an [`ObjectKey`] is no
/// JSON object key).
mod requires_pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::ObjectKey;

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<ObjectKey, Vec<String>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<ObjectKey, Vec<String>>, D::Error> {
        let pairs: Vec<(ObjectKey, Vec<String>)> = Deserialize::deserialize(d)?;
        Ok(pairs.into_iter().collect())
    }
}

/// [`UnitDesired::dependencies`] as a list of `[object, dependencies]` pairs: a JSON
/// object's keys are strings, and an [`ObjectKey`] is not one.
mod dependency_pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::{Dependency, ObjectKey};

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<ObjectKey, Vec<Dependency>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<ObjectKey, Vec<Dependency>>, D::Error> {
        let pairs: Vec<(ObjectKey, Vec<Dependency>)> = Deserialize::deserialize(d)?;
        Ok(pairs.into_iter().collect())
    }
}

/// Something an object waits for: every object in `objects` applied and healthy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dependency {
    /// What it is, as the platform repo names it: another instance (`Database/ledger`),
    /// or another resource of the same instance, by its object's kind and name
    /// (`Job/web-migrate`).
    pub name: String,
    /// The objects it stands for, in this unit.
    pub objects: Vec<ObjectKey>,
}

/// An existing object the platform lets one team take over, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Adoption {
    pub key: ObjectKey,
    pub reason: String,
    /// Where `platform.yaml` says so.
    pub source: SourceRef,
}

impl UnitDesired {
    /// Whether the platform lets this unit take over `key` although it exists without
    /// pontoon's labels.
    pub fn adopts(&self, key: &ObjectKey) -> bool {
        self.adopt.iter().any(|a| a.key == *key)
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// A problem found in the platform repo, located precisely enough to fix without asking.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: u64,
    pub column: u64,
    /// The team whose files (or render) it concerns; `None` for platform-wide files.
    pub team: Option<TeamName>,
    /// The one cluster it concerns (a cluster's override, an expression that reads the
    /// cluster); `None` when it holds on every cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub severity: Severity,
    /// Stable rule id, e.g. `parse`, `unknown-field`, `namespace-not-owned`.
    pub rule: String,
    pub message: String,
}

impl Diagnostic {
    /// The same diagnostic, about `cluster` alone.
    pub fn on_cluster(mut self, cluster: &str) -> Self {
        self.cluster = Some(cluster.to_owned());
        self
    }

    /// Whether it concerns the unit on `cluster`.
    pub fn concerns(&self, cluster: &str) -> bool {
        self.cluster.as_deref().is_none_or(|c| c == cluster)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(
            f,
            "{}:{}:{}: {sev}[{}]: ",
            self.file, self.line, self.column, self.rule
        )?;
        if let Some(team) = &self.team {
            write!(f, "team {team}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// The render of one commit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    /// The commit (or content hash for a directory source) it was rendered from.
    pub revision: String,
    /// Every unit of every team that rendered without error.
    pub units: BTreeMap<UnitId, UnitDesired>,
    /// Teams whose render failed, with at least one error each. Their clusters are left
    /// exactly as they are.
    pub failed_teams: BTreeMap<TeamName, Vec<Diagnostic>>,
    /// The clusters a failed team runs on, when its team.yaml reads; where its failure
    /// is shown if it has no units yet.
    #[serde(default)]
    pub failed_team_clusters: BTreeMap<TeamName, Vec<ClusterName>>,
    /// Set when `platform.yaml` itself is broken: nothing syncs,
    /// nothing is pruned.
    pub platform_failed: bool,
    /// The platform's pruning rules, for teams that left the repo (and so have no unit).
    #[serde(default)]
    pub default_prune: PrunePolicy,
    /// Every diagnostic, errors and warnings, sorted by file, line, column.
    pub diagnostics: Vec<Diagnostic>,
    /// Which team each namespace belongs to, as this render decided; the next render
    /// starts from it.
    #[serde(default)]
    pub namespace_owners: NamespaceOwners,
    /// The platform's rollout stages, resolved to clusters.
    #[serde(default)]
    pub rollout: Rollout,
    /// Per platform policy id, the objects of this render that break it: what the
    /// daemon's policy-debt metric shows without asking any cluster.
    #[serde(default)]
    pub policy_debt: BTreeMap<String, PolicyDebt>,
    /// Per team, the notification receivers its team.yaml names (`notify`), each with
    /// where it is written: the daemon's config defines them, and the daemon says at
    /// that line when it does not.
    #[serde(default)]
    pub notify: BTreeMap<TeamName, Vec<ReceiverName>>,
}

/// A receiver named in a team.yaml's `notify`, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiverName {
    pub name: String,
    pub file: String,
    pub line: u64,
    pub column: u64,
}

/// The order in which a commit reaches the clusters (`platform.yaml` `spec.rollout`), as
/// render resolved it: each stage's clusters by name, and the teams that skip stages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// In order: a commit reaches stage N+1 after stage N.
    pub stages: Vec<Stage>,
    /// Teams whose `team.yaml` says `rollout: {skipStages: true}`.
    #[serde(default)]
    pub skip_teams: std::collections::BTreeSet<TeamName>,
}

/// One rollout stage: its clusters (each in no other stage) and its soak time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    pub clusters: Vec<ClusterName>,
    /// How long a team's units here stay Synced at a commit before the next stage gets it.
    pub soak: std::time::Duration,
}

impl Rollout {
    /// The index of the stage `cluster` is in, if any.
    pub fn stage_of(&self, cluster: &ClusterName) -> Option<usize> {
        self.stages
            .iter()
            .position(|s| s.clusters.contains(cluster))
    }
}

/// The objects (one per cluster it goes to) of a render that break one platform rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDebt {
    /// Broke a `deny` rule: their team did not render on that cluster.
    pub denied: u64,
    /// Broke a `warn` rule.
    pub warned: u64,
    /// Broke a rule an exception lets them break: what the exception expiring would deny.
    pub exempted: u64,
}

impl PolicyDebt {
    pub fn add(&mut self, other: &PolicyDebt) {
        self.denied += other.denied;
        self.warned += other.warned;
        self.exempted += other.exempted;
    }
}

/// Namespace name to the team that owns it.
pub type NamespaceOwners = BTreeMap<String, TeamName>;

// Label selectors: how the engines find pontoon's objects on a cluster. Built here alone,
// so a label renamed above renames every query.

/// Label marking inventory ConfigMaps, so teams removed from the repo can be found.
pub const LABEL_INVENTORY: &str = "pontoon.dev/inventory";

/// Every object pontoon manages, whatever its team.
pub fn selector_managed() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}")
}

/// The objects pontoon manages for `team`.
pub fn selector_team(team: &TeamName) -> String {
    format!("{LABEL_TEAM}={team},{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}")
}

/// The objects pontoon manages for any team but `team`.
pub fn selector_other_teams(team: &TeamName) -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY_VALUE},{LABEL_TEAM}!={team}")
}

/// Every unit's inventory ConfigMap.
pub fn selector_inventories() -> String {
    format!("{LABEL_INVENTORY}=true")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(applier: Applier) -> DesiredObject {
        DesiredObject {
            object: Arc::new(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap"}).into()),
            source: SourceRef {
                file: "a.yaml".into(),
                line: 1,
            },
            applier,
            drift: DriftMode::Correct,
            ignore_fields: Vec::new(),
            health: None,
        }
    }

    #[test]
    fn a_digest_is_stable_and_tells_identities_apart() {
        let platform = object(Applier::Platform).digest();
        // An inventory keeps digests across versions of pontoon: this value may not change.
        assert_eq!(platform.to_string(), "d4239b237aa390fd3a61042db8f74363");
        assert_ne!(platform, object(Applier::Team).digest());
        let back: Digest = serde_json::from_str(&serde_json::to_string(&platform).expect("json"))
            .expect("reads back");
        assert_eq!(back, platform);
        assert!(serde_json::from_str::<Digest>("\"xyz\"").is_err());
    }
}
