//! `dependsOn`: what an object waits for before the sync applies it. A Kind's resource
//! may depend on other resources of the same kind (by `id`), an instance on other
//! instances of the same team (by `Kind/name`). Here they are checked — an unknown id or
//! instance, and a cycle, are errors at the `dependsOn` entry that causes them — and
//! resolved to the object keys each unit's objects wait for
//! ([`crate::desired::UnitDesired::dependencies`]).
//!
//! Pure, like all of render: the order it finds is only "after"; the sync decides when,
//! from health.

use std::collections::{BTreeMap, BTreeSet};

use crate::desired::{Dependency, Diagnostic, ObjectKey, TeamName};
use crate::model::{Document, Kind, did_you_mean};

/// A cycle in `edges` (node → the nodes it depends on), as the path that closes it
/// (`[a, b, a]`), or `None`. Nodes are visited in their order, so the same graph always
/// names the same cycle. An edge to a node `edges` does not hold is ignored.
pub(super) fn find_cycle<N: Ord + Clone>(edges: &BTreeMap<N, Vec<N>>) -> Option<Vec<N>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    let mut marks: BTreeMap<&N, Mark> = BTreeMap::new();
    for start in edges.keys() {
        if marks.contains_key(start) {
            continue;
        }
        // Depth first, without recursion: a stack of (node, index of its next edge).
        let mut path: Vec<(&N, usize)> = vec![(start, 0)];
        marks.insert(start, Mark::Open);
        while let Some((node, next)) = path.last_mut() {
            let node: &N = node;
            let deps = edges.get(node).map(Vec::as_slice).unwrap_or_default();
            let Some(dep) = deps.get(*next) else {
                marks.insert(node, Mark::Done);
                path.pop();
                continue;
            };
            *next += 1;
            let Some((dep, _)) = edges.get_key_value(dep) else {
                continue;
            };
            match marks.get(dep) {
                Some(Mark::Done) => {}
                Some(Mark::Open) => {
                    let from = path.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                    let mut cycle: Vec<N> =
                        path[from..].iter().map(|(n, _)| (*n).clone()).collect();
                    cycle.push(dep.clone());
                    return Some(cycle);
                }
                None => {
                    marks.insert(dep, Mark::Open);
                    path.push((dep, 0));
                }
            }
        }
    }
    None
}

/// Problems of a Kind's `dependsOn`: ids that are no resource of the kind, and cycles.
pub(super) fn check_kind(doc: &Document, k: &Kind) -> Vec<Diagnostic> {
    let name = &k.metadata.name;
    let ids: Vec<&str> = k.spec.resources.iter().map(|r| r.id.as_str()).collect();
    let mut out = Vec::new();
    let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (i, r) in k.spec.resources.iter().enumerate() {
        for (j, dep) in r.depends_on.iter().enumerate() {
            if ids.contains(&dep.as_str()) {
                edges.entry(r.id.as_str()).or_default().push(dep.as_str());
            } else {
                out.push(doc.diag_at(
                    &format!("spec.resources[{i}].dependsOn[{j}]"),
                    None,
                    "unknown-dependency",
                    format!(
                        "kind {name}: resource {} depends on {dep}, which is no resource id of the kind{} (ids: {})",
                        r.id,
                        did_you_mean(dep, ids.iter().copied()),
                        ids.join(", ")
                    ),
                ));
            }
        }
        edges.entry(r.id.as_str()).or_default();
    }
    if let Some(cycle) = find_cycle(&edges) {
        let i = ids.iter().position(|id| *id == cycle[0]).unwrap_or(0);
        out.push(doc.diag_at(
            &format!("spec.resources[{i}].dependsOn"),
            None,
            "dependency-cycle",
            format!(
                "kind {name}: resources depend on each other in a cycle: {}; nothing could be applied first",
                cycle.join(" -> ")
            ),
        ));
    }
    out
}

/// An instance that says `dependsOn`, as written.
struct Dependent {
    doc: Document,
    depends_on: Vec<String>,
}

/// One team's dependencies while its documents render, then resolved per cluster.
#[derive(Default)]
pub(super) struct TeamDependencies {
    /// Every instance of the team (`Kind/name`) and the clusters it goes to.
    instances: BTreeMap<String, BTreeSet<String>>,
    /// The instances that depend on others.
    dependents: BTreeMap<String, Dependent>,
    /// Per cluster: each instance's objects there.
    objects: BTreeMap<String, BTreeMap<String, Vec<ObjectKey>>>,
    /// Per cluster: what each object waits for within its own instance.
    within: BTreeMap<String, BTreeMap<ObjectKey, Vec<Dependency>>>,
}

/// An instance's name in `dependsOn`: `Kind/name`.
pub(super) fn instance_name(kind: &str, name: &str) -> String {
    format!("{kind}/{name}")
}

/// How a dependency on one object reads: its kind and name (`Job/web-migrate`).
fn object_name(key: &ObjectKey) -> String {
    format!("{}/{}", key.kind, key.name)
}

