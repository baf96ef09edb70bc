//! A Kind backed by a chart: one request per instance and cluster with values from CEL
//! over the instance, its expansion read as the instance's objects under the team's
//! rules, and every mistake named at the instance (or the kind) with the kind's file.

use super::*;
use crate::desired::{ExpandedDocument, Expansion, PackageError, PackageSource};

const CACHE: &str = "\
apiVersion: pontoon.dev/v1alpha1
kind: Kind
metadata: {name: Cache}
spec:
  parameters:
    replicas: {type: integer, default: 1}
    auth: {type: boolean, default: false}
    tier: {type: string, default: small}
  requires: [redis-operator]
  chart:
    source: {path: charts/cache}
    values:
      replicaCount: ${spec.replicas}
      auth:
        enabled: ${spec.auth}
      fullnameOverride: \"${name}-${team}\"
    clusterValues:
      prod:
        replicaCount: ${spec.replicas * 2}
";

const COMPONENT: &str = "\
apiVersion: pontoon.dev/v1alpha1
kind: Component
metadata: {name: redis-operator}
spec:
  clusters: {names: [staging, prod]}
  source: {manifests: {path: components/redis-operator}}
";

fn cache(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: Cache\nmetadata: {{name: {name}}}\nspec: {spec}\n"
    )
}

/// The repo with the Cache kind, its chart folder, the component it requires, and
/// `extra`.
fn charted(extra: &[(&str, &str)]) -> Files {
    let mut files = repo(&[
        ("kinds/cache.yaml", CACHE),
        (
            "charts/cache/Chart.yaml",
            "apiVersion: v2\nname: cache\nversion: 0.1.0\n",
        ),
        (
            "charts/cache/templates/deploy.yaml",
            "{{ .Values.replicaCount }}",
        ),
        ("components/redis-operator.yaml", COMPONENT),
        (
            "components/redis-operator/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: op, namespace: ops}\n",
        ),
    ]);
    for (p, c) in extra {
        files.insert((*p).into(), c.as_bytes().to_vec());
    }
    files
}

/// Every request expanded to a Deployment named after the release with the values'
/// replica count, as helm would print it; `text` (with `{release}` and `{replicas}`)
/// instead, when given.
fn expand(files: &Files, text: Option<&str>) -> Expansions {
    let mut expansions = Expansions::new();
    for request in package_requests(files) {
        if !matches!(request.owner, PackageOwner::Team(_)) {
            continue;
        }
        let replicas = request.values["replicaCount"].to_string();
        let text = text.unwrap_or("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: \"{release}\"}\nspec: {replicas: {replicas}}\n")
            .replace("{release}", &request.release)
            .replace("{replicas}", &replicas);
        let expansion = Expansion {
            documents: vec![ExpandedDocument {
                origin: "cache/templates/deploy.yaml".into(),
                text,
            }],
        };
        expansions.insert(&request, Ok(expansion));
    }
    expansions
}

fn render_with(files: &Files, expansions: &Expansions) -> DesiredState {
    render_expanded(
        files,
        &[],
        "r",
        &NamespaceOwners::new(),
        Decryption::Keys(&NO_KEYS),
        None,
        expansions,
    )
}

fn unit<'s>(s: &'s DesiredState, team: &str, cluster: &str) -> &'s UnitDesired {
    &s.units[&UnitId {
        team: TeamName(team.into()),
        cluster: ClusterName(cluster.into()),
    }]
}

fn texts(s: &DesiredState) -> Vec<String> {
    s.diagnostics.iter().map(|d| d.to_string()).collect()
}

