//! The example platform against a real kube-apiserver: every object it renders is
//! accepted by a server-side dry run (admission, validation, defaulting), once the
//! operators' CRDs the kinds build on are installed.

use kube::api::{DynamicObject, Patch, PatchParams};
use pontoon::cluster::{Cluster, gvk_of};
use pontoon::desired::ClusterName;

use crate::support::control_plane::{self, repo_root};

#[tokio::test]
async fn every_rendered_object_passes_a_server_side_dry_run() {
    let cp = control_plane::shared();
    for crd in std::fs::read_dir(repo_root().join("tests/fixtures/crds"))
        .expect("fixtures")
        .flatten()
    {
        let out = cp.kubectl(&[
            "apply",
            "--server-side",
            "-f",
            crd.path().to_str().expect("path"),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "--all",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let snapshot =
        pontoon::source::dir::read(&repo_root().join("config/example-platform")).expect("example");
    let state = pontoon::render::render(&snapshot.files, "example");
    assert!(state.diagnostics.is_empty(), "{:?}", state.diagnostics);
    let cluster =
        Cluster::from_config(ClusterName(cp.name.into()), cp.config().await, 8).expect("cluster");
    let mut checked = 0;
    let mut refused = Vec::new();
    for unit in state.units.values() {
        let mut objects: Vec<_> = unit.objects.iter().collect();
        objects.sort_by_key(|o| o.object["kind"] != "Namespace");
        for o in objects {
            let key = o.key().expect("key");
            let api_version = o.object["apiVersion"].as_str().expect("apiVersion");
            let res = cluster
                .resolve(&gvk_of(api_version, &key.kind))
                .await
                .expect("kind served");
            let api: kube::Api<DynamicObject> =
                Cluster::api(cluster.client().clone(), &res, &key.namespace);
            // Namespaces are created for real, so that the dry runs of what goes in them
            // are judged on their own content.
            let params = if key.kind == "Namespace" {
                PatchParams::apply("pontoon").force()
            } else {
                PatchParams::apply("pontoon").force().dry_run()
            };
            match api
                .patch(&key.name, &params, &Patch::Apply(&o.object))
                .await
            {
                Ok(_) => checked += 1,
                Err(e) => refused.push(format!("{} {key}: {e}", unit.unit)),
            }
        }
    }
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
    assert!(checked > 50, "only {checked} objects checked");
}
