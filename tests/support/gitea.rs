//! A real Gitea (built from the Go module proxy by `go-build.sh`) per test binary, started
//! on first use by `gitea.sh`, for tests of commit statuses and git over HTTP.
//!
//! Like the control plane, the script runs until its standard input closes; the write end
//! of that pipe lives in a static for the life of the test binary, so Gitea stops with the
//! binary however it ends. Tests share the one server and keep apart by repository name.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde_json::{Value, json};

use super::daemon_config::DaemonConfig;
use super::git::git;
use super::script::Script;

pub struct Gitea {
    pub dir: PathBuf,
    url: String,
    user: String,
    password: String,
    token: String,
    http: reqwest::Client,
    script: Script,
}

static SHARED: OnceLock<Gitea> = OnceLock::new();

/// The Gitea every test of this binary shares (each test uses repositories of its own).
pub fn shared() -> &'static Gitea {
    SHARED.get_or_init(|| Gitea::start("shared"))
}

/// A Gitea of its own for one test (one that stops and starts it), shared by name.
pub fn dedicated(name: &'static str) -> &'static Gitea {
    static ALL: Mutex<Vec<(&'static str, &'static Gitea)>> = Mutex::new(Vec::new());
    let mut all = ALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, g)) = all.iter().find(|(n, _)| *n == name) {
        return g;
    }
    let g: &'static Gitea = Box::leak(Box::new(Gitea::start(name)));
    all.push((name, g));
    g
}

impl Gitea {
    fn start(name: &str) -> Gitea {
        let script = Script::start(
            "gitea.sh",
            name,
            "PONTOON_GITEA_CLEANUP",
            "it needs Go and a C compiler to build gitea, plus git, openssl, curl and python3",
        );
        Gitea {
            user: script.get("GITEA_USER"),
            password: script.get("GITEA_PASSWORD"),
            token: script.get("GITEA_TOKEN"),
            url: script.get("GITEA_URL"),
            // A connection per request: a pooled one that Gitea closes as idle just as a
            // request goes out fails that request in transport (seen once in a full run).
            // pontoon's own forge client retries such failures; a check here must not.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("http client"),
            dir: script.dir.clone(),
            script,
        }
    }

    /// Stops Gitea (its data stays). Only for a [`dedicated`] Gitea.
    pub fn stop(&self) {
        self.script.ask("stop", "stopped");
    }

    /// Starts Gitea again on the same port, and waits until it answers.
    pub fn start_again(&self) {
        self.script.ask("start", "ready");
    }

    /// The admin user's password (for git over HTTP with basic auth).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Base URL, e.g. `http://127.0.0.1:34567` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// An API token of the admin user, with every scope.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The admin user, who owns every repository `create_repo` makes.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// A daemon config for this Gitea's repository `repo`: cloned over HTTP into
    /// `dir/cache` with the user's token, webhooks checked against the secret `s3cret`,
    /// commit statuses posted to the repository. The token and the secret are written to
    /// `dir` as the files the config names.
    pub fn daemon_config(&self, repo: &str, dir: &Path) -> DaemonConfig {
        std::fs::write(dir.join("token"), self.token()).expect("token");
        std::fs::write(dir.join("hook-secret"), "s3cret\n").expect("secret");
        let owner = self.user();
        DaemonConfig::git(
            &format!("{}/{owner}/{repo}.git", self.url()),
            &dir.join("cache"),
        )
        .git_token(owner, "token")
        .webhook_secret("hook-secret")
        .gitea_statuses(
            &format!("{}/api/v1", self.url()),
            &format!("{owner}/{repo}"),
            "token",
        )
    }

    /// A request to `/api/v1{path}` authenticated with the token.
    pub fn api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/api/v1{path}", self.url))
            .header("Authorization", format!("token {}", self.token))
    }

    /// Creates an empty repository owned by the admin user and returns its clone URL with
    /// the user's password in it, for git over HTTP.
    pub async fn create_repo(&self, name: &str) -> String {
        let resp = self
            .api(reqwest::Method::POST, "/user/repos")
            .json(&json!({ "name": name, "default_branch": "main", "private": false }))
            .send()
            .await
            .expect("POST /user/repos");
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "create repo {name}: {status} {body}");
        self.clone_url(name)
    }

    /// `http://user:password@host:port/user/NAME.git`.
    pub fn clone_url(&self, repo: &str) -> String {
        let host = self.url.strip_prefix("http://").expect("gitea url is http");
        format!(
            "http://{}:{}@{host}/{}/{repo}.git",
            self.user, self.password, self.user
        )
    }

    /// Pushes HEAD of the work tree `local_dir` to `branch` of repository `repo`.
    pub fn push(&self, local_dir: &Path, repo: &str, branch: &str) {
        git(
            local_dir,
            &[
                "-c",
                "credential.helper=",
                "push",
                "-q",
                &self.clone_url(repo),
                &format!("HEAD:refs/heads/{branch}"),
            ],
        );
    }

    /// Opens a pull request of `head` into `base` in repository `repo`. Gitea registers a
    /// pushed branch from a queue after the push returns: until it has, the branch is "not
    /// found", so that answer is asked again for a while.
    pub async fn open_pull_request(&self, repo: &str, head: &str, base: &str, title: &str) {
        let path = format!("/repos/{}/{repo}/pulls", self.user);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let resp = self
                .api(reqwest::Method::POST, &path)
                .json(&json!({"head": head, "base": base, "title": title}))
                .send()
                .await
                .unwrap_or_else(|e| panic!("POST {path}: {e:?}"));
            let status = resp.status();
            if status.is_success() {
                return;
            }
            let body = resp.text().await.unwrap_or_default();
            assert!(
                status == reqwest::StatusCode::NOT_FOUND && std::time::Instant::now() < deadline,
                "open pull request {head} -> {base}: {status} {body}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// The commit statuses of `sha` in repository `repo`, newest first, as Gitea returns them.
    pub async fn statuses(&self, repo: &str, sha: &str) -> Value {
        let path = format!("/repos/{}/{repo}/commits/{sha}/statuses", self.user);
        let resp = self
            .api(reqwest::Method::GET, &path)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:?}"));
        let status = resp.status();
        assert!(status.is_success(), "GET {path}: {status}");
        resp.json().await.expect("statuses json")
    }
}
