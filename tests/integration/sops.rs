//! SOPS files made at test time by the real `sops` (3.13.3) with keys from the real
//! `age-keygen` (1.3.2), both built from the Go module proxy by
//! `tests/support/go-build.sh sops`: every value type decrypts to what `sops -d` prints;
//! and end to end, two teams on one cluster each decrypt only their own files, the
//! decrypted Secret is applied and its drift corrected, and nothing pontoon printed,
//! served or posted to the real Gitea holds a decrypted value.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use pontoon::sops::{Keyring, Node, SopsFile};
use serde_json::{Value, json};

use crate::support::control_plane::{self, eventually, repo_root, unique_name};
use crate::support::daemon::{spawn_run, write};
use crate::support::daemon_config::DaemonConfig;
use crate::support::git::git;
use crate::support::gitea;

/// Where `sops` and `age-keygen` are, built (or found in the cache) once per run.
fn bin(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = repo_root().join("tests/support/go-build.sh");
        let built = Command::new(&script)
            .arg("sops")
            .status()
            .expect("run go-build.sh sops");
        assert!(built.success(), "go-build.sh sops failed");
        let out = Command::new(&script)
            .arg("bin-dir")
            .output()
            .expect("bin-dir");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .join(name)
}

/// A new age key in `dir/<name>.txt`: the identity file and its public recipient.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let file = dir.join(format!("{name}.txt"));
    let out = Command::new(bin("age-keygen"))
        .arg("-o")
        .arg(&file)
        .output()
        .expect("age-keygen");
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&file).expect("identity");
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("public key line")
        .to_owned();
    (file, recipient)
}

/// `sops encrypt --age RECIPIENT ARGS… FILE`, run in `dir` (which holds no .sops.yaml).
fn encrypt(dir: &Path, file: &str, recipient: &str, args: &[&str]) -> String {
    let out = Command::new(bin("sops"))
        .current_dir(dir)
        .args(["encrypt", "--age", recipient])
        .args(args)
        .arg(file)
        .output()
        .expect("sops encrypt");
    assert!(out.status.success(), "sops encrypt {file}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `sops decrypt ARGS… FILE` with the identity `key`: exactly what it prints.
fn sops_decrypt(dir: &Path, file: &str, key: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(bin("sops"))
        .current_dir(dir)
        .env("SOPS_AGE_KEY_FILE", key)
        .arg("decrypt")
        .args(args)
        .arg(file)
        .output()
        .expect("sops decrypt");
    assert!(out.status.success(), "sops decrypt {file}: {out:?}");
    out.stdout
}

/// Numbers compared by value: `sops -d` may print 1.5e3 where the tree holds 1500.
fn normalised(v: Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.into_iter().map(normalised).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, normalised(v))).collect()),
        other => other,
    }
}

fn to_json(nodes: &[Node]) -> Vec<Value> {
    nodes
        .iter()
        .map(|n| normalised(n.to_json("").expect("UTF-8 values")))
        .collect()
}

const VALUES: &str = r#"password: "correct horse battery staple"
port: 5432
big: 9007199254740993
ratio: 0.125
tiny: 0.000001
negative: -17
enabled: true
disabled: false
empty: ""
nothing: null
unicode: "pässwörd ✓ 鍵"
multiline: |
  first line
  second line
nested:
  user: admin
  tokens: [first-token, second-token, {name: inner, value: 42, on: false}]
note_unencrypted: stays readable
"#;

