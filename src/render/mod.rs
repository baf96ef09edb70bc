//! Rendering: a pure function from the files of one revision to the desired objects of
//! every (team, cluster) unit, with diagnostics. No I/O, no clock, no environment: the
//! same files always give the same output, byte for byte.
//!
//! One team's mistakes never stop another team: every error is recorded against the team
//! whose files caused it, and a team with any error gets no units at all (its clusters
//! keep what they run). Only a broken `platform.yaml` stops everything.

pub mod expr;
pub mod schema;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::desired::*;
use crate::model::{
    self, API_VERSION, ClusterSelector, Document, GroupKind, Instance, Platform, Team, diag,
};

/// The files of a revision: path (relative, `/`-separated) → content.
pub type Files = BTreeMap<String, Vec<u8>>;

/// Kinds that are cluster-scoped in Kubernetes; a team may never produce them.
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("storage.k8s.io", "StorageClass"),
    ("scheduling.k8s.io", "PriorityClass"),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
];

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

fn is_cluster_scoped(group: &str, kind: &str) -> bool {
    CLUSTER_SCOPED
        .iter()
        .any(|(g, k)| *g == group && *k == kind)
}

/// Kubernetes' plural for a kind (what RBAC rules name).
pub fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if lower.ends_with("y") && !lower.ends_with("ey") {
        format!("{}ies", &lower[..lower.len() - 1])
    } else if lower.ends_with('s') || lower.ends_with('x') || lower.ends_with("ch") {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

struct Ctx<'a> {
    platform: &'a Platform,
    kinds: &'a BTreeMap<String, (Document, model::Kind)>,
    namespace_owner: &'a BTreeMap<String, TeamName>,
}

/// Renders a revision on its own, with nothing known of earlier ones: a namespace that
/// several teams claim is refused to all of them.
pub fn render(files: &Files, revision: &str) -> DesiredState {
    render_after(files, revision, &NamespaceOwners::new())
}

