//! The binary as a user runs it: exit codes and messages.

use std::process::Command;

fn pontoon(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pontoon"))
        .args(args)
        .output()
        .expect("run pontoon")
}

#[test]
fn config_check_reports_every_problem_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pontoon.yaml");
    std::fs::write(
        &file,
        "source:\n  url: https://example.com/p.git\n  pollInterval: soon\nclusters:\n  - name: a\n    kubeconfig: missing\n",
    )
    .expect("write");
    let out = pontoon(&["config", "check", file.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pontoon.yaml:3:17: "), "{err}");
    assert!(err.contains("invalid duration \"soon\""), "{err}");

    std::fs::write(&file, "source:\n  url: https://example.com/p.git\nclusters:\n  - name: a\n    kubeconfig: missing\n")
        .expect("write");
    let out = pontoon(&["config", "check", file.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pontoon.yaml:5:17: clusters[0].kubeconfig: kubeconfig file"),
        "{err}"
    );
}

#[test]
fn config_check_accepts_a_good_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("kc"), "apiVersion: v1\nkind: Config\n").expect("write");
    let file = dir.path().join("pontoon.yaml");
    std::fs::write(
        &file,
        "source:\n  url: https://example.com/p.git\nclusters:\n  - name: a\n    kubeconfig: kc\n",
    )
    .expect("write");
    let out = pontoon(&["config", "check", file.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 cluster)"));
}