const MULTI: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: one}\nstringData: {token: first-doc-token}\ntype: Opaque\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: two}\nstringData: {token: second-doc-token, count: \"3\"}\n";

#[test]
fn every_value_type_decrypts_to_what_sops_prints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (key, recipient) = keygen(d, "k");
    let mut keys = Keyring::new();
    keys.add("k", &std::fs::read_to_string(&key).expect("key"))
        .expect("age-keygen's file reads");

    // Scalars of every type, nested maps and lists, the default unencrypted suffix.
    write(d, "values.yaml", VALUES);
    let enc = encrypt(d, "values.yaml", &recipient, &[]);
    let ours = SopsFile::from_yaml_documents(&[&enc])
        .expect("parses")
        .decrypt(&keys, "k")
        .expect("decrypts");
    write(d, "values.enc.yaml", &enc);
    let theirs: Value = serde_json::from_slice(&sops_decrypt(
        d,
        "values.enc.yaml",
        &key,
        &["--output-type", "json"],
    ))
    .expect("sops -d JSON");
    assert_eq!(to_json(&ours), [normalised(theirs)]);

    // Several documents, only the keys encrypted_regex names encrypted.
    write(d, "multi.yaml", MULTI);
    let enc = encrypt(
        d,
        "multi.yaml",
        &recipient,
        &["--encrypted-regex", "^(data|stringData)$"],
    );
    assert!(enc.contains("name: one"), "metadata stays readable: {enc}");
    let texts: Vec<&str> = enc.split("\n---\n").collect();
    let ours = SopsFile::from_yaml_documents(&texts)
        .expect("parses")
        .decrypt(&keys, "k")
        .expect("decrypts");
    write(d, "multi.enc.yaml", &enc);
    let printed = String::from_utf8(sops_decrypt(d, "multi.enc.yaml", &key, &[])).expect("utf-8");
    let theirs: Vec<Value> = serde_saphyr::from_multiple(&printed).expect("sops -d YAML");
    assert_eq!(
        to_json(&ours),
        theirs.into_iter().map(normalised).collect::<Vec<_>>()
    );

    // A JSON file with its own unencrypted suffix.
    write(
        d,
        "app.json",
        r#"{"db": {"password": "json-pass", "port": 5432, "host_plain": "db.internal"}, "flags": [true, 1.5, "x"]}"#,
    );
    let enc = encrypt(
        d,
        "app.json",
        &recipient,
        &["--unencrypted-suffix", "_plain"],
    );
    assert!(enc.contains("db.internal"), "{enc}");
    let ours = SopsFile::from_json(&enc)
        .expect("parses")
        .decrypt(&keys, "k")
        .expect("decrypts");
    write(d, "app.enc.json", &enc);
    let theirs: Value =
        serde_json::from_slice(&sops_decrypt(d, "app.enc.json", &key, &[])).expect("JSON");
    assert_eq!(to_json(&ours), [normalised(theirs)]);

    // A binary file: its exact bytes, none of them UTF-8 text.
    let bytes: Vec<u8> = (0..=255u8).rev().chain([0, 0xff, b'\n']).collect();
    std::fs::write(d.join("blob.bin"), &bytes).expect("write");
    let enc = encrypt(
        d,
        "blob.bin",
        &recipient,
        &["--input-type", "binary", "--output-type", "json"],
    );
    let ours = SopsFile::from_json(&enc)
        .expect("parses")
        .decrypt(&keys, "k")
        .expect("decrypts");
    write(d, "blob.enc.json", &enc);
    let theirs = sops_decrypt(d, "blob.enc.json", &key, &["--output-type", "binary"]);
    assert_eq!(theirs, bytes, "sops -d gives the bytes back");
    match ours[0].get("data") {
        Some(Node::Str(plain)) => assert_eq!(plain.expose(), theirs.as_slice()),
        other => panic!("no data: {other:?}"),
    }
}

