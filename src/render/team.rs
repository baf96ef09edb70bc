//! One team's documents to its units. Every document in the team's folder is an instance
//! of a platform kind ([`super::instances`]) or a plain manifest ([`super::manifests`]);
//! each goes to the team's clusters. Then each cluster's unit gets the team's base
//! objects ([`super::base`]), and one object produced twice is refused, naming both
//! sources. A team with any error gets no unit at all.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::dependencies::TeamDependencies;
use super::kinds::Kinds;
use super::policies::Policies;
use super::policy_check::DebtByRule;
use super::secrets::{self, Decryption, TeamSecrets};
use super::teams::select_clusters;
use super::{autoscaling, base, is_manifest_file, packages, platform};
use crate::desired::{
    ClusterName, DesiredObject, Diagnostic, DriftMode, Expansions, NamespaceOwners, ObjectKey,
    SourceRef, TeamName, UnitComponents, UnitDesired, UnitId,
};
use crate::model::{self, API_VERSION, ClusterDef, Document, GroupKind, Platform, Team, diag};
use crate::sops::Plain;

/// What every team's render reads from the rest of the revision.
pub(super) struct RevisionContext<'a> {
    pub platform: &'a Platform,
    pub kinds: &'a Kinds,
    /// Who owns each namespace, as the claims were settled.
    pub namespace_owners: &'a NamespaceOwners,
    /// What `platform.yaml` hands over to which team.
    pub adoptions: &'a platform::Adoptions,
    /// `platform.yaml`'s health rules, by group and kind.
    pub health: &'a super::health::PlatformHealth,
    /// How the teams' SOPS files are decrypted.
    pub decryption: Decryption<'a>,
    /// The platform's rules and the exceptions that hold today.
    pub policies: &'a Policies,
    /// The teams' packages (charts, Kustomize folders) as they were expanded.
    pub expansions: &'a Expansions,
    /// The platform's components: what a Kind's `requires` may name.
    pub components: &'a super::components::Components,
}

/// A team that rendered: its units, less those a `deny` rule withholds, and the
/// diagnostics of what was denied (each about one cluster).
pub(super) struct TeamUnits {
    pub units: Vec<UnitDesired>,
    pub denied: Vec<Diagnostic>,
}

/// One team's render in progress: what it knows of the team, and what it has produced.
pub(super) struct TeamRender<'a> {
    pub revision: &'a RevisionContext<'a>,
    pub team_name: &'a TeamName,
    pub team: &'a Team,
    /// The platform's clusters the team selects.
    pub clusters: Vec<&'a ClusterDef>,
    /// How the team's objects treat drift unless an instance says otherwise.
    pub team_drift: DriftMode,
    /// Where an object that names no namespace goes: the team's first namespace.
    pub default_namespace: String,
    /// The kinds the platform lets teams write by hand.
    pub allowed_kinds: BTreeSet<&'a GroupKind>,
    /// The objects from the team's files, by cluster name, in the order produced.
    pub objects_by_cluster: BTreeMap<String, Vec<DesiredObject>>,
    /// The (group, kind) of every object from the team's files: the team's Role grants
    /// its identity these and nothing else.
    pub kinds_used: BTreeSet<(String, String)>,
    /// Every text decrypted from the team's SOPS files: replaced in its diagnostics.
    pub secrets: Vec<Plain>,
    /// What the team's instances and their resources wait for (`dependsOn`).
    pub dependencies: TeamDependencies,
    /// By cluster name, the components each object waits for (its Kind's `requires`).
    pub requires: BTreeMap<String, BTreeMap<ObjectKey, Vec<String>>>,
    pub errors: Vec<Diagnostic>,
    /// Warnings fail nothing: they go straight to the revision's diagnostics.
    pub warnings: &'a mut Vec<Diagnostic>,
    /// Broken `deny` rules, each about one cluster: the team's unit there is withheld.
    pub denied: Vec<Diagnostic>,
    /// What the team's objects owe each rule, added to the revision's.
    pub policy_debt: &'a mut DebtByRule,
}

/// Renders one team whose team.yaml read clean: its units (less those a rule denies), or
/// every error it has.
pub(super) fn render_team(
    revision: &RevisionContext,
    team_name: &TeamName,
    team: &Team,
    files: &[(&String, &Vec<u8>)],
    warnings: &mut Vec<Diagnostic>,
    policy_debt: &mut DebtByRule,
) -> Result<TeamUnits, Vec<Diagnostic>> {
    let mut team_render = TeamRender::new(revision, team_name, team, warnings, policy_debt);
    let packages = packages::scan_team(team_name, files);
    for (path, bytes) in files {
        if is_manifest_file(path)
            && !path.ends_with("/team.yaml")
            && !packages.package_files.contains(*path)
        {
            team_render.add_file(path, bytes);
        }
    }
    team_render.add_packages(packages);
    team_render.into_units()
}

impl<'a> TeamRender<'a> {
    fn new(
        revision: &'a RevisionContext<'a>,
        team_name: &'a TeamName,
        team: &'a Team,
        warnings: &'a mut Vec<Diagnostic>,
        policy_debt: &'a mut DebtByRule,
    ) -> Self {
        let platform = revision.platform;
        let mut errors = Vec::new();
        let clusters = select_clusters(platform, &team.spec.clusters);
        if clusters.is_empty() {
            errors.push(diag(
                &format!("teams/{team_name}/team.yaml"),
                1,
                1,
                Some(team_name),
                "unknown-cluster",
                "spec.clusters selects no cluster of platform.yaml",
            ));
        }
        TeamRender {
            revision,
            team_name,
            team,
            clusters,
            team_drift: team
                .spec
                .drift_mode
                .or(platform.spec.defaults.drift_mode)
                .unwrap_or_default(),
            default_namespace: team.spec.namespaces.first().cloned().unwrap_or_default(),
            allowed_kinds: platform.spec.policy.allowed_kinds.iter().collect(),
            objects_by_cluster: BTreeMap::new(),
            kinds_used: BTreeSet::new(),
            secrets: Vec::new(),
            dependencies: TeamDependencies::default(),
            requires: BTreeMap::new(),
            errors,
            warnings,
            denied: Vec::new(),
            policy_debt,
        }
    }