/// Renders a revision that follows one whose render gave each namespace the owner in
/// `earlier` (the daemon's last render, or what the clusters' Namespaces say). A team
/// that claims a namespace another team already holds is the one that fails: a new team
/// copying an existing team's namespace into its team.yaml stops itself, not the team
/// that was there first.
pub fn render_after(files: &Files, revision: &str, earlier: &NamespaceOwners) -> DesiredState {
    let mut state = DesiredState {
        revision: revision.to_owned(),
        // Kept as they were when platform.yaml is broken and nothing renders.
        namespace_owners: earlier.clone(),
        ..DesiredState::default()
    };
    let mut diags = Vec::new();

    // platform.yaml
    let platform = match files.get("platform.yaml") {
        None => {
            diags.push(diag(
                "platform.yaml",
                1,
                1,
                None,
                "missing-platform",
                "the repo has no platform.yaml",
            ));
            None
        }
        Some(bytes) => {
            let docs = model::documents("platform.yaml", bytes, None, &mut diags);
            match docs.as_slice() {
                [doc] => match model::typed::<Platform>(doc, None) {
                    Ok(p) => check_platform(doc, p, &mut diags),
                    Err(d) => {
                        diags.push(*d);
                        None
                    }
                },
                [] => None,
                [_, second, ..] => {
                    diags.push(diag(
                        "platform.yaml",
                        second.line,
                        1,
                        None,
                        "parse",
                        "platform.yaml holds exactly one document",
                    ));
                    None
                }
            }
        }
    };
    let Some(platform) = platform else {
        state.platform_failed = true;
        finish(&mut state, diags);
        return state;
    };
    state.default_prune = PrunePolicy {
        namespaces: platform.spec.policy.prune.namespaces,
        crds: platform.spec.policy.prune.crds,
        max_share: platform.spec.policy.prune.max_share,
    };

    // kinds/*.yaml. A broken kind fails only the teams that use it.
    let mut kinds: BTreeMap<String, (Document, model::Kind)> = BTreeMap::new();
    let mut broken_kinds: BTreeMap<String, Diagnostic> = BTreeMap::new();
    for (path, bytes) in files.range("kinds/".to_owned()..) {
        if !path.starts_with("kinds/") {
            break;
        }
        if !is_yaml(path) {
            continue;
        }
        let mut kd = Vec::new();
        for doc in model::documents(path, bytes, None, &mut kd) {
            match model::typed::<model::Kind>(&doc, None) {
                Ok(k) if k.kind != "Kind" || k.api_version != API_VERSION => kd.push(doc.diag_at(
                    "kind",
                    None,
                    "schema",
                    format!("files under kinds/ hold `apiVersion: {API_VERSION}`, `kind: Kind` documents"),
                )),
                Ok(k) => {
                    let errs = schema::check_kind(&doc, &k);
                    if let Some(first) = errs.first() {
                        broken_kinds.insert(k.metadata.name.clone(), first.clone());
                        kd.extend(errs);
                    } else if let Some((other, _)) = kinds.get(&k.metadata.name) {
                        kd.push(doc.diag_at(
                            "metadata.name",
                            None,
                            "duplicate-kind",
                            format!("kind {} is also defined in {}:{}", k.metadata.name, other.file, other.line),
                        ));
                    } else {
                        kinds.insert(k.metadata.name.clone(), (doc, k));
                    }
                }
                Err(d) => kd.push(*d),
            }
        }
        // A kind file we could not read at all still marks its name as broken when the
        // name is the file's stem, so teams using it fail with a pointer here.
        if let (Some(first), Some(stem)) = (
            kd.first(),
            path.strip_prefix("kinds/")
                .and_then(|p| p.rsplit_once('.'))
                .map(|(s, _)| s),
        ) {
            broken_kinds
                .entry(stem.to_ascii_lowercase())
                .or_insert_with(|| first.clone());
        }
        diags.extend(kd);
    }

    // teams/<team>/…
    let mut team_files: BTreeMap<String, Vec<(&String, &Vec<u8>)>> = BTreeMap::new();
    for (path, bytes) in files.range("teams/".to_owned()..) {
        let Some(rest) = path.strip_prefix("teams/") else {
            break;
        };
        if let Some((team, _)) = rest.split_once('/') {
            team_files
                .entry(team.to_owned())
                .or_default()
                .push((path, bytes));
        }
    }

    // First pass: every team's team.yaml, to know who owns which namespace.
    let mut teams: BTreeMap<String, Result<(Document, Team), Vec<Diagnostic>>> = BTreeMap::new();
    for (name, fs) in &team_files {
        let tn = TeamName(name.clone());
        let team_yaml = format!("teams/{name}/team.yaml");
        let parsed = match fs.iter().find(|(p, _)| **p == team_yaml) {
            None => Err(vec![diag(
                &team_yaml,
                1,
                1,
                Some(&tn),
                "missing-team-file",
                format!("team folder teams/{name}/ has no team.yaml"),
            )]),
            Some((_, bytes)) => {
                let mut d = Vec::new();
                let docs = model::documents(&team_yaml, bytes, Some(&tn), &mut d);
                match (docs.first(), d.is_empty()) {
                    (Some(doc), true) => match model::typed::<Team>(doc, Some(&tn)) {
                        Ok(t) => {
                            let errs = check_team(doc, &t, name, &platform);
                            if errs.is_empty() {
                                Ok((doc.clone(), t))
                            } else {
                                Err(errs)
                            }
                        }
                        Err(e) => Err(vec![*e]),
                    },
                    (None, true) => Err(vec![diag(
                        &team_yaml,
                        1,
                        1,
                        Some(&tn),
                        "schema",
                        "team.yaml is empty",
                    )]),
                    (_, false) => Err(d),
                }
            }
        };
        teams.insert(name.clone(), parsed);
    }
    // The clusters of every team whose team.yaml reads, so that a team failing later is
    // reported where it runs.
    let team_clusters: BTreeMap<String, Vec<ClusterName>> = teams
        .iter()
        .filter_map(|(name, t)| {
            let (_, team) = t.as_ref().ok()?;
            let on = select_clusters(&platform, &team.spec.clusters)
                .into_iter()
                .map(|c| ClusterName(c.name.clone()))
                .collect();
            Some((name.clone(), on))
        })
        .collect();
    let namespace_owner = claim_namespaces(&mut teams, earlier);
    state.namespace_owners = namespace_owner.clone();

    let ctx = Ctx {
        platform: &platform,
        kinds: &kinds,
        namespace_owner: &namespace_owner,
    };
    for (name, parsed) in teams {
        let tn = TeamName(name.clone());
        let result = match parsed {
            Err(errs) => Err(errs),
            Ok((_, team)) => render_team(
                &ctx,
                &tn,
                &team,
                &team_files[&name],
                &broken_kinds,
                &mut diags,
            ),
        };
        match result {
            Ok(units) => {
                for u in units {
                    state.units.insert(u.unit.clone(), u);
                }
            }
            Err(errs) => {
                diags.extend(errs.iter().cloned());
                if let Some(on) = team_clusters.get(&name).filter(|on| !on.is_empty()) {
                    state.failed_team_clusters.insert(tn.clone(), on.clone());
                }
                state.failed_teams.insert(tn, errs);
            }
        }
    }
    finish(&mut state, diags);
    state
}

