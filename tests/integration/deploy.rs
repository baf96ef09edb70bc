//! `deploy/` against the real control plane: it applies server-side, and the RBAC it
//! grants is enough for pontoon to sync a team as that ServiceAccount.

use std::sync::Arc;

use pontoon::cluster::Cluster;
use pontoon::desired::ClusterName;
use pontoon::sync::{SyncOptions, Syncer, UnitState};
use serde_json::json;

use crate::support::control_plane::{self, repo_root};
use crate::support::fixtures::*;

fn ok(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn deploy_base_applies_and_its_rbac_is_enough_to_sync_a_team() {
    let cp = control_plane::shared();
    let root = repo_root();
    let crd = root.join("tests/fixtures/crds/servicemonitors.monitoring.coreos.com.yaml");
    ok(
        cp.kubectl(&["apply", "--server-side", "-f", crd.to_str().expect("path")]),
        "apply CRD fixture",
    );
    ok(
        cp.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/servicemonitors.monitoring.coreos.com",
        ]),
        "wait for CRD",
    );
    let base = root.join("deploy/base");
    let applied = ok(
        cp.kubectl(&[
            "apply",
            "--server-side",
            "--field-manager=deploy-test",
            "-k",
            base.to_str().expect("path"),
        ]),
        "apply deploy/base",
    );
    for expected in [
        "clusterrole.rbac.authorization.k8s.io/pontoon",
        "deployment.apps/pontoon",
        "servicemonitor.monitoring.coreos.com/pontoon",
    ] {
        assert!(
            applied.contains(expected),
            "{expected} not applied:\n{applied}"
        );
    }

    // Act as the ServiceAccount itself (a real token from the TokenRequest API), so the
    // team impersonation pontoon does on top is checked exactly as in a cluster.
    let token = ok(
        cp.kubectl(&[
            "create",
            "token",
            "pontoon",
            "-n",
            "pontoon-system",
            "--duration=10m",
        ]),
        "create token",
    );
    let mut config = cp.config().await;
    config.auth_info.token = Some(token.trim().to_owned().into());
    config.auth_info.client_certificate_data = None;
    config.auth_info.client_key_data = None;
    let cluster = Cluster::from_config(ClusterName(cp.name.into()), config, 8).expect("cluster");
    let syncer = Syncer::new(Arc::new(cluster), SyncOptions::default());

    // `payments` is one of the team identities deploy/base lets pontoon impersonate.
    let team = "payments";
    let mut objects = team_base(team, &[team]);
    objects.push(configmap(
        team,
        team,
        "settings",
        json!({"currency": "EUR"}),
    ));
    let r = syncer
        .sync(&unit_desired(team, cp.name, &[team], objects), "r1")
        .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
    assert!(
        syncer
            .teams_on_cluster()
            .await
            .expect("list inventories")
            .iter()
            .any(|t| t.0 == team)
    );

    // A team the RBAC does not name cannot be impersonated.
    let stranger = "stranger";
    let r = syncer
        .sync(
            &unit_desired(
                stranger,
                cp.name,
                &[],
                vec![configmap(stranger, team, "x", json!({}))],
            ),
            "r1",
        )
        .await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    assert!(r.errors[0].message.contains("impersonate"), "{r:?}");
}