    /// Renders every document of one file of the team's folder.
    fn add_file(&mut self, path: &str, bytes: &[u8]) {
        let mut docs = model::documents(path, bytes, Some(self.team_name), &mut self.errors);
        if docs.iter().any(|d| crate::sops::is_encrypted(&d.value)) {
            let secrets = TeamSecrets {
                decryption: self.revision.decryption,
                platform: self.revision.platform,
                team: self.team_name,
            };
            docs = secrets.decrypt(
                path,
                docs,
                &mut self.errors,
                self.warnings,
                &mut self.secrets,
            );
        }
        for doc in docs {
            self.add_document(path, &doc);
        }
    }

    /// Renders one document: an instance, a plain manifest, or a `List` whose items are
    /// each rendered as a document of their own (as kubectl applies them).
    fn add_document(&mut self, path: &str, doc: &Document) {
        let (api_version, kind) = type_of(doc);
        if api_version.is_empty() || kind.is_empty() {
            self.errors.push(doc.diag_at(
                "",
                Some(self.team_name),
                "schema",
                "every document needs apiVersion and kind",
            ));
        } else if let Some(items) = doc.list_items() {
            for item in &items {
                self.add_document(path, item);
            }
        } else if packages::is_chart_document(doc) {
            self.add_chart(path, doc);
        } else if api_version == API_VERSION {
            self.add_instance(path, doc, &kind);
        } else {
            self.add_manifest(path, doc, &api_version, &kind);
        }
    }

    /// One unit per cluster the team selects but those where a `deny` rule is broken, or
    /// every error of the team (denials included) when it has any other.
    fn into_units(mut self) -> Result<TeamUnits, Vec<Diagnostic>> {
        self.dependencies.check(self.team_name, &mut self.errors);
        let clusters = std::mem::take(&mut self.clusters);
        let units: Vec<UnitDesired> = clusters.iter().map(|c| self.unit_on(c)).collect();
        // A policy's message may quote the object it judged: decrypted values included.
        secrets::redact(&mut self.errors, &self.secrets);
        secrets::redact(&mut self.denied, &self.secrets);
        secrets::redact(self.warnings, &self.secrets);
        if !self.errors.is_empty() {
            self.errors.append(&mut self.denied);
            return Err(self.errors);
        }
        let denied = &self.denied;
        let units = units
            .into_iter()
            .filter(|u| !denied.iter().any(|d| d.concerns(&u.unit.cluster.0)))
            .collect();
        Ok(TeamUnits {
            units,
            denied: self.denied,
        })
    }

    /// The team's unit on one cluster: its base objects and its files' objects there,
    /// sorted by key. The same object twice is an error naming both sources, never a
    /// silent winner.
    fn unit_on(&mut self, cluster: &ClusterDef) -> UnitDesired {
        let mut objects =
            base::base_objects(self.team, self.team_name, &self.kinds_used, self.team_drift);
        objects.extend(
            self.objects_by_cluster
                .remove(&cluster.name)
                .unwrap_or_default(),
        );
        // Each key is read once from its manifest's text, for every check and the sort.
        let keys: Vec<Option<ObjectKey>> = objects.iter().map(DesiredObject::key).collect();
        let mut first_source: BTreeMap<&ObjectKey, &SourceRef> = BTreeMap::new();
        for (o, key) in objects.iter().zip(&keys) {
            let Some(key) = key else {
                self.errors.push(diag(
                    &o.source.file,
                    o.source.line,
                    1,
                    Some(self.team_name),
                    "schema",
                    "object has no metadata.name",
                ));
                continue;
            };
            if let Some(first) = first_source.get(key) {
                self.errors.push(
                    diag(
                        &o.source.file,
                        o.source.line,
                        1,
                        Some(self.team_name),
                        "duplicate-object",
                        format!("{key} on {} is also produced by {first}", cluster.name),
                    )
                    .on_cluster(&cluster.name),
                );
            } else {
                first_source.insert(key, &o.source);
            }
        }
        for warning in autoscaling::replicas_under_autoscaler(&objects, &keys, self.team_name) {
            if !self.warnings.contains(&warning) {
                self.warnings.push(warning);
            }
        }
        let mut keyed: Vec<_> = keys.into_iter().zip(objects).collect();
        keyed.sort_by(|(a, _), (b, _)| a.cmp(b));
        let objects = keyed.into_iter().map(|(_, o)| o).collect();
        UnitDesired {
            unit: UnitId {
                team: self.team_name.clone(),
                cluster: ClusterName(cluster.name.clone()),
            },
            namespaces: self.team.spec.namespaces.clone(),
            objects,
            prune: platform::prune_policy(self.revision.platform),
            adopt: self
                .revision
                .adoptions
                .iter()
                .filter(|(team, _)| team == self.team_name)
                .map(|(_, a)| a.clone())
                .collect(),
            dependencies: self.dependencies.on_cluster(&cluster.name),
            components: UnitComponents {
                requires: self.requires.remove(&cluster.name).unwrap_or_default(),
                provides: BTreeMap::new(),
            },
        }
    }
}

/// The apiVersion and kind a document names (empty when it names none).
fn type_of(doc: &Document) -> (String, String) {
    let field = |name: &str| {
        doc.value
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    (field("apiVersion"), field("kind"))
}
