//! A Kind backed by a Helm chart, end to end against a real kube-apiserver with the real
//! `helm` (4.3.1): a chart made by `helm create` behind the kind, each team's instance
//! rendered with values from CEL over its own parameters and this cluster's values over
//! the kind's, synced as the team's objects; an instance whose values fail to evaluate,
//! one whose chart output leaves its team's namespaces, and one the chart's template
//! fails (naming chart, template and line) each fail their own team only, named at the
//! instance, while the other teams sync; and an instance of a chart kind that
//! `requires` a component waits for it, then is healthy as its chart's objects are.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use pontoon::desired::{ClusterName, DesiredState, TeamName, UnitId};
use pontoon::sync::UnitState;

use crate::packages::{helm_create, no_charts, render_files};
use crate::support::control_plane::{self, unique_name};

/// A cluster the teams also target, which no test syncs: where the kind's values hold
/// without the synced cluster's `clusterValues`.
const ELSEWHERE: &str = "elsewhere";

/// The kind: a `helm create` chart, its replicas, tier and the namespace of its settings
/// from the instance, its pods annotated with a value that fails for `shards: 0`, and
/// one replica more on the synced cluster.
fn kind(cluster: &str) -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1
kind: Kind
metadata: {{name: Cache}}
spec:
  parameters:
    replicas: {{type: integer, default: 1}}
    tier: {{type: string, default: bronze}}
    shards: {{type: integer, default: 1}}
    settingsNamespace: {{type: string, default: \"\"}}
  chart:
    source: {{path: charts/cache}}
    values:
      fullnameOverride: ${{name}}
      replicaCount: ${{spec.replicas}}
      tier: ${{spec.tier}}
      settingsNamespace: ${{spec.settingsNamespace}}
      podAnnotations:
        memory-per-shard: \"${{string(1024 / spec.shards)}}Mi\"
    clusterValues:
      {cluster}:
        replicaCount: ${{spec.replicas + 1}}
"
    )
}

/// A template added to the created chart: the instance's tier, in the namespace the
/// values name (the release's when they name none); tier `none` fails the chart.
const SETTINGS: &str = "{{- if eq .Values.tier \"none\" }}
{{- fail \"a cache of tier none has no settings\" }}
{{- end }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include \"web.fullname\" . }}-settings
  {{- with .Values.settingsNamespace }}
  namespace: {{ . }}
  {{- end }}
data:
  tier: {{ .Values.tier | quote }}
";

fn team_yaml(team: &str, clusters: &[&str]) -> Vec<u8> {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [{}]}}\n",
        clusters.join(", ")
    )
    .into_bytes()
}

fn cache(name: &str, spec: &str) -> Vec<u8> {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: Cache\nmetadata: {{name: {name}}}\nspec: {spec}\n"
    )
    .into_bytes()
}

/// Teams `a` and `b` (instances with different parameters, on both clusters), `broken`
/// (an instance whose values divide by zero), `leaky` (an instance whose settings go
/// to `a`'s namespace) and `failing` (an instance the chart's template fails). No
/// platform `allowedKinds`: the kind is the platform's.
struct Teams {
    a: String,
    b: String,
    broken: String,
    leaky: String,
    failing: String,
}

