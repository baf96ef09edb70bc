//! The platform repo's documents, parsed with their locations.
//!
//! A file is split into documents (`document`), each located again on demand (`locate`).
//! pontoon's documents (`apiVersion: pontoon.dev/v1alpha1`) are parsed into the typed
//! structs here, which refuse unknown fields; everything else is a plain Kubernetes
//! manifest kept as JSON. `skipped` names an entry the source did not read.

mod component;
mod document;
mod locate;
mod package;
mod skipped;

pub use component::{
    ChartRef, Component, ComponentOverride, ComponentPatch, ComponentSource, ComponentSpec,
    FolderRef, PatchTarget,
};
pub use document::{Document, MAX_FILE_BYTES, documents, typed};
pub use locate::Fields;
pub use package::{
    CHART_KIND, ChartDoc, ChartSpec, KUSTOMIZATION_FILES, KindChart, KustomizeInputs,
    KustomizeRefError, TeamPackages, join, kustomization_file, kustomize_inputs, resolve,
};
pub use skipped::{SkipReason, Skipped};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::desired::{Diagnostic, DriftMode, Severity, TeamName};

pub const API_VERSION: &str = "pontoon.dev/v1alpha1";

/// The known name a mistyped `word` most likely meant, if one is close enough to say so:
/// ` (did you mean image?)`, or nothing.
pub fn did_you_mean<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(word, k), k))
        .filter(|(d, _)| *d <= if word.chars().count() <= 4 { 1 } else { 2 })
        .min()
        .map(|(_, k)| format!(" (did you mean {k}?)"))
        .unwrap_or_default()
}

/// How a diagnostic names a JSON value's type: "a string", "an integer", "a list".
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Builds a diagnostic.
pub fn diag(
    file: &str,
    line: u64,
    column: u64,
    team: Option<&TeamName>,
    rule: &str,
    message: impl Into<String>,
) -> Diagnostic {
    Diagnostic {
        file: file.to_owned(),
        line,
        column,
        team: team.cloned(),
        cluster: None,
        severity: Severity::Error,
        rule: rule.to_owned(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn a_near_miss_gets_a_suggestion_and_a_stranger_does_not() {
        let known = ["image", "replicas", "port"];
        assert_eq!(did_you_mean("imag", known), " (did you mean image?)");
        assert_eq!(did_you_mean("replicsa", known), " (did you mean replicas?)");
        assert_eq!(did_you_mean("colour", known), "");
        assert_eq!(did_you_mean("pt", known), "");
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `platform.yaml`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Platform {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: PlatformSpec,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlatformSpec {
    /// The clusters teams may target, by name, with labels to select them by.
    pub clusters: Vec<ClusterDef>,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub policy: Policy,
    /// Existing objects without pontoon's labels that a team may take over: the only way
    /// a team gets a Namespace (or an object) that exists on a cluster and that pontoon
    /// did not create. A team's own files cannot adopt anything.
    #[serde(default)]
    pub adopt: Vec<AdoptSpec>,
    /// How the health of a group and kind is read, for operators whose resources follow
    /// no convention the built-in rules know (a `status.phase`): a Kind resource's own
    /// `readyWhen`/`failedWhen` still come first.
    #[serde(default)]
    pub health: Vec<HealthSpec>,
    /// The order in which a new commit reaches the clusters.
    #[serde(default)]
    pub rollout: RolloutSpec,
    /// Which of the daemon's age keys decrypts which team's SOPS files.
    #[serde(default)]
    pub decryption: DecryptionSpec,
    /// The platform's own rules over every object a team's files render to: CEL over the
    /// rendered object, `deny` (the team does not sync on that cluster) or `warn`.
    #[serde(default)]
    pub policies: Vec<PolicyRule>,
    /// Teams (or one instance of a team) a rule does not hold for, each with a reason and
    /// an optional expiry date. Written here only: a team's files cannot exempt anything.
    #[serde(default)]
    pub policy_exceptions: Vec<PolicyException>,

    /// The packages a team's folder may hold: Kustomize folders, `kind: Chart` references.
    /// Their output meets the team's rules like its plain manifests.
    #[serde(default)]
    pub team_packages: TeamPackages,
}

/// The health of every object of one group and kind, e.g. `{group: postgresql.cnpg.io,
/// kind: Cluster, readyWhen: "self.status.phase == 'Cluster in healthy state'"}`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthSpec {
    /// API group, empty (the default) for the core group.
    #[serde(default)]
    pub group: String,
    pub kind: String,
    /// CEL over the live object (`self`): true once it is ready.
    #[serde(default)]
    pub ready_when: Option<String>,
    /// CEL over the live object (`self`): true when waiting will not make it ready.
    #[serde(default)]
    pub failed_when: Option<String>,
    /// What the object reports while not ready or failed; may hold `${expression}`s over
    /// `self`.
    #[serde(default)]
    pub message: Option<String>,
}

/// `spec.rollout`: ordered stages of clusters. A commit reaches a team's units in a
/// stage only once that team's units in every earlier stage are Synced and healthy at
/// that commit for their stage's soak time. Clusters in no stage take a commit at once.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    #[serde(default)]
    pub stages: Vec<StageSpec>,
}

/// One rollout stage, e.g. `{name: staging, clusters: {names: [staging]}, soak: 10m}`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub name: String,
    /// The stage's clusters, by name or by labels; a cluster is in one stage at most.
    pub clusters: ClusterSelector,
    /// How long the stage's units stay Synced and healthy at a commit before the next
    /// stage gets it: `30s`, `10m`, `1h 30m`. None (the default) is no wait.
    #[serde(default)]
    pub soak: Option<String>,
}

/// Which of the daemon's age keys (named in the daemon config's `decryption.keys`)
/// decrypts each team's SOPS-encrypted files. A team without an entry has no key: an
/// encrypted file in its folder fails its render. A key decrypts only the files of the
/// teams it is given to here, whatever else the daemon holds.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecryptionSpec {
    /// Team name → key name, e.g. `{payments: payments-age}`.
    #[serde(default)]
    pub teams: BTreeMap<String, String>,
}

/// One platform rule, e.g. images only from the company registry.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyRule {
    /// Stable name, shown in every diagnostic as `policy/<id>`.
    pub id: String,
    /// Which objects it checks; empty matches every object of every team.
    #[serde(default, rename = "match")]
    pub matches: PolicyMatch,
    /// CEL that must be true for the object to pass, over `object` (the rendered object),
    /// `team` (its name), `cluster` (`name`, `labels`) and `instance` (`kind`, `name`,
    /// `spec` on that cluster; null for a plain manifest).
    pub expression: String,
    /// Where in the object the offending value sits (`spec.replicas`,
    /// `spec.template.spec.containers[*].image`): the diagnostic points at the line of the
    /// team's files that wrote it. Without it, the first `object.` path of the expression.
    #[serde(default)]
    pub field_path: Option<String>,
    /// What the team reads; `${expression}` is filled from the same variables.
    pub message: String,
    /// `deny` (default) or `warn`.
    #[serde(default)]
    pub action: PolicyAction,
}

