//! The benchmark's platform repo, written to disk as users write it: `platform.yaml` with
//! the three clusters, one Kind of the benchmark's own (`Setting`, one ConfigMap per
//! instance: the cheapest object an apiserver stores, so the figures are pontoon's and
//! the servers' per-object costs rather than a controller's), and per team its
//! `team.yaml` and one file of instances.

use std::path::Path;

/// The clusters every team is on, in the order the control planes start.
pub const CLUSTERS: [&str; 3] = ["one", "two", "three"];

fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

/// The name of team `t`: `team-0000` …, so the units sort as they were written.
pub fn team(t: usize) -> String {
    format!("team-{t:04}")
}

/// Writes the repo into `root` (which should not exist yet): `teams` teams of `instances`
/// `Setting`s each, every team on all three clusters.
pub fn write_repo(root: &Path, teams: usize, instances: usize) {
    let clusters = CLUSTERS
        .iter()
        .map(|c| format!("{{name: {c}}}"))
        .collect::<Vec<_>>()
        .join(", ");
    write(
        root,
        "platform.yaml",
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: scale}}\nspec:\n  clusters: [{clusters}]\n"
        ),
    );
    write(
        root,
        "kinds/setting.yaml",
        "apiVersion: pontoon.dev/v1alpha1\nkind: Kind\nmetadata:\n  name: Setting\nspec:\n  parameters:\n    value: {type: string, required: true}\n  resources:\n    - id: config\n      template:\n        apiVersion: v1\n        kind: ConfigMap\n        metadata:\n          name: ${name}\n        data:\n          value: ${spec.value}\n          team: ${team}\n",
    );
    let names = CLUSTERS.join(", ");
    for t in 0..teams {
        let team = team(t);
        write(
            root,
            &format!("teams/{team}/team.yaml"),
            &format!(
                "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [{names}]}}\n"
            ),
        );
        let settings: Vec<String> = (0..instances)
            .map(|i| {
                format!(
                    "apiVersion: pontoon.dev/v1alpha1\nkind: Setting\nmetadata: {{name: setting-{i}}}\nspec: {{value: \"{team}-{i}\"}}\n"
                )
            })
            .collect();
        write(
            root,
            &format!("teams/{team}/settings.yaml"),
            &settings.join("---\n"),
        );
    }
}