fn repo(cluster: &str, t: &Teams) -> BTreeMap<String, Vec<u8>> {
    let mut f = BTreeMap::new();
    f.insert(
        "platform.yaml".into(),
        format!("apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: p}}\nspec:\n  clusters: [{{name: {cluster}}}, {{name: {ELSEWHERE}}}]\n").into_bytes(),
    );
    f.insert("kinds/cache.yaml".into(), kind(cluster).into_bytes());
    helm_create("charts/cache", &mut f);
    f.insert(
        "charts/cache/templates/settings.yaml".into(),
        SETTINGS.into(),
    );
    for team in [&t.a, &t.b] {
        f.insert(
            format!("teams/{team}/team.yaml"),
            team_yaml(team, &[cluster, ELSEWHERE]),
        );
    }
    for team in [&t.broken, &t.leaky, &t.failing] {
        f.insert(
            format!("teams/{team}/team.yaml"),
            team_yaml(team, &[cluster]),
        );
    }
    f.insert(
        format!("teams/{}/cache.yaml", t.a),
        cache("sessions", "{replicas: 2, tier: gold}"),
    );
    f.insert(
        format!("teams/{}/cache.yaml", t.b),
        cache("queue", "{tier: silver, shards: 4}"),
    );
    f.insert(
        format!("teams/{}/cache.yaml", t.broken),
        cache("split", "{shards: 0}"),
    );
    f.insert(
        format!("teams/{}/cache.yaml", t.leaky),
        cache("spill", &format!("{{settingsNamespace: {}}}", t.a)),
    );
    f.insert(
        format!("teams/{}/cache.yaml", t.failing),
        cache("bare", "{tier: none}"),
    );
    f
}

fn replicas_of(state: &DesiredState, team: &str, cluster: &str, name: &str) -> Option<i64> {
    let unit = state.units.get(&UnitId {
        team: TeamName(team.to_owned()),
        cluster: ClusterName(cluster.to_owned()),
    })?;
    unit.objects.iter().find_map(|o| {
        let v = o.object.to_value();
        (v["kind"] == "Deployment" && v["metadata"]["name"] == name)
            .then(|| v["spec"]["replicas"].as_i64())
            .flatten()
    })
}

#[tokio::test]
async fn a_chart_kind_renders_each_instance_with_its_own_values_and_a_failing_one_stops_only_its_team()
 {
    let cp = control_plane::shared();
    let s = Arc::new(crate::sync::syncer(cp).await);
    let cluster = ClusterName(cp.name.into());
    let syncers = BTreeMap::from([(cluster.clone(), s.clone())]);
    let t = Teams {
        a: unique_name("kca"),
        b: unique_name("kcb"),
        broken: unique_name("kcbroken"),
        leaky: unique_name("kcleaky"),
        failing: unique_name("kcfailing"),
    };
    let (state, _packages) = render_files(&syncers, &no_charts(), repo(cp.name, &t)).await;
    let text: Vec<String> = state.diagnostics.iter().map(|d| d.to_string()).collect();

    // The failing value names the instance, its team's file and the kind's.
    let broken = &t.broken;
    assert!(
        text.iter().any(|d| d.starts_with(&format!("teams/{broken}/cache.yaml:1:1: error[expression]: team {broken}: Cache split on {}: kind Cache (kinds/cache.yaml:1), spec.chart.values: `string(1024 / spec.shards)`:", cp.name))),
        "{text:#?}"
    );
    // The settings leaving leaky's namespace are refused at the instance, naming the
    // template.
    let leaky = &t.leaky;
    assert!(
        text.contains(&format!("teams/{leaky}/cache.yaml:1:1: error[namespace-not-owned]: team {leaky}: Cache spill on {}: kind Cache (kinds/cache.yaml:1), chart charts/cache, web/templates/settings.yaml: ConfigMap in namespace {}, which belongs to team {}", cp.name, t.a, t.a)),
        "{text:#?}"
    );
    // The chart's own failure names the chart, the template and the line.
    let failing = &t.failing;
    assert!(
        text.iter().any(|d| d.starts_with(&format!("teams/{failing}/cache.yaml:1:1: error[package-error]: team {failing}: Cache bare on {0}: kind Cache (kinds/cache.yaml:1), chart charts/cache on cluster {0}: web/templates/settings.yaml:2: helm template:", cp.name))
            && d.contains("a cache of tier none has no settings")),
        "{text:#?}"
    );
    assert_eq!(text.len(), 3, "a and b render clean: {text:#?}");
    assert!(state.failed_teams.contains_key(&TeamName(failing.clone())));
    assert!(state.failed_teams.contains_key(&TeamName(broken.clone())));
    assert!(state.failed_teams.contains_key(&TeamName(leaky.clone())));

    // Where the synced cluster's values do not apply, the kind's own hold.
    assert_eq!(replicas_of(&state, &t.a, ELSEWHERE, "sessions"), Some(2));
    assert_eq!(replicas_of(&state, &t.b, ELSEWHERE, "queue"), Some(1));

    // a and b sync; each instance's values are seen on the real apiserver.
    for (team, name, replicas, tier, per_shard) in [
        (&t.a, "sessions", 3, "gold", "1024Mi"),
        (&t.b, "queue", 2, "silver", "256Mi"),
    ] {
        let unit = &state.units[&UnitId {
            team: TeamName(team.clone()),
            cluster: cluster.clone(),
        }];
        let r = s.sync(unit, &state.revision).await;
        assert!(r.errors.is_empty(), "{r:?}");
        assert_ne!(r.state, UnitState::Failed, "{r:?}");
        let client = cp.client().await;
        let deployment = Api::<Deployment>::namespaced(client.clone(), team)
            .get(name)
            .await
            .expect("the chart's Deployment");
        let spec = deployment.spec.clone();
        assert_eq!(
            spec.replicas,
            Some(replicas),
            "{team}: its replicas, one more on this cluster"
        );
        let annotations = spec
            .template
            .metadata
            .and_then(|m| m.annotations)
            .unwrap_or_default();
        assert_eq!(
            annotations.get("memory-per-shard").map(String::as_str),
            Some(per_shard)
        );
        let labels = deployment.metadata.labels.unwrap_or_default();
        assert_eq!(labels.get("pontoon.dev/team"), Some(team));
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("pontoon")
        );
        let source = deployment.metadata.annotations.unwrap_or_default();
        assert_eq!(
            source.get("pontoon.dev/source"),
            Some(&format!("teams/{team}/cache.yaml:1"))
        );
        let settings = Api::<ConfigMap>::namespaced(client, team)
            .get(&format!("{name}-settings"))
            .await
            .expect("the settings ConfigMap");
        assert_eq!(
            settings
                .data
                .unwrap_or_default()
                .get("tier")
                .map(String::as_str),
            Some(tier)
        );
    }
    let spilled = Api::<ConfigMap>::namespaced(cp.client().await, &t.a)
        .get_opt("spill-settings")
        .await
        .expect("get");
    assert!(
        spilled.is_none(),
        "leaky's settings never reach a's namespace"
    );
}