#[test]
fn a_changed_value_or_mac_or_another_key_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (key, recipient) = keygen(d, "k");
    let mut keys = Keyring::new();
    keys.add("k", &std::fs::read_to_string(&key).expect("key"))
        .expect("age-keygen's file reads");
    write(d, "values.yaml", VALUES);
    let enc = encrypt(d, "values.yaml", &recipient, &[]);
    SopsFile::from_yaml_documents(&[&enc])
        .expect("parses")
        .decrypt(&keys, "k")
        .expect("untouched, it decrypts");
    let pw_line = enc
        .lines()
        .find(|l| l.starts_with("password: "))
        .expect("password line");
    let port_value = enc
        .lines()
        .find_map(|l| l.strip_prefix("port: "))
        .expect("port line");
    let swapped = enc.replace(pw_line, &format!("password: {port_value}"));
    let e = SopsFile::from_yaml_documents(&[&swapped])
        .expect("parses")
        .decrypt(&keys, "k")
        .expect_err("a value moved to another key");
    assert!(e.to_string().starts_with("the value at `password`"), "{e}");
    let edited = enc.replace("stays readable", "edited");
    let e = SopsFile::from_yaml_documents(&[&edited])
        .expect("parses")
        .decrypt(&keys, "k")
        .expect_err("an unencrypted value edited");
    assert!(e.to_string().starts_with("MAC mismatch"), "{e}");
    let (other, _) = keygen(d, "other");
    let mut wrong = Keyring::new();
    wrong
        .add("other", &std::fs::read_to_string(&other).expect("key"))
        .expect("key");
    let e = SopsFile::from_yaml_documents(&[&enc])
        .expect("parses")
        .decrypt(&wrong, "other")
        .expect_err("another key");
    assert!(!e.to_string().contains("AGE-SECRET-KEY"), "{e}");
}

fn platform(cluster: &str, a: &str, b: &str) -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {{name: sops}}\nspec:\n  clusters: [{{name: {cluster}}}]\n  policy:\n    allowedKinds: [{{group: \"\", kind: Secret}}, {{group: \"\", kind: ConfigMap}}]\n  decryption:\n    teams: {{{a}: key-a, {b}: key-b}}\n"
    )
}

fn team(name: &str, cluster: &str) -> String {
    format!(
        "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {name}}}\nspec:\n  namespaces: [{name}]\n  clusters: {{names: [{cluster}]}}\n"
    )
}

/// A Secret with a password (stringData) and a token (data, base64), encrypted by sops
/// for `recipient` into `teams/<team>/db.yaml`.
fn secret_file(
    work: &Path,
    scratch: &Path,
    team: &str,
    recipient: &str,
    password: &str,
    token: &str,
) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(token);
    write(
        scratch,
        "db.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\ntype: Opaque\nstringData:\n  password: {password}\ndata:\n  token: {b64}\n"
        ),
    );
    let enc = encrypt(
        scratch,
        "db.yaml",
        recipient,
        &["--encrypted-regex", "^(data|stringData)$"],
    );
    write(work, &format!("teams/{team}/db.yaml"), &enc);
}

fn commit_and_push(gitea: &gitea::Gitea, work: &Path, repo: &str, message: &str) -> String {
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", message]);
    gitea.push(work, repo, "main");
    git(work, &["rev-parse", "HEAD"])
}

/// `pontoon ARGS…`: what it printed on stdout and stderr, together.
fn pontoon(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pontoon"))
        .args(args)
        .output()
        .expect("run pontoon");
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn secret_password(api: &Api<Secret>) -> Option<String> {
    let s = api.get_opt("db").await.ok()??;
    let v = s.data?.get("password")?.0.clone();
    String::from_utf8(v).ok()
}

/// The daemon's config in `dir`: the Gitea repo polled with a token, statuses posted
/// there, one cluster, the age `keys` as `decryption.keys`, logging at debug. Its path and
/// the base URL of what it serves.
fn daemon_config(
    dir: &Path,
    repo: &str,
    cluster: &str,
    kubeconfig: &Path,
    keys: Value,
) -> (PathBuf, String) {
    let gitea = gitea::shared();
    std::fs::write(dir.join("token"), gitea.token()).expect("token");
    let owner = gitea.user();
    let config = DaemonConfig::git(
        &format!("{}/{owner}/{repo}.git", gitea.url()),
        &dir.join("cache"),
    )
    .git_token(owner, "token")
    .cluster(cluster, kubeconfig)
    .resync_interval("1h")
    .log_level("pontoon=debug")
    .gitea_statuses(
        &format!("{}/api/v1", gitea.url()),
        &format!("{owner}/{repo}"),
        "token",
    );
    let mut doc = config.to_value();
    doc["decryption"] = json!({ "keys": keys });
    let path = dir.join("pontoon.yaml");
    std::fs::write(&path, serde_saphyr::to_string(&doc).expect("yaml")).expect("write");
    (path, config.base_url())
}

/// What the daemon at `base` serves: `/api/status`, the page, `/metrics`.
async fn served(base: &str) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for path in ["/api/status", "/", "/metrics"] {
        let text = reqwest::get(format!("{base}{path}"))
            .await
            .expect("GET")
            .text()
            .await
            .expect("text");
        out.push((path, text));
    }
    out
}