/// Decides which team owns each namespace the teams claim, and fails every team that
/// claims one it does not get. A namespace goes to its earlier owner if that team still
/// claims it (or its team.yaml does not parse, so nobody can tell), else to its only
/// claimant; with several claimants and no earlier owner, to nobody.
fn claim_namespaces(
    teams: &mut BTreeMap<String, Result<(Document, Team), Vec<Diagnostic>>>,
    earlier: &NamespaceOwners,
) -> NamespaceOwners {
    let mut claims: BTreeMap<&String, Vec<(&String, usize)>> = BTreeMap::new();
    for (name, t) in teams.iter() {
        if let Ok((_, team)) = t {
            for (i, ns) in team.spec.namespaces.iter().enumerate() {
                claims.entry(ns).or_default().push((name, i));
            }
        }
    }
    let unreadable = |team: &TeamName| matches!(teams.get(&team.0), Some(Err(_)));
    let mut owners = NamespaceOwners::new();
    // team -> (index in spec.namespaces, message)
    let mut refused: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
    for (ns, claimants) in &claims {
        let held = earlier
            .get(*ns)
            .filter(|t| unreadable(t) || claimants.iter().any(|(n, _)| **n == t.0));
        let owner = match (held, claimants.as_slice()) {
            (Some(t), _) => Some(t.clone()),
            (None, [(only, _)]) => Some(TeamName((*only).clone())),
            (None, _) => None,
        };
        for (name, i) in claimants {
            let message = match &owner {
                Some(o) if o.0 == **name => continue,
                Some(o) => format!(
                    "namespace {ns} belongs to team {o}; a team may not claim another team's namespace"
                ),
                None => format!(
                    "namespace {ns} is claimed by teams {}; a namespace belongs to one team, and no earlier revision says which",
                    claimants
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            };
            refused
                .entry((*name).clone())
                .or_default()
                .push((*i, message));
        }
        if let Some(o) = owner {
            owners.insert((*ns).clone(), o);
        }
    }
    // A team whose team.yaml does not parse keeps what it held.
    for (ns, t) in earlier {
        if unreadable(t) {
            owners.entry(ns.clone()).or_insert_with(|| t.clone());
        }
    }
    for (name, problems) in refused {
        let Some(t) = teams.get_mut(&name) else {
            continue;
        };
        let Ok((doc, _)) = &*t else { continue };
        let errs = problems
            .into_iter()
            .map(|(i, message)| {
                doc.diag_at(
                    &format!("spec.namespaces[{i}]"),
                    Some(&TeamName(name.clone())),
                    "namespace-claimed",
                    message,
                )
            })
            .collect();
        *t = Err(errs);
    }
    owners
}

fn finish(state: &mut DesiredState, mut diags: Vec<Diagnostic>) {
    diags.sort();
    diags.dedup();
    state.diagnostics = diags;
}

fn is_yaml(path: &str) -> bool {
    path.ends_with(".yaml") || path.ends_with(".yml")
}

fn check_platform(doc: &Document, p: Platform, diags: &mut Vec<Diagnostic>) -> Option<Platform> {
    let before = diags.len();
    if p.api_version != API_VERSION || p.kind != "Platform" {
        diags.push(doc.diag_at(
            "kind",
            None,
            "schema",
            format!("platform.yaml must be `apiVersion: {API_VERSION}`, `kind: Platform`"),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, c) in p.spec.clusters.iter().enumerate() {
        let field = format!("spec.clusters[{i}].name");
        if !is_dns_label(&c.name) {
            diags.push(doc.diag_at(
                &field,
                None,
                "invalid-name",
                format!("{:?} is not a valid cluster name", c.name),
            ));
        }
        if !seen.insert(&c.name) {
            diags.push(doc.diag_at(
                &field,
                None,
                "duplicate-cluster",
                format!("cluster {} is listed twice", c.name),
            ));
        }
    }
    let share = p.spec.policy.prune.max_share;
    if !(0.0..=1.0).contains(&share) {
        diags.push(doc.diag_at(
            "spec.policy.prune.maxShare",
            None,
            "schema",
            format!("policy.prune.maxShare must be between 0 and 1, not {share}"),
        ));
    }
    (diags.len() == before).then_some(p)
}

fn check_team(doc: &Document, t: &Team, folder: &str, platform: &Platform) -> Vec<Diagnostic> {
    let tn = TeamName(folder.to_owned());
    let mut errs = Vec::new();
    let mut e =
        |field: &str, rule: &str, msg: String| errs.push(doc.diag_at(field, Some(&tn), rule, msg));
    if t.api_version != API_VERSION || t.kind != "Team" {
        e(
            "kind",
            "schema",
            format!("team.yaml must be `apiVersion: {API_VERSION}`, `kind: Team`"),
        );
    }
    if t.metadata.name != folder {
        e(
            "metadata.name",
            "team-name",
            format!(
                "metadata.name is {:?} but the folder is teams/{folder}/",
                t.metadata.name
            ),
        );
    }
    if !is_dns_label(folder) {
        e(
            "metadata.name",
            "invalid-name",
            format!("{folder:?} is not a valid team name (lowercase letters, digits, '-')"),
        );
    }
    if t.spec.namespaces.is_empty() {
        e(
            "spec.namespaces",
            "schema",
            "spec.namespaces needs at least one namespace".to_owned(),
        );
    }
    for (i, ns) in t.spec.namespaces.iter().enumerate() {
        if !is_dns_label(ns) {
            e(
                &format!("spec.namespaces[{i}]"),
                "invalid-name",
                format!("{ns:?} is not a valid namespace name"),
            );
        } else if let Some(owner) = reserved_namespace(ns) {
            e(
                &format!("spec.namespaces[{i}]"),
                "namespace-reserved",
                format!("namespace {ns} belongs to {owner}; a team cannot own it"),
            );
        } else if let Some(first) = t.spec.namespaces[..i].iter().position(|n| n == ns) {
            e(
                &format!("spec.namespaces[{i}]"),
                "schema",
                format!("namespace {ns} is listed twice (first at spec.namespaces[{first}])"),
            );
        }
    }
    for (i, c) in t.spec.clusters.names.iter().enumerate() {
        if !platform.spec.clusters.iter().any(|d| &d.name == c) {
            e(
                &format!("spec.clusters.names[{i}]"),
                "unknown-cluster",
                format!(
                    "cluster {c} is not defined in platform.yaml{}",
                    model::did_you_mean(c, platform.spec.clusters.iter().map(|d| d.name.as_str()))
                ),
            );
        }
    }
    errs
}

/// Namespaces no team may own: a team's base gives its owners `admin` there, isolates it
/// with a NetworkPolicy and puts a quota on it. Who they belong to, or `None`.
fn reserved_namespace(ns: &str) -> Option<&'static str> {
    if ns == "default" || ns.starts_with("kube-") {
        Some("Kubernetes itself")
    } else if ns == DEFAULT_NAMESPACE {
        Some("pontoon (its inventories and lease)")
    } else {
        None
    }
}

fn select_clusters<'a>(
    platform: &'a Platform,
    sel: &ClusterSelector,
) -> Vec<&'a model::ClusterDef> {
    platform
        .spec
        .clusters
        .iter()
        .filter(|c| {
            sel.names.contains(&c.name)
                || (!sel.match_labels.is_empty()
                    && sel
                        .match_labels
                        .iter()
                        .all(|(k, v)| c.labels.get(k) == Some(v)))
        })
        .collect()
}

