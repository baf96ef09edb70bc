//! Health waits: a unit is Progressing while its Deployments roll out, then Synced, or
//! Failed when the health timeout passes first.

use super::*;

#[tokio::test]
async fn health_goes_progressing_then_synced_or_failed_on_timeout() {
    let cp = control_plane::shared();
    let s = syncer(cp).await;
    let team = unique_name("rollout");
    let mut objects = team_base(&team, &[&team]);
    objects.push(deployment(&team, &team, "web", "nginx:1.27", 2));
    objects.push(deployment(&team, &team, "stuck", "nginx:1.27", 1));
    let d = unit_desired(&team, cp.name, &[&team], objects);
    let r = s.sync(&d, "r1").await;
    assert_eq!(r.state, UnitState::Progressing, "{r:?}");
    assert_eq!(r.not_ready.len(), 2);
    // A resync with nothing changed writes nothing and reads health from its list.
    let again = s.sync(&d, "r1").await;
    assert_eq!(
        (again.state, again.writes, again.not_ready.len()),
        (UnitState::Progressing, 0, 2),
        "{again:?}"
    );

    // No controller manager runs: play the Deployment controller for `web` only.
    let deployments: Api<Deployment> = Api::namespaced(cp.client().await, &team);
    let status = json!({"status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                                   "readyReplicas": 2, "availableReplicas": 2}});
    deployments
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
    let since = Instant::now();
    let r = s
        .wait_healthy(r, since, Duration::from_secs(2), Duration::from_millis(200))
        .await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    let msg = r.message.clone().unwrap_or_default();
    assert!(
        msg.contains("not healthy after 2s") && msg.contains("stuck"),
        "{msg}"
    );

    deployments
        .patch_status("stuck", &PatchParams::default(), &Patch::Merge(&json!({"status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}})))
        .await
        .expect("status");
    let r = s.sync(&d, "r1").await;
    let r = s
        .wait_healthy(
            r,
            Instant::now(),
            Duration::from_secs(10),
            Duration::from_millis(200),
        )
        .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
}
