use super::*;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("kubeconfig"),
            "apiVersion: v1\nkind: Config\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("token"), "s3cr3t-token\n").expect("write");
        Fixture { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("pontoon.yaml")
    }

    fn load(&self, text: &str) -> Result<Config, ConfigError> {
        Config::from_str(text, &self.path())
    }

    fn problems(&self, text: &str) -> Vec<String> {
        let file = self.path().display().to_string();
        match self.load(text) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(e) => e
                .problems()
                .iter()
                .map(|p| p.to_string().replace(&file, "pontoon.yaml"))
                .collect(),
        }
    }
}

const GOOD: &str = "\
source:
  url: https://git.example.com/platform.git
  ref:
    branch: main
  pollInterval: 30s
  auth:
    token:
      file: token
clusters:
  - name: staging
    kubeconfig: kubeconfig
    context: staging
  - name: prod
    inCluster: true
listen:
  http: 127.0.0.1:9090
sync:
  resyncInterval: 5m
";

#[test]
fn loads_a_complete_config_with_defaults_filled() {
    let f = Fixture::new();
    let cfg = f.load(GOOD).expect("valid config");
    assert_eq!(cfg.source.poll_interval, Duration::from_secs(30));
    assert_eq!(cfg.sync.resync_interval, Duration::from_secs(300));
    assert_eq!(cfg.sync.namespace, DEFAULT_NAMESPACE);
    assert_eq!(cfg.sync.health_timeout, DEFAULT_HEALTH_TIMEOUT);
    assert!(cfg.sync.force_conflicts);
    assert_eq!(cfg.listen.http, "127.0.0.1:9090".parse().expect("addr"));
    assert_eq!(cfg.clusters.len(), 2);
    assert_eq!(
        cfg.clusters[0].connection,
        ClusterConnection::Kubeconfig {
            path: f.dir.path().join("kubeconfig"),
            context: Some("staging".into())
        }
    );
    assert_eq!(cfg.clusters[1].connection, ClusterConnection::InCluster);
    match &cfg.source.location {
        SourceLocation::Git { url, git_ref, auth } => {
            assert_eq!(url, "https://git.example.com/platform.git");
            assert_eq!(git_ref, &GitRef::Branch("main".into()));
            let token = auth
                .token
                .as_ref()
                .expect("token ref")
                .read()
                .expect("token");
            assert_eq!(token.expose(), "s3cr3t-token");
        }
        other => panic!("unexpected source {other:?}"),
    }
}

#[test]
fn unknown_field_names_file_line_and_field() {
    let f = Fixture::new();
    let text = GOOD.replace(
        "  pollInterval: 30s\n",
        "  pollInterval: 30s\n  pollEvery: 1m\n",
    );
    let p = f.problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("pontoon.yaml:6:3: "), "{}", p[0]);
    assert!(p[0].contains("pollEvery"), "{}", p[0]);
}

#[test]
fn wrong_type_names_the_line() {
    let f = Fixture::new();
    let text = GOOD.replace("  resyncInterval: 5m\n", "  concurrency: lots\n");
    let p = f.problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("pontoon.yaml:18:16: "), "{}", p[0]);
}

#[test]
fn bad_duration_explains_the_format() {
    let f = Fixture::new();
    let text = GOOD.replace("pollInterval: 30s", "pollInterval: 30 parsecs");
    let p = f.problems(&text);
    assert!(p[0].starts_with("pontoon.yaml:5:17: "), "{}", p[0]);
    assert!(p[0].contains("invalid duration \"30 parsecs\""), "{}", p[0]);
    assert!(p[0].contains("\"30s\""), "{}", p[0]);
}

/// A zero interval would poll without pause, and a zero resync interval would stop the
/// daemon's timer: refused where it is written.
#[test]
fn a_zero_duration_is_refused_at_its_line() {
    let f = Fixture::new();
    let p = f.problems(&GOOD.replace("pollInterval: 30s", "pollInterval: 0s"));
    assert!(p[0].starts_with("pontoon.yaml:5:17: "), "{}", p[0]);
    assert!(p[0].contains("must be longer than 0s"), "{}", p[0]);
    let p = f.problems(&GOOD.replace("resyncInterval: 5m", "resyncInterval: 0m"));
    assert!(p[0].contains("\"0m\" must be longer than 0s"), "{}", p[0]);
}