/// Team b, whose file is encrypted for team a's key, fails with its file and the reason,
/// on Gitea and in `/api/status`, and gets nothing on the cluster.
async fn team_b_fails(first: &str, repo: &str, cluster: &str, b: &str, base: &str) {
    let (cp, gitea) = (control_plane::shared(), gitea::shared());
    let context_b = format!("pontoon/{cluster}/{b}");
    let described = eventually(
        "team b's failure status",
        Duration::from_secs(60),
        || async {
            let list = gitea.statuses(repo, first).await;
            list.as_array()?
                .iter()
                .find(|s| s["context"] == context_b.as_str() && s["status"] == "failure")
                .map(|s| s["description"].as_str().unwrap_or("").to_owned())
        },
    )
    .await;
    assert!(
        described.contains(&format!("teams/{b}/db.yaml")),
        "{described}"
    );
    let status = reqwest::get(format!("{base}/api/status"))
        .await
        .expect("status")
        .text()
        .await
        .expect("text");
    assert!(
        status.contains("it is encrypted for the key `key-a`, not for `key-b`"),
        "{status}"
    );
    let b_secrets: Api<Secret> = Api::namespaced(cp.client().await, b);
    assert_eq!(
        secret_password(&b_secrets).await,
        None,
        "team b got nothing"
    );
}

/// A hand edit of the Secret's data is corrected, and the Event telling of it names the
/// key: its note.
async fn drift_is_corrected_and_named_by_key(
    secrets: &Api<Secret>,
    namespace: &str,
    password: &str,
) -> String {
    let cp = control_plane::shared();
    // Drift on the Secret's data is corrected.
    let patch = json!({"data": {"password": base64::engine::general_purpose::STANDARD.encode("changed-by-hand")}});
    secrets
        .patch("db", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch the Secret by hand");
    eventually(
        "drift on the Secret corrected",
        Duration::from_secs(60),
        || async { (secret_password(secrets).await.as_deref() == Some(password)).then_some(()) },
    )
    .await;

    // The drift, as the Event on the Secret tells it: the key, never the value.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(cp.client().await, namespace);
    let note = eventually("the drift's Event", Duration::from_secs(30), || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("DriftCorrected"))
            .and_then(|e| e.note)
    })
    .await;
    assert!(note.contains("password"), "{note}");
    note
}

