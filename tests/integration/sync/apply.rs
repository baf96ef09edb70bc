//! Applying a unit: create, update and no-op against a real kube-apiserver, discovery
//! shared by units, what happens to an apply left unanswered, server-side apply conflicts,
//! schema errors, CRDs with their custom resources, and impersonation letting the
//! apiserver refuse what a team may not do.

use super::*;

#[tokio::test]
async fn units_starting_together_ask_discovery_once_per_group_version() {
    let cp = control_plane::shared();
    let cluster =
        Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 16).expect("cluster");
    let kinds = [
        ("v1", "Namespace"),
        ("v1", "ConfigMap"),
        ("v1", "Service"),
        ("apps/v1", "Deployment"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ];
    // A hundred units, each resolving its kinds, all at once.
    let resolves = (0..100)
        .flat_map(|_| kinds.iter())
        .map(|(api_version, kind)| {
            let gvk = gvk_of(api_version, kind);
            let cluster = &cluster;
            async move { cluster.resolve(&gvk).await }
        });
    for r in futures::future::join_all(resolves).await {
        r.expect("resolved");
    }
    assert_eq!(cluster.discovery_requests(), 3, "v1, apps/v1, rbac/v1");
    for (api_version, kind, plural, namespaced) in [
        ("v1", "Namespace", "namespaces", false),
        ("apps/v1", "Deployment", "deployments", true),
    ] {
        let r = cluster
            .resolve(&gvk_of(api_version, kind))
            .await
            .expect("resolved");
        assert_eq!(
            (r.resource.plural.as_str(), r.namespaced),
            (plural, namespaced)
        );
    }
    // A kind the server does not serve is an error naming it, asked about again next time
    // (a CRD may bring it).
    let missing = cluster.resolve(&gvk_of("apps/v1", "Nonexistent")).await;
    let message = missing.expect_err("no such kind").to_string();
    assert!(message.contains("Nonexistent"), "{message}");
    assert_eq!(cluster.discovery_requests(), 4);
}

