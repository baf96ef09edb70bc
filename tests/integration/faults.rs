//! Faults the daemon must ride out: one cluster's apiserver stops in the middle of a
//! rollout. The other cluster syncs the new revision without waiting; the stopped one
//! reports Failed with the reason, retries, and syncs once its apiserver is back.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use serde_json::Value;

use crate::support::control_plane::{self, eventually, unique_name};
use crate::support::daemon::{Daemon, write};
use crate::support::daemon_config::DaemonConfig;

async fn unit_state(http: &reqwest::Client, base: &str, cluster: &str) -> Option<Value> {
    let s: Value = http
        .get(format!("{base}/api/status"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    s["units"]
        .as_array()?
        .iter()
        .find(|u| u["cluster"] == cluster)
        .cloned()
}

async fn colour(cms: &Api<ConfigMap>) -> Option<String> {
    cms.get("settings").await.ok()?.data?.get("colour").cloned()
}

#[tokio::test]
async fn a_stopped_apiserver_fails_its_unit_only_and_the_unit_recovers() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("pontoon=info")
        .with_test_writer()
        .try_init();
    let flaky = control_plane::dedicated("flaky");
    let steady = control_plane::dedicated("steady");
    let team = unique_name("fault");
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("platform");
    write(
        &repo,
        "platform.yaml",
        "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {name: f}\nspec:\n  clusters: [{name: flaky}, {name: steady}]\n  policy:\n    allowedKinds: [{group: \"\", kind: ConfigMap}]\n",
    );
    write(
        &repo,
        &format!("teams/{team}/team.yaml"),
        &format!(
            "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {team}}}\nspec:\n  namespaces: [{team}]\n  clusters: {{names: [flaky, steady]}}\n"
        ),
    );
    let app = |colour: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{colour: {colour}}}\n"
        )
    };
    write(&repo, &format!("teams/{team}/app.yaml"), &app("blue"));
    let config = DaemonConfig::dir(&repo)
        .cluster("flaky", &flaky.kubeconfig)
        .cluster("steady", &steady.kubeconfig)
        .apply_timeout("5s");
    let daemon = Daemon::start(&config.write(tmp.path()));
    let base = config.base_url();
    let http = reqwest::Client::new();
    let flaky_cms: Api<ConfigMap> = Api::namespaced(flaky.client().await, &team);
    let steady_cms: Api<ConfigMap> = Api::namespaced(steady.client().await, &team);
    for (cms, name) in [(&flaky_cms, "flaky"), (&steady_cms, "steady")] {
        eventually(
            &format!("blue on {name}"),
            Duration::from_secs(60),
            || async { (colour(cms).await.as_deref() == Some("blue")).then_some(()) },
        )
        .await;
    }

    // The flaky cluster's apiserver stops; a new revision arrives.
    flaky.stop_apiserver();
    write(&repo, &format!("teams/{team}/app.yaml"), &app("green"));
    eventually(
        "green on the steady cluster",
        Duration::from_secs(30),
        || async { (colour(&steady_cms).await.as_deref() == Some("green")).then_some(()) },
    )
    .await;
    let failed = eventually("the flaky unit Failed", Duration::from_secs(60), || async {
        let u = unit_state(&http, &base, "flaky").await?;
        (u["state"] == "Failed").then_some(u)
    })
    .await;
    let error = failed["last_error"].as_str().unwrap_or("");
    // The cause, not only the transport's "client error (Connect)".
    assert!(
        error.contains("cannot reach the cluster") && error.contains("Connection refused"),
        "the reason is shown: {failed}"
    );
    let steady_unit = unit_state(&http, &base, "steady")
        .await
        .expect("steady unit");
    assert_eq!(steady_unit["state"], "Synced", "{steady_unit}");

    // Back: the retry (capped backoff) syncs the revision it missed.
    flaky.start_apiserver();
    eventually(
        "green on the flaky cluster",
        Duration::from_secs(90),
        || async { (colour(&flaky_cms).await.as_deref() == Some("green")).then_some(()) },
    )
    .await;
    eventually("the flaky unit Synced", Duration::from_secs(30), || async {
        let u = unit_state(&http, &base, "flaky").await?;
        (u["state"] == "Synced").then_some(())
    })
    .await;

    daemon.finish().await;
}