#[test]
fn each_instance_asks_one_release_per_cluster_with_values_from_its_parameters() {
    let files = charted(&[
        (
            "teams/a/cache.yaml",
            &cache("sessions", "{replicas: 2, auth: true}"),
        ),
        ("teams/b/cache.yaml", &cache("queue", "{}")),
    ]);
    let requests: Vec<PackageRequest> = package_requests(&files)
        .into_iter()
        .filter(|r| matches!(r.owner, PackageOwner::Team(_)))
        .collect();
    let by: BTreeMap<(String, String), &PackageRequest> = requests
        .iter()
        .map(|r| ((r.owner.to_string(), r.cluster.0.clone()), r))
        .collect();
    assert_eq!(by.len(), 4, "two instances on two clusters: {requests:#?}");
    let a_staging = by[&("team a".to_owned(), "staging".to_owned())];
    assert_eq!(
        a_staging.source,
        PackageSource::ChartFolder {
            path: "charts/cache".into()
        }
    );
    assert_eq!(
        (a_staging.release.as_str(), a_staging.namespace.as_str()),
        ("sessions", "a")
    );
    assert_eq!(a_staging.origin, "teams/a/cache.yaml:1");
    assert_eq!(
        a_staging.values,
        json!({"replicaCount": 2, "auth": {"enabled": true}, "fullnameOverride": "sessions-a"})
    );
    // The cluster's values are templates too, merged over the kind's.
    assert_eq!(
        by[&("team a".to_owned(), "prod".to_owned())].values["replicaCount"],
        json!(4)
    );
    // Team b's instance takes the defaults.
    assert_eq!(
        by[&("team b".to_owned(), "staging".to_owned())].values,
        json!({"replicaCount": 1, "auth": {"enabled": false}, "fullnameOverride": "queue-b"})
    );
    assert_eq!(
        by[&("team b".to_owned(), "prod".to_owned())].values["replicaCount"],
        json!(2)
    );
}

#[test]
fn the_charts_objects_are_the_instances_own() {
    let files = charted(&[
        ("teams/a/cache.yaml", &cache("sessions", "{replicas: 2}")),
        (
            "teams/a/web.yaml",
            "apiVersion: pontoon.dev/v1alpha1\nkind: App\nmetadata: {name: web}\nspec: {image: x}\ndependsOn: [Cache/sessions]\n",
        ),
    ]);
    let s = render_with(&files, &expand(&files, None));
    assert!(s.diagnostics.is_empty(), "{:#?}", texts(&s));
    let prod = unit(&s, "a", "prod");
    let deploy = prod
        .objects
        .iter()
        .find(|o| o.key().is_some_and(|k| k.name == "sessions"))
        .expect("the chart's Deployment");
    let value = deploy.object.to_value();
    assert_eq!(value["spec"]["replicas"], json!(4), "prod's values");
    assert_eq!(value["metadata"]["namespace"], json!("a"));
    assert_eq!(value["metadata"]["labels"]["pontoon.dev/team"], json!("a"));
    assert_eq!(
        value["metadata"]["annotations"]["pontoon.dev/source"],
        json!("teams/a/cache.yaml:1")
    );
    assert_eq!(deploy.applier, Applier::Team);
    let key = deploy.key().expect("key");
    // Deployment is no kind teams may write by hand: the kind is the platform's.
    assert_eq!(
        prod.components.requires.get(&key),
        Some(&vec!["redis-operator".to_owned()]),
        "waits for the kind's component"
    );
    let web = ObjectKey {
        group: "apps".into(),
        kind: "Deployment".into(),
        namespace: "a".into(),
        name: "web".into(),
    };
    let waits: Vec<(String, Vec<ObjectKey>)> = prod.dependencies[&web]
        .iter()
        .map(|d| (d.name.clone(), d.objects.clone()))
        .collect();
    assert_eq!(waits, [("Cache/sessions".to_owned(), vec![key])]);
    assert_eq!(
        unit(&s, "a", "staging").objects.iter().find_map(|o| {
            let v = o.object.to_value();
            (v["metadata"]["name"] == json!("sessions")).then(|| v["spec"]["replicas"].clone())
        }),
        Some(json!(2)),
        "staging's values"
    );
}

#[test]
fn a_value_that_fails_names_the_instance_and_the_kind_and_other_teams_render() {
    let files = charted(&[
        (
            "kinds/cache.yaml",
            &CACHE.replace("${spec.replicas * 2}", "${100 / (spec.replicas - 3)}"),
        ),
        ("teams/a/cache.yaml", &cache("sessions", "{replicas: 3}")),
        ("teams/b/cache.yaml", &cache("queue", "{}")),
    ]);
    let s = render_with(&files, &expand(&files, None));
    let text = texts(&s);
    assert_eq!(text.len(), 1, "{text:#?}");
    assert!(
        text[0].starts_with("teams/a/cache.yaml:1:1: error[expression]: team a: Cache sessions on prod: kind Cache (kinds/cache.yaml:1), spec.chart.clusterValues.prod: `100 / (spec.replicas - 3)`:"),
        "{text:#?}"
    );
    assert!(s.failed_teams.contains_key(&TeamName("a".into())));
    assert!(!s.failed_teams.contains_key(&TeamName("b".into())));
    assert!(
        unit(&s, "b", "prod")
            .objects
            .iter()
            .any(|o| o.key().is_some_and(|k| k.name == "queue"))
    );
}