impl TeamDependencies {
    /// An instance was read (`dependsOn` as written in `doc`).
    pub fn instance(&mut self, instance: &str, doc: &Document, depends_on: &[String]) {
        self.instances.entry(instance.to_owned()).or_default();
        if !depends_on.is_empty() {
            self.dependents.insert(
                instance.to_owned(),
                Dependent {
                    doc: doc.clone(),
                    depends_on: depends_on.to_vec(),
                },
            );
        }
    }

    /// An instance goes to `cluster`.
    pub fn goes_to(&mut self, instance: &str, cluster: &str) {
        if let Some(on) = self.instances.get_mut(instance) {
            on.insert(cluster.to_owned());
        }
    }

    /// An instance's resources on `cluster`: each rendered resource's id and object key,
    /// with the ids it depends on (ids of resources `includeWhen` left out are nothing to
    /// wait for).
    pub fn rendered(
        &mut self,
        instance: &str,
        cluster: &str,
        resources: &[(&str, ObjectKey, &[String])],
    ) {
        let objects = self
            .objects
            .entry(cluster.to_owned())
            .or_default()
            .entry(instance.to_owned())
            .or_default();
        objects.extend(resources.iter().map(|(_, key, _)| key.clone()));
        let within = self.within.entry(cluster.to_owned()).or_default();
        for (_, key, depends_on) in resources {
            let deps: Vec<Dependency> = depends_on
                .iter()
                .filter_map(|id| resources.iter().find(|(rid, _, _)| rid == id))
                .map(|(_, dep, _)| Dependency {
                    name: object_name(dep),
                    objects: vec![dep.clone()],
                })
                .collect();
            if !deps.is_empty() {
                within.insert(key.clone(), deps);
            }
        }
    }

    /// Checks every instance's `dependsOn` (unknown instances, a cycle, a dependency that
    /// does not go to a cluster its dependent goes to); problems go to `errors`.
    pub fn check(&self, team: &TeamName, errors: &mut Vec<Diagnostic>) {
        let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (instance, d) in &self.dependents {
            for (j, dep) in d.depends_on.iter().enumerate() {
                let field = format!("dependsOn[{j}]");
                let Some(dep_clusters) = self.instances.get(dep) else {
                    errors.push(d.doc.diag_at(
                        &field,
                        Some(team),
                        "unknown-dependency",
                        format!(
                            "{instance} depends on {dep}, which is no instance of the team (write Kind/name, like Database/ledger){}",
                            did_you_mean(
                                dep,
                                self.instances
                                    .keys()
                                    .filter(|i| *i != instance)
                                    .map(String::as_str)
                            )
                        ),
                    ));
                    continue;
                };
                edges
                    .entry(instance.as_str())
                    .or_default()
                    .push(dep.as_str());
                let on = self.instances.get(instance).cloned().unwrap_or_default();
                for cluster in on.difference(dep_clusters) {
                    errors.push(
                        d.doc
                            .diag_at(
                                &field,
                                Some(team),
                                "unknown-dependency",
                                format!(
                                    "{instance} depends on {dep}, which does not go to cluster {cluster}: it would wait there forever"
                                ),
                            )
                            .on_cluster(cluster),
                    );
                }
            }
        }
        if let Some(cycle) = find_cycle(&edges)
            && let Some(d) = self.dependents.get(cycle[0])
        {
            errors.push(d.doc.diag_at(
                "dependsOn",
                Some(team),
                "dependency-cycle",
                format!(
                    "instances depend on each other in a cycle: {}; nothing could be applied first",
                    cycle.join(" -> ")
                ),
            ));
        }
    }