/// What a broken rule does.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Deserialize,
    Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PolicyAction {
    /// The team fails to render on that cluster: nothing of it is applied or pruned there.
    #[default]
    Deny,
    /// A diagnostic only.
    Warn,
}

/// The objects a rule checks: each list empty means any.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyMatch {
    #[serde(default)]
    pub kinds: Vec<GroupKind>,
    /// Clusters by name or labels; absent means every cluster.
    #[serde(default)]
    pub clusters: Option<ClusterSelector>,
    #[serde(default)]
    pub teams: Vec<String>,
}

/// A team (or one of its instances) exempted from a rule by the platform.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyException {
    /// The rule's id.
    pub policy: String,
    pub team: String,
    /// The name of one instance of a platform kind; absent exempts the whole team.
    #[serde(default)]
    pub instance: Option<String>,
    /// Why: required, for whoever reads the file later.
    pub reason: String,
    /// Last day (`YYYY-MM-DD`, UTC) the exception holds; from the day after, the rule
    /// applies again.
    #[serde(default)]
    pub expires: Option<String>,
}

/// One object the platform hands to a team although it exists without pontoon's labels,
/// e.g. `{kind: Namespace, name: monitoring, team: observability, reason: "..."}`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdoptSpec {
    /// API group, empty (the default) for the core group.
    #[serde(default)]
    pub group: String,
    pub kind: String,
    /// Empty (the default) for a cluster-scoped object such as a Namespace.
    #[serde(default)]
    pub namespace: String,
    pub name: String,
    /// The team that takes it over, on every cluster where it exists and the team runs.
    pub team: String,
    /// Why the platform hands it over: required, for whoever reads the file later.
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterDef {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Defaults {
    /// `correct` (default) or `report`.
    #[serde(default)]
    pub drift_mode: Option<DriftMode>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    /// Kinds teams may write as plain manifests, e.g. `{group: "", kind: ConfigMap}`.
    #[serde(default)]
    pub allowed_kinds: Vec<GroupKind>,
    #[serde(default)]
    pub prune: PruneSpec,
}

#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct GroupKind {
    #[serde(default)]
    pub group: String,
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PruneSpec {
    #[serde(default)]
    pub namespaces: bool,
    #[serde(default)]
    pub crds: bool,
    /// A sync deleting more than this share (0–1) of a unit's objects is held.
    #[serde(default = "default_max_share")]
    pub max_share: f64,
}

fn default_max_share() -> f64 {
    0.5
}

impl Default for PruneSpec {
    fn default() -> Self {
        PruneSpec {
            namespaces: false,
            crds: false,
            max_share: default_max_share(),
        }
    }
}

/// `teams/<team>/team.yaml`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Team {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: TeamSpec,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TeamSpec {
    /// People (users) who administer the team's namespaces.
    #[serde(default)]
    pub owners: Vec<String>,
    /// Namespaces the team owns on each of its clusters; the first is the default.
    pub namespaces: Vec<String>,
    pub clusters: ClusterSelector,
    /// ResourceQuota `hard` limits per namespace, e.g. `{cpu: "8", memory: 16Gi}`.
    #[serde(default)]
    pub quota: BTreeMap<String, String>,
    #[serde(default)]
    pub drift_mode: Option<DriftMode>,
    /// How the team's commits roll out across the platform's stages.
    #[serde(default)]
    pub rollout: TeamRollout,
    /// Receivers (by name, as the daemon's config defines them under
    /// `notifications.receivers`) told about this team's state changes, on top of the
    /// platform's. Names only: no URL or secret lives in the repo.
    #[serde(default)]
    pub notify: Vec<String>,
}

