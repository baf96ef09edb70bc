//! The alert rules with Prometheus' own tooling: `promtool check rules`, the unit tests of
//! every alert (`promtool test rules`), the PrometheusRule holding the same rules, and
//! `promtool check metrics` on what pontoon exports.

use std::process::Command;

use crate::support::control_plane::repo_root;

fn promtool(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(repo_root().join("deploy/prometheus"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect(
            "promtool is needed for this test: apt-get install prometheus (make test installs it)",
        );
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes()).expect("write to promtool");
    }
    child.wait_with_output().expect("promtool")
}

fn ok(out: std::process::Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool failed:\n{text}");
    text
}

#[test]
fn rules_check_and_every_alert_has_a_passing_unit_test_and_a_runbook() {
    let checked = ok(promtool(&["check", "rules", "pontoon-rules.yaml"], None));
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    ok(promtool(
        &["test", "rules", "tests/pontoon-rules.test.yaml"],
        None,
    ));

    let rules: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/prometheus/pontoon-rules.yaml"))
            .expect("rules"),
    )
    .expect("yaml");
    let tests = std::fs::read_to_string(
        repo_root().join("deploy/prometheus/tests/pontoon-rules.test.yaml"),
    )
    .expect("tests");
    for rule in rules["groups"][0]["rules"].as_array().expect("rules") {
        let name = rule["alert"].as_str().expect("alert name");
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "{name} has no promtool unit test"
        );
        assert!(
            rule["annotations"]["runbook"]
                .as_str()
                .is_some_and(|r| r.len() > 20),
            "{name} has no runbook"
        );
    }

    let operator: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/prometheus/prometheusrule.yaml"))
            .expect("rule"),
    )
    .expect("yaml");
    assert_eq!(operator["kind"], "PrometheusRule");
    assert_eq!(
        operator["spec"]["groups"], rules["groups"],
        "prometheusrule.yaml and pontoon-rules.yaml differ"
    );
}

#[test]
fn exported_metrics_pass_promtool_check_metrics() {
    let registry = prometheus::Registry::new();
    let metrics = pontoon::daemon::metrics::Metrics::register(&registry).expect("metrics");
    let source = pontoon::daemon::feed::SourceMetrics::register(&registry).expect("source metrics");
    let unit = pontoon::desired::UnitId {
        team: pontoon::desired::TeamName("shop".into()),
        cluster: pontoon::desired::ClusterName("prod".into()),
    };
    metrics.observe(
        &pontoon::sync::UnitResult::for_tests(unit.clone(), pontoon::sync::UnitState::Synced),
        false,
    );
    metrics.rollout(&std::collections::BTreeMap::from([(
        unit.clone(),
        ("prod".to_owned(), true),
    )]));
    source.fetches.with_label_values(&["success"]).inc();
    source.duration.observe(0.02);
    source.webhooks.with_label_values(&["gitea", "poll"]).inc();
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .expect("encode");
    let out = promtool(&["check", "metrics"], Some(&text));
    ok(out);
}