/// Writes a Deployment's status as its controller would once it rolled out: the shared
/// control plane runs no controllers.
async fn roll_out(cp: &control_plane::ControlPlane, ns: &str, name: &str) {
    let api: Api<Deployment> = Api::namespaced(cp.client().await, ns);
    let status = serde_json::json!({"status": {"observedGeneration": 1, "replicas": 1,
        "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}});
    api.patch_status(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&status),
    )
    .await
    .expect("status");
}

/// A platform whose Cache kind (the created chart) requires component `operator` (a
/// Deployment in `<id>-ops`), and team `<id>` with one Cache.
fn requiring_repo(cluster: &str, id: &str) -> BTreeMap<String, Vec<u8>> {
    let mut f = BTreeMap::new();
    let mut put = |path: &str, text: String| f.insert(path.to_owned(), text.into_bytes());
    put(
        "platform.yaml",
        format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: p}}\nspec:\n  clusters: [{{name: {cluster}}}]\n"
        ),
    );
    put(
        "components/operator.yaml",
        format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Component\nmetadata: {{name: operator}}\nspec:\n  clusters: {{names: [{cluster}]}}\n  namespace: {id}-ops\n  source: {{manifests: {{path: components/operator}}}}\n"
        ),
    );
    put(
        "components/operator/operator.yaml",
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {id}-ops}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: operator, namespace: {id}-ops}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: operator}}}}\n  template:\n    metadata: {{labels: {{app: operator}}}}\n    spec: {{containers: [{{name: operator, image: operator:1}}]}}\n"
        ),
    );
    put(
        "kinds/cache.yaml",
        "apiVersion: pontoon.dev/v1alpha1\nkind: Kind\nmetadata: {name: Cache}\nspec:\n  requires: [operator]\n  chart:\n    source: {path: charts/cache}\n    values:\n      fullnameOverride: ${name}\n".to_owned(),
    );
    put(
        &format!("teams/{id}/team.yaml"),
        String::from_utf8_lossy(&team_yaml(id, &[cluster])).into_owned(),
    );
    put(
        &format!("teams/{id}/cache.yaml"),
        String::from_utf8_lossy(&cache("sessions", "{}")).into_owned(),
    );
    helm_create("charts/cache", &mut f);
    f
}