#[test]
fn chart_output_outside_the_teams_namespaces_is_refused_at_the_instance() {
    let files = charted(&[
        ("teams/a/cache.yaml", &cache("sessions", "{}")),
        ("teams/b/cache.yaml", &cache("queue", "{}")),
    ]);
    let leaking = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: \"{release}\", namespace: b}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: \"{release}\"}\n";
    let s = render_with(&files, &expand(&files, Some(leaking)));
    let text = texts(&s);
    let prefix = "teams/a/cache.yaml:1:1: error[";
    let what = "team a: Cache sessions on prod: kind Cache (kinds/cache.yaml:1), chart charts/cache, cache/templates/deploy.yaml:";
    assert!(
        text.contains(&format!(
            "{prefix}namespace-not-owned]: {what} ConfigMap in namespace b, which belongs to team b"
        )),
        "{text:#?}"
    );
    assert!(
        text.contains(&format!("{prefix}cluster-scoped]: {what} ClusterRole is cluster-scoped; teams produce only namespaced objects")),
        "{text:#?}"
    );
    assert!(s.failed_teams.contains_key(&TeamName("a".into())));
}

#[test]
fn a_chart_that_fails_or_was_not_expanded_fails_its_instance() {
    let files = charted(&[("teams/a/cache.yaml", &cache("sessions", "{}"))]);
    let mut expansions = Expansions::new();
    for request in package_requests(&files) {
        expansions.insert(
            &request,
            Err(PackageError {
                message: "helm template: function \"nope\" not defined".into(),
                file: Some("cache/templates/deploy.yaml".into()),
                line: Some(3),
            }),
        );
    }
    let s = render_with(&files, &expansions);
    assert!(
        texts(&s).contains(&"teams/a/cache.yaml:1:1: error[package-error]: team a: Cache sessions on prod: kind Cache (kinds/cache.yaml:1), chart charts/cache on cluster prod: cache/templates/deploy.yaml:3: helm template: function \"nope\" not defined".to_owned()),
        "{:#?}",
        texts(&s)
    );
    let s = render(&files, "r");
    assert!(
        texts(&s).contains(&"teams/a/cache.yaml:1:1: error[package-not-expanded]: team a: Cache sessions on staging: kind Cache (kinds/cache.yaml:1), chart charts/cache was not expanded".to_owned()),
        "{:#?}",
        texts(&s)
    );
}

#[test]
fn a_kinds_chart_mistakes_break_the_kind_at_their_field() {
    let cases = [
        (
            CACHE.replace(
                "source: {path: charts/cache}",
                "source: {path: kinds/cache}",
            ),
            "kinds/cache.yaml:11:14: error[invalid-kind]: kind Cache: \"kinds/cache\" is under kinds/",
        ),
        (
            CACHE.replace(
                "source: {path: charts/cache}",
                "source: {path: charts/none}",
            ),
            "kinds/cache.yaml:11:14: error[invalid-kind]: kind Cache: \"charts/none\" holds no Chart.yaml",
        ),
        (
            CACHE.replace(
                "source: {path: charts/cache}",
                "source: {path: charts/cache, oci: oci://r.example/c}",
            ),
            "kinds/cache.yaml:11:5: error[invalid-kind]: kind Cache: a chart is one of path, repository",
        ),
        (
            CACHE.replace(
                "source: {path: charts/cache}",
                "source: {oci: oci://r.example/c}",
            ),
            "kinds/cache.yaml:11:5: error[invalid-kind]: kind Cache: a chart from an OCI registry needs version",
        ),
        (
            CACHE.replace("      prod:\n", "      prd:\n"),
            "kinds/cache.yaml:18:7: error[unknown-cluster]: kind Cache: chart values for cluster prd, which platform.yaml does not define (did you mean prod?)",
        ),
        (
            CACHE.replace("${spec.replicas}", "${spec.replicas +}"),
            "kinds/cache.yaml:13:7: error[expression]: kind Cache: spec.chart.values.replicaCount: cannot parse `spec.replicas +`",
        ),
        (
            CACHE.replace(
                "      prod:\n        replicaCount: ${spec.replicas * 2}\n",
                "      prod: [1]\n",
            ),
            "kinds/cache.yaml:18:7: error[invalid-kind]: kind Cache: chart values are a mapping, not a list",
        ),
        (
            "apiVersion: pontoon.dev/v1alpha1\nkind: Kind\nmetadata: {name: Cache}\nspec: {}\n"
                .to_owned(),
            "kinds/cache.yaml:4:1: error[invalid-kind]: kind Cache: a kind needs resources, a chart, or both",
        ),
    ];
    for (kind, want) in cases {
        let files = charted(&[
            ("kinds/cache.yaml", &kind),
            ("teams/a/cache.yaml", &cache("sessions", "{}")),
        ]);
        let text = texts(&render(&files, "r"));
        assert!(
            text.iter().any(|d| d.starts_with(want)),
            "want {want}\n{text:#?}"
        );
        assert!(
            text.iter()
                .any(|d| d.contains("error[broken-kind]: team a: kind Cache is broken")),
            "the instance's team fails naming the kind: {text:#?}"
        );
    }
}