/// Labels and annotations every object carries.
fn stamp(object: &mut Value, team: &TeamName, source: &SourceRef) {
    let Some(obj) = object.as_object_mut() else {
        return;
    };
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    let labels = meta
        .as_object_mut()
        .map(|m| m.entry("labels").or_insert_with(|| json!({})));
    if let Some(labels) = labels.and_then(Value::as_object_mut) {
        labels.insert(LABEL_MANAGED_BY.to_owned(), json!(MANAGED_BY_VALUE));
        labels.insert(LABEL_TEAM.to_owned(), json!(team.0));
    }
    let annotations = meta
        .as_object_mut()
        .map(|m| m.entry("annotations").or_insert_with(|| json!({})));
    if let Some(a) = annotations.and_then(Value::as_object_mut) {
        a.insert(ANNOTATION_SOURCE.to_owned(), json!(source.to_string()));
    }
}

fn render_team(
    ctx: &Ctx,
    tn: &TeamName,
    team: &Team,
    files: &[(&String, &Vec<u8>)],
    broken_kinds: &BTreeMap<String, Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Vec<UnitDesired>, Vec<Diagnostic>> {
    let mut errs = Vec::new();
    let clusters = select_clusters(ctx.platform, &team.spec.clusters);
    if clusters.is_empty() {
        errs.push(diag(
            &format!("teams/{tn}/team.yaml"),
            1,
            1,
            Some(tn),
            "unknown-cluster",
            "spec.clusters selects no cluster of platform.yaml",
        ));
    }
    let team_drift = team
        .spec
        .drift_mode
        .or(ctx.platform.spec.defaults.drift_mode)
        .unwrap_or_default();
    let default_ns = team.spec.namespaces.first().cloned().unwrap_or_default();
    let allowed: BTreeSet<&GroupKind> = ctx.platform.spec.policy.allowed_kinds.iter().collect();

    // Objects per cluster name.
    let mut per_cluster: BTreeMap<String, Vec<DesiredObject>> = BTreeMap::new();
    let mut kinds_used: BTreeSet<(String, String)> = BTreeSet::new();
    for (path, bytes) in files {
        if !is_yaml(path) || path.ends_with("/team.yaml") {
            continue;
        }
        for doc in model::documents(path, bytes, Some(tn), &mut errs) {
            let api_version = doc
                .value
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let kind = doc
                .value
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if api_version.is_empty() || kind.is_empty() {
                errs.push(diag(
                    path,
                    doc.line,
                    1,
                    Some(tn),
                    "schema",
                    "every document needs apiVersion and kind",
                ));
                continue;
            }
            if api_version == API_VERSION {
                // An instance of a platform kind.
                if let Some(d) = broken_kinds.get(&kind) {
                    errs.push(diag(
                        path,
                        doc.line,
                        1,
                        Some(tn),
                        "broken-kind",
                        format!("kind {kind} is broken: {d}"),
                    ));
                    continue;
                }
                if let Some(d) = broken_kinds.get(&kind.to_ascii_lowercase()) {
                    errs.push(diag(
                        path,
                        doc.line,
                        1,
                        Some(tn),
                        "broken-kind",
                        format!("kind {kind} is broken: {d}"),
                    ));
                    continue;
                }
                let Some((_, k)) = ctx.kinds.get(&kind) else {
                    let known: Vec<&str> = ctx.kinds.keys().map(String::as_str).collect();
                    errs.push(doc.diag_at(
                        "kind",
                        Some(tn),
                        "unknown-kind",
                        format!(
                            "kind {kind} is not defined under kinds/{} (known: {})",
                            model::did_you_mean(&kind, known.iter().copied()),
                            known.join(", ")
                        ),
                    ));
                    continue;
                };
                let inst = match model::typed::<Instance>(&doc, Some(tn)) {
                    Ok(i) => i,
                    Err(d) => {
                        errs.push(*d);
                        continue;
                    }
                };
                let inst_clusters = match &inst.clusters {
                    Some(sel) => select_clusters(ctx.platform, sel),
                    None => clusters.clone(),
                };
                for cname in inst.overrides.keys() {
                    if clusters.iter().any(|c| &c.name == cname) {
                        continue;
                    }
                    let field = format!("overrides.{cname}");
                    if ctx.platform.spec.clusters.iter().any(|c| &c.name == cname) {
                        // A cluster the team left (or not yet joined): the override waits
                        // harmlessly, and leaving a cluster takes one line, not a sweep.
                        let mut w = doc.diag_at(
                            &field,
                            Some(tn),
                            "unused-override",
                            format!(
                                "override for cluster {cname}, which the team does not target; it is ignored"
                            ),
                        );
                        w.severity = Severity::Warning;
                        warnings.push(w);
                    } else {
                        errs.push(doc.diag_at(
                            &field,
                            Some(tn),
                            "unknown-cluster",
                            format!(
                                "override for cluster {cname}, which platform.yaml does not define{}",
                                model::did_you_mean(
                                    cname,
                                    ctx.platform.spec.clusters.iter().map(|c| c.name.as_str())
                                )
                            ),
                        ));
                    }
                }
                let ns = inst
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| default_ns.clone());
                let drift = inst
                    .drift
                    .as_ref()
                    .and_then(|d| d.mode)
                    .unwrap_or(team_drift);
                let ignore = inst
                    .drift
                    .as_ref()
                    .map(|d| d.ignore_fields.clone())
                    .unwrap_or_default();
                for c in inst_clusters {
                    if !clusters.iter().any(|tc| tc.name == c.name) {
                        continue;
                    }
                    let mut spec = inst.spec.clone();
                    if let Some(o) = inst.overrides.get(&c.name) {
                        merge(&mut spec, o);
                    }
                    let spec = match schema::validate(&k.spec.parameters, &spec) {
                        Ok(s) => s,
                        Err(problems) => {
                            let fields = doc.fields();
                            for p in problems {
                                // The value checked is the cluster's override where there
                                // is one, else the spec's.
                                let rest = p.field.strip_prefix("spec").unwrap_or(&p.field);
                                let (line, column) = fields
                                    .find(&format!("overrides.{}{rest}", c.name))
                                    .unwrap_or_else(|| fields.position_of(&p.field));
                                errs.push(
                                    diag(
                                        path,
                                        line,
                                        column,
                                        Some(tn),
                                        "invalid-spec",
                                        format!(
                                            "{kind} {} on {}: {}",
                                            inst.metadata.name, c.name, p.message
                                        ),
                                    )
                                    .on_cluster(&c.name),
                                );
                            }
                            continue;
                        }
                    };
                    let expression_error = |message: String| {
                        diag(path, doc.line, 1, Some(tn), "expression", message).on_cluster(&c.name)
                    };
                    let cluster_v = json!({"name": c.name, "labels": c.labels});
                    // `namespace` is a reserved word in CEL: expressions read it as
                    // `metadata.namespace` (and the name as `name` or `metadata.name`).
                    let (name_v, team_v) = (json!(inst.metadata.name), json!(tn.0));
                    let meta_v = json!({"name": inst.metadata.name, "namespace": ns});
                    let scope = expr::Scope::new(&[
                        ("spec", &spec),
                        ("name", &name_v),
                        ("metadata", &meta_v),
                        ("team", &team_v),
                        ("cluster", &cluster_v),
                    ]);
                    for res in &k.spec.resources {
                        if let Some(cond) = &res.include_when {
                            match scope.condition(cond) {
                                Ok(true) => {}
                                Ok(false) => continue,
                                Err(m) => {
                                    errs.push(expression_error(format!(
                                        "kind {kind}, resource {} on {}: includeWhen: {m}",
                                        res.id, c.name
                                    )));
                                    continue;
                                }
                            }
                        }
                        let mut object = match scope.render(&res.template) {
                            Ok(o) => o,
                            Err(m) => {
                                errs.push(expression_error(format!(
                                    "kind {kind}, resource {} on {}: {m}",
                                    res.id, c.name
                                )));
                                continue;
                            }
                        };
                        let source = SourceRef {
                            file: path.to_string(),
                            line: doc.line,
                        };
                        match place(&mut object, &ns, tn, ctx, &doc) {
                            Ok(group_kind) => {
                                kinds_used.insert(group_kind);
                            }
                            Err(d) => {
                                errs.push(*d);
                                continue;
                            }
                        }
                        stamp(&mut object, tn, &source);
                        per_cluster
                            .entry(c.name.clone())
                            .or_default()
                            .push(DesiredObject {
                                object: Arc::new(object),
                                source,
                                applier: Applier::Team,
                                drift,
                                ignore_fields: ignore.clone(),
                            });
                    }
                }
            } else {
                // A plain manifest, within the team's boundary.
                if !allowed.contains(&GroupKind {
                    group: group_of(&api_version).to_owned(),
                    kind: kind.clone(),
                }) {
                    let allowed_list: Vec<String> = allowed
                        .iter()
                        .map(|g| {
                            if g.group.is_empty() {
                                g.kind.clone()
                            } else {
                                format!("{}.{}", g.kind, g.group)
                            }
                        })
                        .collect();
                    errs.push(doc.diag_at("kind", Some(tn), "kind-not-allowed", format!(
                        "teams may not write {kind} ({api_version}) by hand; the platform allows: {}",
                        if allowed_list.is_empty() { "nothing".to_owned() } else { allowed_list.join(", ") }
                    )));
                    continue;
                }
                let mut object = doc.value.clone();
                match place(&mut object, &default_ns, tn, ctx, &doc) {
                    Ok(group_kind) => {
                        kinds_used.insert(group_kind);
                    }
                    Err(d) => {
                        errs.push(*d);
                        continue;
                    }
                }
                let source = SourceRef {
                    file: path.to_string(),
                    line: doc.line,
                };
                stamp(&mut object, tn, &source);
                // One manifest, shared by every cluster it goes to.
                let object = Arc::new(object);
                for c in &clusters {
                    per_cluster
                        .entry(c.name.clone())
                        .or_default()
                        .push(DesiredObject {
                            object: object.clone(),
                            source: source.clone(),
                            applier: Applier::Team,
                            drift: team_drift,
                            ignore_fields: Vec::new(),
                        });
                }
            }
        }
    }

    let mut units = Vec::new();
    for c in &clusters {
        let mut objects = base_objects(team, tn, &kinds_used, team_drift);
        objects.extend(per_cluster.remove(&c.name).unwrap_or_default());
        // The same object twice is an error naming both sources, never a silent winner.
        let mut seen: BTreeMap<ObjectKey, SourceRef> = BTreeMap::new();
        for o in &objects {
            let Some(key) = o.key() else {
                errs.push(diag(
                    &o.source.file,
                    o.source.line,
                    1,
                    Some(tn),
                    "schema",
                    "object has no metadata.name",
                ));
                continue;
            };
            if let Some(first) = seen.get(&key) {
                errs.push(
                    diag(
                        &o.source.file,
                        o.source.line,
                        1,
                        Some(tn),
                        "duplicate-object",
                        format!("{key} on {} is also produced by {first}", c.name),
                    )
                    .on_cluster(&c.name),
                );
            } else {
                seen.insert(key, o.source.clone());
            }
        }
        objects.sort_by_key(|o| o.key());
        units.push(UnitDesired {
            unit: UnitId {
                team: tn.clone(),
                cluster: ClusterName(c.name.clone()),
            },
            namespaces: team.spec.namespaces.clone(),
            objects,
            prune: PrunePolicy {
                namespaces: ctx.platform.spec.policy.prune.namespaces,
                crds: ctx.platform.spec.policy.prune.crds,
                max_share: ctx.platform.spec.policy.prune.max_share,
            },
        });
    }
    if errs.is_empty() {
        Ok(units)
    } else {
        Err(errs)
    }
}

