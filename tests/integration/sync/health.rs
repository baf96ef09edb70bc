//! Health waits against real rollouts (the control plane with nodes): a unit is
//! Progressing while its Deployments roll out, then Synced, or Failed when the health
//! timeout passes first.

use super::*;

#[tokio::test]
async fn health_goes_progressing_then_synced_or_failed_on_timeout() {
    let cp = control_plane::with_nodes();
    let s = syncer(cp).await;
    let team = unique_name("rollout");
    let mut objects = team_base(&team, &[&team]);
    objects.push(deployment(&team, &team, "web", "nginx:1.27", 2));
    // kwok keeps pods of this image from ever passing their readiness check.
    objects.push(deployment(&team, &team, "stuck", "nginx:never-ready", 1));
    let d = unit_desired(&team, cp.name, &[&team], objects);
    let r = s.sync(&d, "r1").await;
    assert_eq!(r.state, UnitState::Progressing, "{r:?}");
    assert_eq!(r.not_ready.len(), 2);
    // A resync with nothing changed writes nothing and reads health from its list, while
    // the deployment controller writes the status.
    let again = s.sync(&d, "r1").await;
    assert_eq!(
        (again.state, again.writes),
        (UnitState::Progressing, 0),
        "{again:?}"
    );
    assert!(
        again.not_ready.iter().any(|(k, _)| k.name == "stuck"),
        "{again:?}"
    );

    // `web` rolls out for real; `stuck` never gets there.
    let since = Instant::now();
    let r = s
        .wait_healthy(
            r,
            since,
            Duration::from_secs(30),
            Duration::from_millis(200),
        )
        .await;
    assert_eq!(r.state, UnitState::Failed, "{r:?}");
    let msg = r.message.clone().unwrap_or_default();
    assert!(
        msg.contains("not healthy after 30s") && msg.contains("stuck"),
        "{msg}"
    );
    let waiting: Vec<&str> = r.not_ready.iter().map(|(k, _)| k.name.as_str()).collect();
    assert_eq!(waiting, ["stuck"], "{r:?}");

    // The next revision's image gets Ready.
    let mut objects = team_base(&team, &[&team]);
    objects.push(deployment(&team, &team, "web", "nginx:1.27", 2));
    objects.push(deployment(&team, &team, "stuck", "nginx:1.27", 1));
    let d = unit_desired(&team, cp.name, &[&team], objects);
    let r = s.sync(&d, "r2").await;
    let r = s
        .wait_healthy(
            r,
            Instant::now(),
            Duration::from_secs(90),
            Duration::from_millis(200),
        )
        .await;
    assert_eq!(r.state, UnitState::Synced, "{r:?}");
}