/// `spec.rollout` of a team.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TeamRollout {
    /// `true`: a commit reaches every cluster of the team at once, whatever the
    /// platform's rollout stages say.
    #[serde(default)]
    pub skip_stages: bool,
}

/// Clusters by name or by label.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSelector {
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// `kinds/<name>.yaml`: a platform abstraction.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Kind {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: KindSpec,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KindSpec {
    /// The parameters an instance's `spec` may set.
    #[serde(default)]
    pub parameters: BTreeMap<String, Param>,
    /// The objects each instance produces, as templates; may be empty when `chart`
    /// produces them.
    #[serde(default)]
    pub resources: Vec<ResourceTemplate>,

    /// Platform components (`components/<name>.yaml`) an instance of this kind needs:
    /// its objects on a cluster wait until every one of them is healthy there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,

    /// A Helm chart each instance also renders (beside `resources`, or instead of them):
    /// one release per instance, named after it, in its namespace, with values from CEL
    /// over the instance. Its objects meet the team's rules as the templates' objects do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<KindChart>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceTemplate {
    pub id: String,
    /// CEL condition; the resource is rendered only when it is true.
    #[serde(default)]
    pub include_when: Option<String>,
    /// A Kubernetes object whose strings may hold `${expression}`.
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub template: Value,
    /// CEL over the live object (`self`): true once it is ready. Comes before the
    /// platform's rule for its kind, the built-in rules and kstatus.
    #[serde(default)]
    pub ready_when: Option<String>,
    /// CEL over the live object (`self`): true when waiting will not make it ready.
    #[serde(default)]
    pub failed_when: Option<String>,
    /// What the object reports while not ready or failed; may hold `${expression}`s over
    /// `self`.
    #[serde(default)]
    pub health_message: Option<String>,

    /// Ids of other resources of this kind that must be applied and healthy before this
    /// one is applied (a migration Job before the Deployment that needs it). A resource
    /// `includeWhen` leaves out is nothing to wait for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
    Object,
    List,
}

/// One parameter of a kind.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Param {
    #[serde(rename = "type")]
    pub ty: ParamType,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub default: Option<Value>,
    #[serde(default, rename = "enum")]
    #[schemars(with = "Option<Vec<serde_json::Value>>")]
    pub one_of: Option<Vec<Value>>,
    #[serde(default)]
    pub minimum: Option<f64>,
    #[serde(default)]
    pub maximum: Option<f64>,
    /// Longest string or list accepted.
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Fields of an object parameter.
    #[serde(default)]
    pub properties: Option<BTreeMap<String, Param>>,
    /// The element of a list parameter.
    #[serde(default)]
    pub items: Option<Box<Param>>,
}

/// An instance of a kind, in a team's folder.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Instance {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    #[serde(default)]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub spec: Value,
    /// Per-cluster changes to `spec`, merged over it: `{prod: {replicas: 6}}`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Map<String, serde_json::Value>>")]
    pub overrides: BTreeMap<String, Value>,
    /// Limits the instance to some of the team's clusters.
    #[serde(default)]
    pub clusters: Option<ClusterSelector>,
    #[serde(default)]
    pub drift: Option<InstanceDrift>,

    /// Other instances of the same team, as `Kind/name` (`Database/ledger`), whose
    /// objects must all be applied and healthy before any object of this one is applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstanceDrift {
    #[serde(default)]
    pub mode: Option<DriftMode>,
    /// JSON pointers pontoon leaves alone, e.g. `/spec/replicas`.
    #[serde(default)]
    pub ignore_fields: Vec<String>,
}

/// JSON Schemas of the pontoon documents, for editors.
pub fn schemas() -> BTreeMap<&'static str, Value> {
    let mut out = BTreeMap::new();
    let mut put = |name, schema: schemars::Schema| {
        out.insert(name, schema.to_value());
    };
    put("platform.schema.json", schemars::schema_for!(Platform));
    put("team.schema.json", schemars::schema_for!(Team));
    put("kind.schema.json", schemars::schema_for!(Kind));
    put("instance.schema.json", schemars::schema_for!(Instance));
    put("chart.schema.json", schemars::schema_for!(ChartDoc));
    put("component.schema.json", schemars::schema_for!(Component));
    out
}