/// Puts a team object in a namespace it owns: fills the default namespace, refuses other
/// teams' namespaces and cluster-scoped kinds. Returns the object's group and kind.
fn place(
    object: &mut Value,
    default_ns: &str,
    tn: &TeamName,
    ctx: &Ctx,
    doc: &Document,
) -> Result<(String, String), Box<Diagnostic>> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if is_cluster_scoped(group_of(&api_version), &kind) {
        return Err(Box::new(doc.diag_at(
            "kind",
            Some(tn),
            "cluster-scoped",
            format!("{kind} is cluster-scoped; teams produce only namespaced objects"),
        )));
    }
    let Some(obj) = object.as_object_mut() else {
        return Err(Box::new(doc.diag_at(
            "",
            Some(tn),
            "schema",
            "a document must be a mapping",
        )));
    };
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        return Err(Box::new(doc.diag_at(
            "metadata.name",
            Some(tn),
            "schema",
            format!("{kind} has no metadata.name"),
        )));
    }
    if let Some(why) = path_segment_problem(name) {
        return Err(Box::new(doc.diag_at(
            "metadata.name",
            Some(tn),
            "schema",
            format!("{kind} name {name:?} {why}"),
        )));
    }
    let ns = match meta.get("namespace").and_then(Value::as_str) {
        Some(ns) => ns.to_owned(),
        None => {
            if let Some(m) = meta.as_object_mut() {
                m.insert("namespace".to_owned(), json!(default_ns));
            }
            default_ns.to_owned()
        }
    };
    match ctx.namespace_owner.get(&ns) {
        Some(owner) if owner == tn => Ok((group_of(&api_version).to_owned(), kind)),
        Some(owner) => Err(Box::new(doc.diag_at(
            "metadata.namespace",
            Some(tn),
            "namespace-not-owned",
            format!("{kind} in namespace {ns}, which belongs to team {owner}"),
        ))),
        None => Err(Box::new(doc.diag_at(
            "metadata.namespace",
            Some(tn),
            "namespace-not-owned",
            format!("{kind} in namespace {ns}, which is not one of the team's namespaces"),
        ))),
    }
}