#[tokio::test]
async fn a_chart_kinds_instance_waits_for_its_component_and_is_healthy_as_its_objects_are() {
    let cp = control_plane::shared();
    let id = unique_name("kcreq");
    let cluster = ClusterName(cp.name.into());
    // Inventories in a namespace of this test's own: its platform unit is no other's.
    let options = pontoon::sync::SyncOptions {
        namespace: format!("{id}-pontoon"),
        ..pontoon::sync::SyncOptions::default()
    };
    let connection = pontoon::cluster::Cluster::from_config(cluster.clone(), cp.config().await, 16)
        .expect("cluster");
    let s = Arc::new(pontoon::sync::Syncer::new(Arc::new(connection), options));
    let syncers = BTreeMap::from([(cluster.clone(), s.clone())]);
    let (state, _packages) =
        render_files(&syncers, &no_charts(), requiring_repo(cp.name, &id)).await;
    assert!(state.diagnostics.is_empty(), "{:?}", state.diagnostics);
    let team = UnitId {
        team: TeamName(id.clone()),
        cluster: cluster.clone(),
    };
    let platform = UnitId {
        team: TeamName(pontoon::desired::PLATFORM_UNIT.into()),
        cluster: cluster.clone(),
    };
    let deployments: Api<Deployment> = Api::namespaced(cp.client().await, &id);

    // The operator has not rolled out: the chart's objects wait for it.
    let results = s.sync_cluster(&state).await;
    let find = |u: &UnitId| {
        results
            .iter()
            .find(|r| r.unit == *u)
            .cloned()
            .unwrap_or_else(|| panic!("no result for {u}"))
    };
    let first = find(&team);
    assert_eq!(first.state, UnitState::Progressing, "{first:?}");
    let message = first.message.clone().unwrap_or_default();
    assert!(
        message.starts_with("waiting for component operator to be healthy"),
        "{message}"
    );
    assert!(
        deployments
            .get_opt("sessions")
            .await
            .expect("get")
            .is_none(),
        "the chart's Deployment waits"
    );

    // The operator rolls out; the instance's objects are applied, and the unit is
    // healthy once the chart's Deployment is.
    roll_out(cp, &format!("{id}-ops"), "operator").await;
    let settled = s
        .settle(
            &state.units[&platform],
            "r1",
            find(&platform),
            std::time::Instant::now(),
            std::time::Duration::from_secs(60),
            std::time::Duration::from_millis(200),
        )
        .await;
    assert_eq!(settled.state, UnitState::Synced, "{settled:?}");
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.components().moved_since(&first),
    )
    .await
    .expect("the board says the component moved");
    let applied = s.sync(&state.units[&team], "r1").await;
    assert!(applied.errors.is_empty(), "{applied:?}");
    assert_eq!(applied.state, UnitState::Progressing, "{applied:?}");
    let message = applied.message.clone().unwrap_or_default();
    assert!(
        message.contains("sessions"),
        "the chart's Deployment: {message}"
    );
    roll_out(cp, &id, "sessions").await;
    let healthy = s
        .settle(
            &state.units[&team],
            "r1",
            applied,
            std::time::Instant::now(),
            std::time::Duration::from_secs(60),
            std::time::Duration::from_millis(200),
        )
        .await;
    assert_eq!(healthy.state, UnitState::Synced, "{healthy:?}");
}