    /// What each object of the team on `cluster` waits for: its resource's dependencies
    /// within its instance, then its instance's on other instances.
    pub fn on_cluster(&self, cluster: &str) -> BTreeMap<ObjectKey, Vec<Dependency>> {
        let mut out = self.within.get(cluster).cloned().unwrap_or_default();
        let Some(objects) = self.objects.get(cluster) else {
            return out;
        };
        for (instance, d) in &self.dependents {
            let deps: Vec<Dependency> = d
                .depends_on
                .iter()
                .filter_map(|dep| {
                    let keys = objects.get(dep).filter(|k| !k.is_empty())?;
                    Some(Dependency {
                        name: dep.clone(),
                        objects: keys.clone(),
                    })
                })
                .collect();
            if deps.is_empty() {
                continue;
            }
            for key in objects.get(instance).into_iter().flatten() {
                out.entry(key.clone())
                    .or_default()
                    .extend(deps.iter().cloned());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(
        edges: &[(&'static str, &[&'static str])],
    ) -> BTreeMap<&'static str, Vec<&'static str>> {
        edges.iter().map(|(n, d)| (*n, d.to_vec())).collect()
    }

    #[test]
    fn cycles_are_found_and_named_by_the_path_that_closes_them() {
        type Edges = &'static [(&'static str, &'static [&'static str])];
        let cases: &[(Edges, Option<&[&str]>)] = &[
            (&[], None),
            (&[("a", &[])], None),
            (&[("a", &["a"])], Some(&["a", "a"])),
            (&[("a", &["b"]), ("b", &[])], None),
            (&[("a", &["b"]), ("b", &["a"])], Some(&["a", "b", "a"])),
            // A diamond is an order, not a cycle.
            (
                &[("a", &["b", "c"]), ("b", &["d"]), ("c", &["d"]), ("d", &[])],
                None,
            ),
            // The cycle is named from where it closes, not from where the walk began.
            (
                &[("a", &["b"]), ("b", &["c"]), ("c", &["d"]), ("d", &["b"])],
                Some(&["b", "c", "d", "b"]),
            ),
            // An edge to a node the graph does not hold is left to other checks.
            (&[("a", &["zz"])], None),
        ];
        for (edges, want) in cases {
            let got = find_cycle(&graph(edges));
            assert_eq!(
                got.as_deref(),
                want.map(|w| w.to_vec()).as_deref(),
                "{edges:?}"
            );
        }
    }

    fn key(kind: &str, name: &str) -> ObjectKey {
        ObjectKey {
            group: String::new(),
            kind: kind.into(),
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    #[test]
    fn each_object_waits_for_its_resources_and_its_instances_dependencies() {
        let doc = Document::new(
            "teams/shop/app.yaml",
            1,
            "dependsOn: [Database/ledger]\n",
            serde_json::json!({}),
        );
        let mut t = TeamDependencies::default();
        t.instance("Database/ledger", &doc, &[]);
        t.instance("WebService/web", &doc, &["Database/ledger".into()]);
        t.goes_to("Database/ledger", "c");
        t.goes_to("WebService/web", "c");
        t.rendered(
            "Database/ledger",
            "c",
            &[("cluster", key("Cluster", "ledger"), &[])],
        );
        let migrate: Vec<String> = vec!["migrate".into()];
        t.rendered(
            "WebService/web",
            "c",
            &[
                ("migrate", key("Job", "web-migrate"), &[]),
                ("deployment", key("Deployment", "web"), &migrate),
                (
                    "absent-dependency",
                    key("Service", "web"),
                    &["left-out".to_owned()],
                ),
            ],
        );
        let mut errors = Vec::new();
        t.check(&TeamName("shop".into()), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let deps = t.on_cluster("c");
        let names = |k: &ObjectKey| -> Vec<String> {
            deps.get(k)
                .into_iter()
                .flatten()
                .map(|d| d.name.clone())
                .collect()
        };
        assert_eq!(
            names(&key("Deployment", "web")),
            ["Job/web-migrate", "Database/ledger"]
        );
        assert_eq!(names(&key("Job", "web-migrate")), ["Database/ledger"]);
        assert_eq!(names(&key("Service", "web")), ["Database/ledger"]);
        assert_eq!(names(&key("Cluster", "ledger")), Vec::<String>::new());
        assert_eq!(
            deps[&key("Job", "web-migrate")][0].objects,
            [key("Cluster", "ledger")]
        );
    }

    #[test]
    fn unknown_instances_cycles_and_missing_clusters_are_errors_at_depends_on() {
        let text = "apiVersion: pontoon.dev/v1alpha1\nkind: WebService\nmetadata: {name: web}\ndependsOn:\n  - Database/ledgr\n  - Worker/w\n";
        let doc = Document::new("teams/shop/app.yaml", 1, text, serde_json::json!({}));
        let mut t = TeamDependencies::default();
        t.instance("Database/ledger", &doc, &[]);
        t.instance(
            "WebService/web",
            &doc,
            &["Database/ledgr".into(), "Worker/w".into()],
        );
        t.instance("Worker/w", &doc, &["WebService/web".into()]);
        t.goes_to("WebService/web", "a");
        t.goes_to("WebService/web", "b");
        t.goes_to("Worker/w", "a");
        let mut errors = Vec::new();
        t.check(&TeamName("shop".into()), &mut errors);
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            lines.contains(&"teams/shop/app.yaml:5:5: error[unknown-dependency]: team shop: WebService/web depends on Database/ledgr, which is no instance of the team (write Kind/name, like Database/ledger) (did you mean Database/ledger?)".to_owned()),
            "{lines:#?}"
        );
        assert!(
            lines.iter().any(|l| l
                .starts_with("teams/shop/app.yaml:6:5: error[unknown-dependency]")
                && l.ends_with(
                    "Worker/w, which does not go to cluster b: it would wait there forever"
                )),
            "{lines:#?}"
        );
        assert_eq!(
            errors
                .iter()
                .find(|e| e.rule == "unknown-dependency" && e.line == 6)
                .and_then(|e| e.cluster.clone())
                .as_deref(),
            Some("b")
        );
        assert!(
            lines.iter().any(|l| l.contains("error[dependency-cycle]")
                && l.contains("WebService/web -> Worker/w -> WebService/web")),
            "{lines:#?}"
        );
    }
}