#[test]
fn missing_kubeconfig_and_env_var_are_all_reported_in_one_round() {
    let f = Fixture::new();
    let text = GOOD
        .replace("kubeconfig: kubeconfig", "kubeconfig: nowhere/kubeconfig")
        .replace(
            "      file: token",
            "      env: PONTOON_TEST_SURELY_UNSET_VARIABLE",
        );
    let p = f.problems(&text);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].starts_with("pontoon.yaml:8:7: source.auth.token: environment variable PONTOON_TEST_SURELY_UNSET_VARIABLE is not set"), "{}", p[0]);
    assert!(
        p[1].starts_with("pontoon.yaml:11:17: clusters[0].kubeconfig: kubeconfig file "),
        "{}",
        p[1]
    );
    assert!(
        p[1].contains("nowhere/kubeconfig does not exist"),
        "{}",
        p[1]
    );
}

#[test]
fn inline_secret_is_refused_without_echoing_it() {
    let f = Fixture::new();
    let text = GOOD.replace(
        "    token:\n      file: token\n",
        "    token: ghp_verysecretvalue\n",
    );
    let p = f.problems(&text);
    assert!(p[0].starts_with("pontoon.yaml:7:12: "), "{}", p[0]);
    assert!(
        p[0].contains("secrets are never written inline"),
        "{}",
        p[0]
    );
    assert!(
        !p[0].contains("ghp_verysecretvalue"),
        "secret leaked: {}",
        p[0]
    );
}

#[test]
fn credentials_in_url_are_refused_without_echoing_them() {
    let f = Fixture::new();
    let text = GOOD.replace(
        "https://git.example.com",
        "https://bot:hunter2@git.example.com",
    );
    let p = f.problems(&text);
    assert!(
        p[0].contains("source.url: credentials must not be written in the URL"),
        "{}",
        p[0]
    );
    assert!(!p[0].contains("hunter2"), "secret leaked: {}", p[0]);
}

#[test]
fn cluster_names_must_be_unique_and_valid() {
    let f = Fixture::new();
    let text = GOOD.replace("name: prod", "name: staging").replace(
        "context: staging",
        "context: x\n  - name: Prod_1\n    inCluster: true",
    );
    let p = f.problems(&text);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].contains("clusters[1].name: \"Prod_1\" is not a valid cluster name"),
        "{}",
        p[0]
    );
    assert!(
        p[1].contains("clusters[2].name: cluster \"staging\" is listed twice"),
        "{}",
        p[1]
    );
}

#[test]
fn cluster_needs_exactly_one_connection() {
    let f = Fixture::new();
    let text = GOOD.replace("    inCluster: true\n", "");
    let p = f.problems(&text);
    assert!(
        p[0].contains("clusters[1]: missing `kubeconfig`"),
        "{}",
        p[0]
    );
}

#[test]
fn source_needs_url_or_path() {
    let f = Fixture::new();
    let text = "source:\n  pollInterval: 1m\nclusters:\n  - name: a\n    inCluster: true\n";
    let p = f.problems(text);
    assert!(p[0].contains("source: missing `url`"), "{}", p[0]);
}

#[test]
fn ref_must_name_one_thing() {
    let f = Fixture::new();
    let text = GOOD.replace("    branch: main\n", "    branch: main\n    tag: v1\n");
    let p = f.problems(&text);
    assert!(p[0].contains("source.ref: set exactly one of"), "{}", p[0]);
}

