//! `deploy/` against the real control plane with nodes: it applies server-side and its
//! Deployment rolls out. What its RBAC lets pontoon do, and refuses it, is `rbac.rs`.

use kube::Config;
use tokio::sync::OnceCell;

use crate::support::control_plane::{self, ControlPlane, repo_root};

fn ok(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl apply --server-side -k deploy/base` on the control plane with nodes (where the
/// aggregated ClusterRoles are filled, as in a cluster), once per test
/// binary (with the ServiceMonitor CRD it needs); what kubectl printed.
pub(crate) async fn apply_deploy_base() -> &'static str {
    static APPLIED: OnceCell<String> = OnceCell::const_new();
    APPLIED
        .get_or_init(|| async {
            tokio::task::spawn_blocking(apply_deploy_base_now)
                .await
                .expect("apply deploy/base")
        })
        .await
}

fn apply_deploy_base_now() -> String {
    let cp = control_plane::with_nodes();
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
    ok(
        cp.kubectl(&[
            "apply",
            "--server-side",
            "--field-manager=deploy-test",
            "-k",
            base.to_str().expect("path"),
        ]),
        "apply deploy/base",
    )
}

/// A client config that is pontoon's ServiceAccount itself (a real token from the
/// TokenRequest API), so every request, and every impersonation pontoon adds, is
/// authorised by deploy/base's RBAC alone, exactly as in a cluster.
pub(crate) async fn as_pontoon(cp: &ControlPlane) -> Config {
    apply_deploy_base().await;
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
    config
}

#[tokio::test]
async fn deploy_base_applies_server_side() {
    let applied = apply_deploy_base().await;
    for expected in [
        "namespace/pontoon-teams",
        "clusterrole.rbac.authorization.k8s.io/pontoon",
        "role.rbac.authorization.k8s.io/pontoon-impersonate-teams",
        "deployment.apps/pontoon",
        "servicemonitor.monitoring.coreos.com/pontoon",
    ] {
        assert!(
            applied.contains(expected),
            "{expected} not applied:\n{applied}"
        );
    }
    // Its two replicas are scheduled onto kwok's nodes and get Ready.
    let rollout = tokio::task::spawn_blocking(|| {
        control_plane::with_nodes().kubectl(&[
            "-n",
            "pontoon-system",
            "rollout",
            "status",
            "deployment/pontoon",
            "--timeout=120s",
        ])
    })
    .await
    .expect("kubectl");
    ok(rollout, "deploy/base's Deployment rolls out");
}