#[tokio::test]
async fn two_teams_on_one_cluster_decrypt_only_their_own_files_and_no_value_is_ever_shown() {
    let cp = control_plane::shared();
    let gitea = gitea::shared();
    let repo = unique_name("sops");
    gitea.create_repo(&repo).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (work, scratch) = (tmp.path().join("work"), tmp.path().join("scratch"));
    std::fs::create_dir_all(&scratch).expect("mkdir");
    let (key_a, recipient_a) = keygen(tmp.path(), "key-a");
    let (key_b, _) = keygen(tmp.path(), "key-b");
    let (a, b) = (unique_name("sopsa"), unique_name("sopsb"));
    let cluster = cp.name;
    // The values that must never be shown: each as written and as base64.
    let password = unique_name("pw-first");
    let token = unique_name("tok-first");
    let password2 = unique_name("pw-second");

    std::fs::create_dir(&work).expect("mkdir");
    git(&work, &["init", "-q"]);
    write(&work, "platform.yaml", &platform(cluster, &a, &b));
    write(&work, &format!("teams/{a}/team.yaml"), &team(&a, cluster));
    write(&work, &format!("teams/{b}/team.yaml"), &team(&b, cluster));
    secret_file(&work, &scratch, &a, &recipient_a, &password, &token);
    // Team b holds a file encrypted for team a's key.
    secret_file(&work, &scratch, &b, &recipient_a, &password, &token);
    let first = commit_and_push(gitea, &work, &repo, "secrets");

    let keys = json!({"key-a": {"file": key_a}, "key-b": {"file": key_b}});
    let (config_path, base) = daemon_config(tmp.path(), &repo, cluster, &cp.kubeconfig, keys);
    let log = tmp.path().join("pontoon.log");
    let mut daemon = spawn_run(&config_path, &log);

    // Team a's Secret is applied, decrypted.
    let secrets: Api<Secret> = Api::namespaced(cp.client().await, &a);
    eventually(
        "team a's decrypted Secret",
        Duration::from_secs(120),
        || async {
            (secret_password(&secrets).await.as_deref() == Some(password.as_str())).then_some(())
        },
    )
    .await;
    team_b_fails(&first, &repo, cluster, &b, &base).await;
    let note = drift_is_corrected_and_named_by_key(&secrets, &a, &password).await;

    // A new password: planned without its value, then synced.
    secret_file(&work, &scratch, &a, &recipient_a, &password2, &token);
    let dir = work.display().to_string();
    let cfg = config_path.display().to_string();
    let plan = pontoon(&["plan", "--config", &cfg, "--dir", &dir, "--team", &a]);
    assert!(plan.contains("data.password (secret changed)"), "{plan}");
    let rendered = pontoon(&["render", &dir, "--config", &cfg, "--team", &a]);
    assert!(rendered.contains("password: (secret)"), "{rendered}");
    let shown = pontoon(&[
        "render",
        &dir,
        "--config",
        &cfg,
        "--team",
        &a,
        "--show-secrets",
    ]);
    assert!(
        shown.contains(&base64::engine::general_purpose::STANDARD.encode(&password2)),
        "--show-secrets shows it: {shown}"
    );
    let validated = pontoon(&["validate", &dir]);
    assert!(
        validated.contains("decrypted with the key `key-a`"),
        "{validated}"
    );
    let second = commit_and_push(gitea, &work, &repo, "rotate");
    eventually(
        "the new password applied",
        Duration::from_secs(120),
        || async {
            (secret_password(&secrets).await.as_deref() == Some(password2.as_str())).then_some(())
        },
    )
    .await;
    eventually(
        "team a's status on the new commit",
        Duration::from_secs(60),
        || async {
            let list = gitea.statuses(&repo, &second).await;
            let context = format!("pontoon/{cluster}/{a}");
            list.as_array()?
                .iter()
                .any(|s| s["context"] == context.as_str() && s["status"] == "success")
                .then_some(())
        },
    )
    .await;

    // Everything printed, served and posted.
    let mut seen = served(&base).await;
    seen.extend([
        ("pontoon plan", plan),
        ("pontoon render", rendered),
        ("pontoon validate", validated),
        ("the drift's Event", note),
    ]);
    for sha in [&first, &second] {
        seen.push((
            "commit statuses",
            gitea.statuses(&repo, sha).await.to_string(),
        ));
    }
    daemon.kill().expect("stop pontoon");
    daemon.wait().expect("pontoon stopped");
    let log = std::fs::read_to_string(&log).expect("log");
    assert!(
        log.contains("new revision"),
        "the log is the daemon's: {log}"
    );
    seen.push(("the log", log));
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for secret in [&password, &token, &password2] {
        for form in [secret.to_string(), b64(secret)] {
            for (what, text) in &seen {
                assert!(!text.contains(&form), "{what} shows a decrypted value");
            }
        }
    }
}