#[test]
fn a_kind_may_have_templates_and_a_chart() {
    let kind = CACHE.replace(
        "  chart:\n",
        "  resources:\n    - id: cm\n      template: {apiVersion: v1, kind: ConfigMap, metadata: {name: \"${name}-settings\"}}\n  chart:\n",
    );
    let files = charted(&[
        ("kinds/cache.yaml", &kind),
        ("teams/a/cache.yaml", &cache("sessions", "{}")),
    ]);
    let s = render_with(&files, &expand(&files, None));
    assert!(s.diagnostics.is_empty(), "{:#?}", texts(&s));
    let names: BTreeSet<String> = unit(&s, "a", "prod")
        .objects
        .iter()
        .filter_map(|o| o.key())
        .filter(|k| k.namespace == "a" && k.kind != "ResourceQuota" && k.kind != "NetworkPolicy")
        .filter(|k| !k.kind.starts_with("Role"))
        .map(|k| format!("{}/{}", k.kind, k.name))
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "ConfigMap/sessions-settings".to_owned(),
            "Deployment/sessions".to_owned()
        ])
    );
}

/// An instance of Cache whose spec is encrypted for `team-a` (SOPS, age).
const ENCRYPTED_CACHE: &str = "\
apiVersion: pontoon.dev/v1alpha1
kind: Cache
metadata:
    name: sessions
spec:
    replicas: ENC[AES256_GCM,data:gw==,iv:46cgyb5nt0RAujGXZpyBPXCSf/ScPoQ1jW7Xe8ZGbNQ=,tag:wTlhL5w5dpNfvs7Dv0qfEw==,type:int]
