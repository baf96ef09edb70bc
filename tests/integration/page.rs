//! The status page in a real browser (headless Chromium): a Synced, a Failed and a
//! drifted unit, and a team whose name holds HTML, which must show as text. The
//! screenshot is saved under target/test-output/ for a person to look at.

use std::process::Command;
use std::sync::Arc;

use pontoon::daemon::board::Board;
use pontoon::desired::*;
use pontoon::server::{DriftView, StatusSource};
use pontoon::sync::{UnitResult, UnitState};

use crate::support::control_plane::repo_root;

fn unit(team: &str, cluster: &str) -> UnitId {
    UnitId {
        team: TeamName(team.into()),
        cluster: ClusterName(cluster.into()),
    }
}

/// A board of four units on cluster prod: payments Synced, search Failed, data with drift
/// in report mode (one object drifted, one resolved), and a team named `evil`.
fn four_units(evil: &str) -> Arc<Board> {
    let board = Arc::new(Board::new());
    board.set_leading(true);
    board.record(
        &UnitResult::for_tests(unit("payments", "prod"), UnitState::Synced),
        false,
    );
    let mut failed = UnitResult::for_tests(unit("search", "prod"), UnitState::Failed);
    failed.message_for_tests("Deployment search/query: exceeded its progress deadline");
    board.record(&failed, false);
    board.record(
        &UnitResult::for_tests(unit("data", "prod"), UnitState::Synced),
        false,
    );
    board.drift(
        &unit("data", "prod"),
        DriftView {
            object: "ConfigMap data/settings".into(),
            manager: "kubectl-edit".into(),
            at: "2026-11-24T03:00:00Z".into(),
            corrected: false,
            mode: pontoon::desired::DriftMode::Report,
        },
        true,
    );
    board.drift(
        &unit("data", "prod"),
        DriftView {
            object: "ConfigMap data/flags".into(),
            manager: "kubectl-patch".into(),
            at: "2026-11-24T02:00:00Z".into(),
            corrected: true,
            mode: pontoon::desired::DriftMode::Report,
        },
        false,
    );
    board.record(
        &UnitResult::for_tests(unit(evil, "prod"), UnitState::Synced),
        false,
    );
    board
}

#[tokio::test]
async fn the_status_page_shows_the_grid_and_escapes_user_text() {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("headless Chromium is needed for this test: apt-get install chromium (make test installs it)");

    let evil = "<b>x</b><script>document.title='pwned'</script>";
    let board = four_units(evil);
    assert_eq!(board.units().len(), 4);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = pontoon::server::router(
        prometheus::Registry::new(),
        board.clone(),
        axum::Router::new(),
    );
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let out_dir = repo_root().join("target/test-output");
    std::fs::create_dir_all(&out_dir).expect("output dir");
    let profile = tempfile::tempdir().expect("profile");
    let url = format!("http://{addr}/");
    let flags = |extra: &[String]| {
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.extend(extra.iter().cloned());
        args.push(url.clone());
        args
    };
    let shot = out_dir.join("status-page.png");
    let (chromium2, args) = (
        chromium.to_owned(),
        flags(&[
            "--window-size=1200,700".into(),
            format!("--screenshot={}", shot.display()),
        ]),
    );
    let status = tokio::task::spawn_blocking(move || Command::new(chromium2).args(args).output())
        .await
        .expect("join")
        .expect("run chromium");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000),
        "screenshot written to {}",
        shot.display()
    );

    let (chromium3, args) = (chromium.to_owned(), flags(&["--dump-dom".into()]));
    let dom = tokio::task::spawn_blocking(move || Command::new(chromium3).args(args).output())
        .await
        .expect("join")
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    // What the browser built: one cell per unit, coloured by state.
    assert!(
        dom.contains("<td class=\"Synced\" data-team=\"payments\""),
        "{dom}"
    );
    assert!(
        dom.contains("<td class=\"Failed\" data-team=\"search\""),
        "{dom}"
    );
    assert!(dom.contains("exceeded its progress deadline"), "{dom}");
    assert!(
        dom.contains("<td class=\"OutOfSync\" data-team=\"data\""),
        "drift in report mode: {dom}"
    );
    assert!(dom.contains("kubectl-edit"), "{dom}");
    // Report-mode drift that closed was not corrected by pontoon: it is resolved.
    assert!(
        dom.contains("kubectl-patch</code> at 2026-11-24T02:00:00Z (resolved)"),
        "{dom}"
    );
    // The HTML in a team name is text: no <script> ran (the title is unchanged) and no
    // <b> element was made from it.
    assert!(dom.contains("<title>pontoon</title>"), "{dom}");
    assert!(dom.contains("&lt;b&gt;x&lt;/b&gt;&lt;script&gt;"), "{dom}");
    server.abort();
}