#[test]
fn malformed_yaml_names_the_position() {
    let f = Fixture::new();
    let p = f.problems("source:\n  url: [unclosed\nclusters: []\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("pontoon.yaml:"), "{}", p[0]);
    assert!(
        !p[0].starts_with("pontoon.yaml:1:1:"),
        "position should be the broken spot: {}",
        p[0]
    );
}

#[test]
fn directory_source_resolves_relative_to_the_config_file() {
    let f = Fixture::new();
    std::fs::create_dir(f.dir.path().join("platform")).expect("mkdir");
    let cfg = f
        .load("source:\n  path: platform\nclusters:\n  - name: a\n    inCluster: true\n")
        .expect("valid");
    match cfg.source.location {
        SourceLocation::Directory(p) => assert_eq!(p, f.dir.path().join("platform")),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn unreadable_file_is_a_read_error() {
    let err = Config::load(Path::new("/nonexistent/pontoon.yaml")).expect_err("must fail");
    assert!(
        err.to_string()
            .contains("cannot read config file /nonexistent/pontoon.yaml"),
        "{err}"
    );
}

#[test]
fn the_shipped_example_config_is_valid() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/pontoon.yaml"))
            .expect("config/pontoon.yaml");
    let f = Fixture::new();
    // Its secrets and kubeconfigs live under /var/run/pontoon in a deployment.
    let root = f.dir.path().join("run");
    for file in [
        "git/token",
        "webhook/secret",
        "kubeconfigs/staging",
        "forge/token",
        "charts/password",
        "notify/slack-url",
        "notify/audit-hmac",
    ] {
        let p = root.join(file);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, "x").expect("write");
    }
    let age = root.join("age/payments.txt");
    std::fs::create_dir_all(age.parent().expect("parent")).expect("mkdir");
    std::fs::write(&age, include_str!("../sops/testdata/test-key.txt")).expect("write");
    let text = example.replace("/var/run/pontoon", &root.display().to_string());
    let cfg = f.load(&text).expect("example config must be valid");
    let keys = cfg.decryption.keyring().expect("the example's key reads");
    assert_eq!(keys.names().collect::<Vec<_>>(), ["payments-age"]);
    assert_eq!(cfg.clusters.len(), 2);
    assert_eq!(
        cfg.commit_status.as_ref().map(|c| c.provider),
        Some(Provider::Gitea)
    );
    assert_eq!(cfg.charts.hosts.len(), 1);
    assert_eq!(cfg.notifications.platform, ["platform-slack", "audit-log"]);
}

#[test]
fn a_decryption_key_that_is_no_age_identity_is_a_problem_that_never_shows_it() {
    let f = Fixture::new();
    std::fs::write(f.dir.path().join("pasted.txt"), "AGE-SECRET-KEY-1TYPO\n").expect("write");
    let p = f.problems(&format!(
        "{GOOD}decryption:\n  keys:\n    shop: {{file: pasted.txt}}\n    gone: {{file: missing.txt}}\n"
    ));
    let text = p.join("\n");
    assert!(
        text.contains("decryption.keys.shop: key `shop`: line 1 is not an age identity"),
        "{text}"
    );
    assert!(text.contains("decryption.keys.gone"), "{text}");
    assert!(!text.contains("TYPO"), "{text}");
}

#[test]
fn leader_election_must_name_a_configured_cluster() {
    let f = Fixture::new();
    let cfg = f
        .load(&format!(
            "{GOOD}leaderElection:\n  cluster: prod\n  leaseDuration: 20s\n"
        ))
        .expect("valid");
    let le = cfg.leader_election.expect("leader election");
    assert_eq!(
        (
            le.cluster.as_str(),
            le.lease_name.as_str(),
            le.lease_duration
        ),
        ("prod", "pontoon", Duration::from_secs(20))
    );
    let p = f.problems(&format!("{GOOD}leaderElection:\n  cluster: elsewhere\n"));
    assert!(
        p[0].starts_with(
            "pontoon.yaml:20:12: leaderElection.cluster: no cluster named \"elsewhere\""
        ),
        "{}",
        p[0]
    );
}

#[test]
fn the_owner_defaults_to_pontoon_and_names_the_lease() {
    let f = Fixture::new();
    let cfg = f
        .load(&format!("{GOOD}leaderElection:\n  cluster: prod\n"))
        .expect("valid");
    assert_eq!(cfg.sync.owner.as_str(), DEFAULT_OWNER);
    let blue = GOOD.replace("sync:\n", "sync:\n  owner: blue\n");
    let cfg = f
        .load(&format!("{blue}leaderElection:\n  cluster: prod\n"))
        .expect("valid");
    assert_eq!(cfg.sync.owner.as_str(), "blue");
    assert_eq!(
        cfg.leader_election.expect("leader election").lease_name,
        "pontoon-blue"
    );
    let p = f.problems(&GOOD.replace("sync:\n", "sync:\n  owner: Team_A\n"));
    assert!(
        p[0].starts_with("pontoon.yaml:18:10: sync.owner: \"Team_A\" is not a DNS label"),
        "{}",
        p[0]
    );
    let long = "o".repeat(31);
    let p = f.problems(&GOOD.replace("sync:\n", &format!("sync:\n  owner: {long}\n")));
    assert!(p[0].contains("is longer than 30 characters"), "{}", p[0]);
}

#[test]
fn an_unreadable_secret_names_where_it_was_looked_for() {
    let missing = std::path::Path::new("/nonexistent/pontoon/token");
    let e = SecretRef::File(missing.to_owned())
        .read()
        .expect_err("no such file");
    assert!(matches!(e, SecretError::File { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("cannot read secret file /nonexistent/pontoon/token: "),
        "{e}"
    );
    let e = SecretRef::Env("PONTOON_TEST_SURELY_UNSET".into())
        .read()
        .expect_err("unset");
    assert_eq!(
        e.to_string(),
        "environment variable PONTOON_TEST_SURELY_UNSET is not set"
    );
}

/// `GOOD` with `webhook` (already indented under `source`) added to its source.
fn with_webhook(webhook: &str) -> String {
    GOOD.replacen(
        "  pollInterval: 30s\n",
        &format!("  pollInterval: 30s\n{webhook}"),
        1,
    )
}

#[test]
fn a_webhook_needs_a_secret_or_an_explicit_insecure() {
    let f = Fixture::new();
    assert_eq!(
        f.load(GOOD).expect("valid").source.webhook,
        WebhookAuth::Off
    );

    std::fs::write(f.dir.path().join("hook"), "s3cret\n").expect("write");
    let cfg = f
        .load(&with_webhook("  webhook:\n    secret:\n      file: hook\n"))
        .expect("valid");
    assert_eq!(
        cfg.source.webhook,
        WebhookAuth::Secret(SecretRef::File(f.dir.path().join("hook")))
    );
    let cfg = f
        .load(&with_webhook("  webhook:\n    insecure: true\n"))
        .expect("valid");
    assert_eq!(cfg.source.webhook, WebhookAuth::Insecure);

    let p = f.problems(&with_webhook("  webhook: {}\n"));
    assert_eq!(
        p,
        [
            "pontoon.yaml:6:12: source.webhook: set `secret` ({file: PATH} or {env: NAME}) to check each request's signature, or `insecure: true` to accept unsigned requests from anyone who can reach /webhooks/*"
        ]
    );
    let p = f.problems(&with_webhook("  webhook:\n    insecure: false\n"));
    assert!(
        p[0].contains("source.webhook: set `secret`") && p[0].contains("or `insecure: true`"),
        "{p:?}"
    );
    let p = f.problems(&with_webhook(
        "  webhook:\n    insecure: true\n    secret:\n      file: hook\n",
    ));
    assert_eq!(
        p,
        ["pontoon.yaml:9:7: source.webhook: set either `secret` or `insecure: true`, not both"]
    );
}

#[test]
fn an_empty_webhook_secret_is_refused_naming_the_field() {
    let f = Fixture::new();
    std::fs::write(f.dir.path().join("hook"), "\n").expect("write");
    let p = f.problems(&with_webhook("  webhook:\n    secret:\n      file: hook\n"));
    let hook = f.dir.path().join("hook").display().to_string();
    assert_eq!(
        p,
        [format!(
            "pontoon.yaml:8:7: source.webhook.secret: secret file {hook} is empty; an empty secret would let any request through"
        )]
    );
}

#[test]
fn shards_default_to_one_and_more_need_leader_election() {
    let f = Fixture::new();
    let cfg = f.load(GOOD).expect("valid");
    assert_eq!(cfg.sync.shards, 1);
    let three = GOOD.replace("sync:\n", "sync:\n  shards: 3\n");
    let cfg = f
        .load(&format!("{three}leaderElection:\n  cluster: prod\n"))
        .expect("valid");
    assert_eq!(cfg.sync.shards, 3);
    let p = f.problems(&three);
    assert!(
        p[0].starts_with(
            "pontoon.yaml:18:11: sync.shards: more than one shard needs `leaderElection`"
        ),
        "{}",
        p[0]
    );
    let p = f.problems(&GOOD.replace("sync:\n", "sync:\n  shards: 0\n"));
    assert!(
        p[0].starts_with("pontoon.yaml:18:11: sync.shards: must be between 1 and 64"),
        "{}",
        p[0]
    );
}

#[test]
fn full_resync_every_defaults_to_a_full_check_every_ten_minutes_and_is_at_least_one() {
    let f = Fixture::new();
    // resyncInterval 5m: every second resync lists.
    assert_eq!(f.load(GOOD).expect("valid").sync.full_resync_every, 2);
    let every = |interval: &str| {
        let text = GOOD.replace("resyncInterval: 5m", &format!("resyncInterval: {interval}"));
        f.load(&text).expect("valid").sync.full_resync_every
    };
    assert_eq!(every("10m"), 1, "the default interval: every resync lists");
    assert_eq!(every("1h"), 1);
    assert_eq!(every("1m"), 10);
    assert_eq!(every("30s"), 20);
    assert_eq!(every("7m"), 1);
    let set = GOOD.replace("sync:\n", "sync:\n  fullResyncEvery: 4\n");
    assert_eq!(f.load(&set).expect("valid").sync.full_resync_every, 4);
    let p = f.problems(&GOOD.replace("sync:\n", "sync:\n  fullResyncEvery: 0\n"));
    assert!(
        p[0].starts_with("pontoon.yaml:18:20: sync.fullResyncEvery: must be at least 1"),
        "{}",
        p[0]
    );
}