/// Why `name` cannot name any Kubernetes object (it becomes a segment of the request's
/// URL): the rule every kind shares, before each kind's own (which the API server checks).
fn path_segment_problem(name: &str) -> Option<&'static str> {
    if name == "." || name == ".." {
        Some("is not allowed")
    } else if name.contains('/') || name.contains('%') {
        Some("may not contain '/' or '%'")
    } else if name.len() > 253 {
        Some("is longer than 253 characters")
    } else {
        None
    }
}

/// Deep merge: objects merge key by key, anything else is replaced.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The team's base: Namespaces, quota, owners' access, isolation, and the RBAC that lets
/// the team's impersonated identity manage the kinds it uses in its namespaces.
fn base_objects(
    team: &Team,
    tn: &TeamName,
    kinds_used: &BTreeSet<(String, String)>,
    drift: DriftMode,
) -> Vec<DesiredObject> {
    let source = SourceRef {
        file: format!("teams/{tn}/team.yaml"),
        line: 1,
    };
    let mut rules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (g, k) in kinds_used {
        rules.entry(g.clone()).or_default().insert(plural(k));
    }
    let rules: Vec<Value> = rules
        .into_iter()
        .map(|(g, r)| json!({"apiGroups": [g], "resources": r, "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}))
        .collect();
    let mut out = Vec::new();
    let mut push = |mut object: Value| {
        stamp(&mut object, tn, &source);
        out.push(DesiredObject {
            object: Arc::new(object),
            source: source.clone(),
            applier: Applier::Platform,
            drift,
            ignore_fields: Vec::new(),
        });
    };
    for ns in &team.spec.namespaces {
        push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        if !team.spec.quota.is_empty() {
            push(
                json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "team-quota", "namespace": ns}, "spec": {"hard": team.spec.quota}}),
            );
        }
        if !team.spec.owners.is_empty() {
            let subjects: Vec<Value> = team
                .spec
                .owners
                .iter()
                .map(
                    |o| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": o}),
                )
                .collect();
            push(
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "team-owners", "namespace": ns},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"}, "subjects": subjects}),
            );
        }
        push(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "team-isolation", "namespace": ns},
                    "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                             "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {LABEL_TEAM: tn.0}}}]}]}}),
        );
        push(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": TEAM_ROLE, "namespace": ns}, "rules": rules}),
        );
        push(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": TEAM_ROLE, "namespace": ns},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": TEAM_ROLE},
                    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": team_user(tn)}]}),
        );
    }
    out
}

/// Diagnostics as `file:line:col: error[rule]: message` lines.
pub fn format_text(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| format!("{d}\n")).collect()
}

/// Diagnostics as GitHub workflow commands (annotations on the pull request).
pub fn format_github(diags: &[Diagnostic]) -> String {
    let esc = |s: &str| {
        s.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    };
    let prop = |s: &str| esc(s).replace(':', "%3A").replace(',', "%2C");
    diags
        .iter()
        .map(|d| {
            let level = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let team = d
                .team
                .as_ref()
                .map(|t| format!("team {t}: "))
                .unwrap_or_default();
            format!(
                "::{level} file={},line={},col={},title={}::{team}{}\n",
                prop(&d.file),
                d.line,
                d.column,
                prop(&d.rule),
                esc(&d.message)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