#[tokio::test]
async fn create_update_prune_and_rollback() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("orders");
    let ns = team.clone();
    let mut v1 = team_base(&team, &[&ns]);
    v1.push(configmap(&team, &ns, "a", json!({"k": "1"})));
    v1.push(configmap(&team, &ns, "b", json!({"k": "1"})));
    v1.push(configmap(&team, &ns, "c", json!({"k": "1"})));
    let v1 = unit_desired(&team, cp.name, &[&ns], v1);

    let r = s.sync(&v1, "rev1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(r.created.len(), 6, "{r:?}");
    // The inventory is written before the applies, and once more with the uids the
    // applies returned (what a prune will require).
    assert_eq!(r.writes, 8, "six applies and two inventory writes: {r:?}");
    assert_eq!(cm_data(cp, &ns, "a").await.as_deref(), Some(r#"{"k":"1"}"#));

    // v2: change a, drop c.
    let mut v2 = team_base(&team, &[&ns]);
    v2.push(configmap(&team, &ns, "a", json!({"k": "2"})));
    v2.push(configmap(&team, &ns, "b", json!({"k": "1"})));
    let v2 = unit_desired(&team, cp.name, &[&ns], v2);
    let r = s.sync(&v2, "rev2").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(keys(&r.updated), [format!("ConfigMap {ns}/a")]);
    assert_eq!(keys(&r.pruned), [format!("ConfigMap {ns}/c")]);
    assert_eq!(r.unchanged, 4);
    assert_eq!(cm_data(cp, &ns, "a").await.as_deref(), Some(r#"{"k":"2"}"#));
    assert_eq!(cm_data(cp, &ns, "c").await, None);

    // Rollback to rev1: c comes back, a returns to 1.
    let r = s.sync(&v1, "rev1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(keys(&r.created), [format!("ConfigMap {ns}/c")]);
    assert_eq!(keys(&r.updated), [format!("ConfigMap {ns}/a")]);
    assert_eq!(cm_data(cp, &ns, "a").await.as_deref(), Some(r#"{"k":"1"}"#));
    assert!(cm_data(cp, &ns, "c").await.is_some());

    // The inventory records the revision and every object.
    let inv: Api<ConfigMap> = Api::namespaced(cp.client().await, "pontoon-system");
    let inv = inv
        .get(&format!("pontoon-inventory-{team}"))
        .await
        .expect("inventory");
    let data = inv.data.expect("data");
    assert_eq!(data["revision"], "rev1");
    let entries = crate::support::inventory::inventory_entries(&cp.client().await, &team).await;
    assert_eq!(entries.len(), 6);
}

#[tokio::test]
async fn an_apply_left_unanswered_stays_in_the_inventory_and_is_pruned_later() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("unanswered");
    let ns = team.clone();
    let v1 = unit_desired(&team, cp.name, &[&ns], team_base(&team, &[&ns]));
    let r = s.sync(&v1, "rev1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");

    // The link to the apiserver turns slow: requests arrive at once, answers come later
    // than the apply timeout. The server carries out an apply pontoon gave up on.
    let mut config = cp.config().await;
    let upstream = config
        .cluster_url
        .authority()
        .expect("authority")
        .as_str()
        .parse()
        .expect("socket address");
    let link = SlowLink::start(upstream).await;
    config.cluster_url = format!("https://{}", link.addr).parse().expect("url");
    let cluster = Cluster::from_config(ClusterName(cp.name.into()), config, 16).expect("cluster");
    cluster
        .resolve(&gvk_of("v1", "ConfigMap"))
        .await
        .expect("discovery");
    // Connections opened now, while the link is fast: a new one could not finish its
    // TLS handshake within the apply timeout, and no request would reach the server.
    let warm: Api<ConfigMap> = Api::namespaced(cluster.client().clone(), &ns);
    let params = kube::api::ListParams::default();
    let lists = (0..12).map(|_| warm.list(&params));
    for l in futures::future::join_all(lists).await {
        l.expect("list");
    }
    link.set_delay(Duration::from_millis(1000));
    let slow = Syncer::new(
        Arc::new(cluster),
        SyncOptions {
            apply_timeout: Duration::from_millis(300),
            ..SyncOptions::default()
        },
    );
    let mut v2 = team_base(&team, &[&ns]);
    v2.push(configmap(&team, &ns, "late", json!({"k": "1"})));
    let r = slow
        .sync(&unit_desired(&team, cp.name, &[&ns], v2), "rev2")
        .await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    assert!(
        r.errors
            .iter()
            .any(|e| e.object.ends_with("/late") && e.message.contains("timed out")),
        "{r:?}"
    );
    eventually(
        "the server created it anyway",
        Duration::from_secs(10),
        || async { cm_data(cp, &ns, "late").await },
    )
    .await;

    // The next commit no longer has it: pontoon prunes it like any object it applied. It is
    // all of the team's own objects, which this platform lets go in one commit.
    let mut v3 = v1.clone();
    v3.prune.max_share = 1.0;
    let r = s.sync(&v3, "rev3").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert!(
        keys(&r.pruned).iter().any(|k| k.ends_with("/late")),
        "the object is pruned, not orphaned: {r:?}"
    );
    assert_eq!(cm_data(cp, &ns, "late").await, None);
}

#[tokio::test]
async fn a_resync_with_nothing_changed_sends_no_write_request() {
    let cp = control_plane::quiet();
    let s = syncer(cp).await;
    let team = unique_name("quiet");
    let mut objects = team_base(&team, &[&team]);
    for i in 0..20 {
        objects.push(configmap(
            &team,
            &team,
            &format!("cm{i}"),
            json!({"i": i.to_string()}),
        ));
    }
    // A Service: the apiserver defaults and allocates fields we never wrote.
    objects.push(obj(
        &team,
        Applier::Team,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": team},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    ));
    let desired = unit_desired(&team, cp.name, &[&team], objects);
    let first = s.sync(&desired, "r1").await;
    assert_eq!(first.state, UnitState::Synced, "{first:?}");
    assert!(first.writes >= 24, "{}", first.writes);

    // Give the apiserver's own bookkeeping writes (none expected) a moment, then count.
    let before = cp.write_requests();
    for _ in 0..3 {
        let r = s.sync(&desired, "r1").await;
        assert_eq!(r.state, UnitState::Synced, "{r:?}");
        assert_eq!(r.writes, 0, "{r:?}");
        assert_eq!(r.unchanged, 24);
    }
    let after = cp.write_requests();
    assert_eq!(
        after - before,
        0,
        "kube-apiserver counted {} write requests during no-op resyncs",
        after - before
    );

    // A new Syncer (a restarted daemon) remembers nothing but still writes nothing: the
    // inventory records what each object was left at.
    let fresh = syncer(cp).await;
    let before = cp.write_requests();
    let r = fresh.sync(&desired, "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(
        (r.created.len(), r.updated.len(), r.unchanged),
        (0, 0, 24),
        "{r:?}"
    );
    assert_eq!(cp.write_requests() - before, 0);

    // A controller writes an object's status (its resourceVersion moves, nothing pontoon
    // applied changes): the resync judges it from the object and writes nothing.
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(cp.client().await, &team);
    services
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "True",
                "reason": "Tested", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})),
        )
        .await
        .expect("status write");
    let before = cp.write_requests();
    let r = fresh.sync(&desired, "r1").await;
    assert_eq!((r.writes, r.unchanged), (0, 24), "{r:?}");
    assert_eq!(cp.write_requests() - before, 0);
}

#[tokio::test]
async fn a_crd_and_its_custom_resource_sync_in_one_pass() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("crd");
    let plural = format!("widgets{}", team.replace('-', ""));
    let group = "example.pontoon.dev";
    let mut objects = team_base(&team, &[&team]);
    objects.push(obj(
        &team,
        Applier::Platform,
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.{group}")},
            "spec": {
                "group": group, "scope": "Namespaced",
                "names": {"plural": plural, "singular": plural, "kind": format!("W{}", team.replace('-', ""))},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
            }
        }),
    ));
    objects.push(obj(
        &team,
        Applier::Team,
        json!({"apiVersion": format!("{group}/v1"), "kind": format!("W{}", team.replace('-', "")),
               "metadata": {"name": "w1", "namespace": team}, "spec": {"size": 3}}),
    ));
    let r = s
        .sync(&unit_desired(&team, cp.name, &[&team], objects), "r1")
        .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(r.created.len(), 5, "{r:?}");
}

/// A field another manager took: with `forceConflicts: false` that object fails with the
/// conflict named and keeps the other manager's value; by default pontoon takes the field
/// back and still reports whom it took it from.
#[tokio::test]
async fn a_conflict_is_refused_or_taken_over_as_configured_and_always_reported() {
    let cp = control_plane::shared();
    let team = unique_name("conflict");
    let mut objects = team_base(&team, &[&team]);
    objects.push(configmap(&team, &team, "settings", json!({"mode": "ours"})));
    objects.push(configmap(&team, &team, "other", json!({"k": "v"})));
    let desired = unit_desired(&team, cp.name, &[&team], objects);
    let forcing = syncer(cp).await;
    assert_eq!(forcing.sync(&desired, "r1").await.state, UnitState::Synced);

    let configmaps: Api<ConfigMap> = Api::namespaced(cp.client().await, &team);
    configmaps
        .patch(
            "settings",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "settings"}, "data": {"mode": "theirs"}})),
        )
        .await
        .expect("another manager takes the field");

    let cluster =
        Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 16).expect("cluster");
    let polite = Syncer::new(
        Arc::new(cluster),
        SyncOptions {
            force_conflicts: false,
            ..SyncOptions::default()
        },
    );
    let r = polite.sync(&desired, "r1").await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    assert_eq!(r.errors.len(), 1, "{r:?}");
    assert!(r.errors[0].object.contains("settings"), "{r:?}");
    assert!(
        r.errors[0]
            .message
            .contains("conflict with another field manager")
            && r.errors[0].message.contains("someone-else"),
        "{r:?}"
    );
    assert_eq!(
        cm_data(cp, &team, "settings").await.as_deref(),
        Some(r#"{"mode":"theirs"}"#)
    );

    let r = forcing.sync(&desired, "r1").await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert_eq!(r.conflicts.len(), 1, "{r:?}");
    assert!(
        r.conflicts[0].object.contains("settings")
            && r.conflicts[0].message.contains("took ownership")
            && r.conflicts[0].message.contains("someone-else"),
        "{r:?}"
    );
    assert_eq!(
        cm_data(cp, &team, "settings").await.as_deref(),
        Some(r#"{"mode":"ours"}"#)
    );
}

/// pontoon applies with `fieldValidation=Ignore` (its JSON bodies cannot hold duplicate
/// keys, the only thing that setting adds for an apply); a field the schema does not
/// declare must still be refused by the apiserver, for that object alone.
#[tokio::test]
async fn a_field_the_schema_does_not_declare_fails_that_object_only() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("typo");
    let mut objects = team_base(&team, &[&team]);
    let mut typo = deployment(&team, &team, "web", "registry.example/web:1", 1);
    std::sync::Arc::make_mut(&mut typo.object)["spec"]["replicaz"] = json!(3);
    objects.push(typo);
    objects.push(configmap(&team, &team, "fine", json!({"k": "v"})));
    let r = s
        .sync(&unit_desired(&team, cp.name, &[&team], objects), "r1")
        .await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    assert_eq!(r.errors.len(), 1, "{r:?}");
    assert!(r.errors[0].object.contains("Deployment"), "{r:?}");
    assert!(r.errors[0].message.contains("replicaz"), "{r:?}");
    assert_eq!(
        cm_data(cp, &team, "fine").await.as_deref(),
        Some(r#"{"k":"v"}"#)
    );
    let deployments: Api<Deployment> = Api::namespaced(cp.client().await, &team);
    assert!(deployments.get_opt("web").await.expect("get").is_none());
}

#[tokio::test]
async fn impersonation_lets_the_apiserver_refuse_a_team_outside_its_namespaces() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let (a, b) = (unique_name("team-a"), unique_name("team-b"));
    for t in [&a, &b] {
        let r = s
            .sync(&unit_desired(t, cp.name, &[t], team_base(t, &[t])), "r1")
            .await;
        assert_eq!(r.state, UnitState::Synced, "{r:?}");
    }
    // A crafted desired state: team a's object in team b's namespace, applied as team a.
    let mut objects = team_base(&a, &[&a]);
    objects.push(configmap(&a, &b, "intruder", json!({})));
    objects.push(configmap(&a, &a, "fine", json!({})));
    let r = s
        .sync(&unit_desired(&a, cp.name, &[&a], objects), "r2")
        .await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    let err = r
        .errors
        .iter()
        .find(|e| e.object.contains("intruder"))
        .expect("intruder refused");
    assert!(
        err.message.contains("forbidden")
            && err
                .message
                .contains(&format!("system:serviceaccount:pontoon-teams:{a}")),
        "{err:?}"
    );
    assert_eq!(cm_data(cp, &b, "intruder").await, None);
    assert!(
        cm_data(cp, &a, "fine").await.is_some(),
        "the team's own objects still apply"
    );
}

/// A team that names the daemon's own namespace (configured away from the default the
/// renderer refuses) gets nothing applied: its base would give it admin over pontoon's
/// inventories.
#[tokio::test]
async fn a_team_claiming_pontoons_own_namespace_gets_nothing_applied() {
    let cp = control_plane::shared();
    let home = unique_name("pontoon-home");
    let cluster =
        Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 16).expect("cluster");
    let s = Syncer::new(
        Arc::new(cluster),
        SyncOptions {
            namespace: home.clone(),
            ..SyncOptions::default()
        },
    );
    let team = unique_name("squatter");
    let mut objects = team_base(&team, &[&team, &home]);
    objects.push(configmap(&team, &team, "c", json!({"k": "v"})));
    let r = s
        .sync(
            &unit_desired(&team, cp.name, &[&team, &home], objects),
            "r1",
        )
        .await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    assert!(
        r.errors[0]
            .message
            .contains(&format!("claims namespace {home}")),
        "{r:?}"
    );
    assert_eq!(r.writes, 0, "{r:?}");
    assert!(cm_data(cp, &team, "c").await.is_none());
}