sops:
    age:
        - enc: |
            -----BEGIN AGE ENCRYPTED FILE-----
            YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSBVRjNpZzFncndzZ1VkVVpK
            Yk0vY1kyaFdSTVdCQktkbHVGMTJuK05ZdjBJClQ2dzQ0eEorOXVQaDl5cFI1TDcw
            TXBlcEtBbnJjSWd6MURoSi9UZ0s0N2cKLS0tIHplcUUwcjYzbTA5R0xHRk1GcFlz
            MU56VmdUZjFpM0ZDc2tJZVNpdDY4dFEK6wXTaQa/W/rv0vtasPIfBk2DGK17ATTw
            ss5exKaW7jSxFvU5dZma1sB8JB/nVRoo7hiVeJWaQReKL/C/jbio4A==
            -----END AGE ENCRYPTED FILE-----
          recipient: age12st0qhlu03jqqveq3q97wgcln847t2t0httdhjwd7rl5964tu5rqss5hph
    encrypted_regex: ^spec$
    lastmodified: \"2026-11-28T00:22:16Z\"
    mac: ENC[AES256_GCM,data:695QS+0k/UHxBAK4/S4ckhjxIDQ8tEcGIex5A4P52jix8AHEzRigzcTMrOkbw5Q43/gwwIXSrhIbUvjSTbPRumHMmMC/dQ3fai5h04lQS7Nh1uE//LmIEsEpwU+E6ukLP6AMyZvv8O/MYF1atmmb7acbxjbhYoSy9lTsDWGfhlw=,iv:35f4n/eFuipuskhv3aH+P7T6dgTuuTyhaexNX2J5h74=,tag:w4qeWg5RYu1PVnVRUt9XNg==,type:str]
    version: 3.13.3
";

#[test]
fn an_encrypted_instance_of_a_chart_kind_is_refused_not_handed_to_helm() {
    let mut files = charted(&[("teams/a/cache.yaml", ENCRYPTED_CACHE)]);
    files.insert(
        "platform.yaml".into(),
        format!("{PLATFORM}  decryption:\n    teams: {{a: team-a}}\n").into_bytes(),
    );
    let mut keys = crate::sops::Keyring::new();
    keys.add("team-a", include_str!("../../sops/testdata/test-key.txt"))
        .expect("key");
    assert!(
        package_requests(&files)
            .iter()
            .all(|r| !matches!(r.owner, PackageOwner::Team(_))),
        "nothing to expand for it"
    );
    let s = render_decrypting(
        &files,
        &[],
        "r",
        &NamespaceOwners::new(),
        Decryption::Keys(&keys),
        None,
    );
    assert!(
        texts(&s).contains(&"teams/a/cache.yaml:1:1: error[sops]: team a: Cache sessions on prod: kind Cache (kinds/cache.yaml:1): a kind backed by a chart takes no parameters from a SOPS-encrypted file: helm would be handed them in clear".to_owned()),
        "{:#?}",
        texts(&s)
    );
}

#[test]
fn the_platforms_policies_judge_the_charts_objects_per_instance() {
    let rule = "  policies:\n    - id: max-replicas\n      match:\n        kinds: [{group: apps, kind: Deployment}]\n      expression: object.spec.replicas <= 3\n      message: at most 3 replicas\n";
    let mut files = charted(&[
        ("teams/a/cache.yaml", &cache("sessions", "{replicas: 2}")),
        ("teams/b/cache.yaml", &cache("queue", "{replicas: 2}")),
    ]);
    let exempt = "  policyExceptions:\n    - {policy: max-replicas, team: b, instance: queue, reason: load test}\n";
    files.insert(
        "platform.yaml".into(),
        format!("{PLATFORM}{rule}{exempt}").into_bytes(),
    );
    let s = render_with(&files, &expand(&files, None));
    let text = texts(&s);
    assert_eq!(
        text,
        [
            "teams/a/cache.yaml:1:1: error[policy/max-replicas]: team a: Cache sessions on prod: kind Cache (kinds/cache.yaml:1), chart charts/cache, cache/templates/deploy.yaml: policy max-replicas on prod: Deployment a/sessions: at most 3 replicas"
        ],
        "prod's values give 4 replicas; b's instance is exempted"
    );
    let units: Vec<String> = s
        .units
        .keys()
        .filter(|u| u.team.0 != "platform")
        .map(|u| format!("{}@{}", u.team, u.cluster))
        .collect();
    assert_eq!(units, ["a@staging", "b@prod", "b@staging"]);
}

#[test]
fn a_kinds_chart_from_a_repository_or_registry_is_asked_for_by_its_pin() {
    for (source, want) in [
        (
            "{repository: https://charts.example/stable, name: cache, version: 1.2.3}",
            PackageSource::ChartRepository {
                url: "https://charts.example/stable".into(),
                chart: "cache".into(),
                version: "1.2.3".into(),
            },
        ),
        (
            "{oci: oci://charts.example/platform/cache, version: 1.2.3, digest: \"sha256:00\"}",
            PackageSource::ChartOci {
                reference: "oci://charts.example/platform/cache".into(),
                version: "1.2.3".into(),
                digest: Some("sha256:00".into()),
            },
        ),
    ] {
        let kind = CACHE.replace("{path: charts/cache}", source);
        let files = charted(&[
            ("kinds/cache.yaml", &kind),
            ("teams/a/cache.yaml", &cache("sessions", "{}")),
        ]);
        let sources: BTreeSet<PackageSource> = package_requests(&files)
            .into_iter()
            .filter(|r| matches!(r.owner, PackageOwner::Team(_)))
            .map(|r| r.source)
            .collect();
        assert_eq!(sources, BTreeSet::from([want]), "{source}");
    }
}
