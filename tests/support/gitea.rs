//! A real Gitea (built from the Go module proxy by `go-build.sh`) per test binary, started
//! on first use by `gitea.sh`, for tests of commit statuses and git over HTTP.
//!
//! Like the control plane, the script runs until its standard input closes; the write end
//! of that pipe lives in a static for the life of the test binary, so Gitea stops with the
//! binary however it ends. Tests share the one server and keep apart by repository name.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use serde_json::{Value, json};

use super::control_plane::repo_root;
use super::git::git;

pub struct Gitea {
    pub dir: PathBuf,
    url: String,
    user: String,
    password: String,
    token: String,
    http: reqwest::Client,
    name: &'static str,
    // Closing it stops Gitea; `stop` and `start` lines stop and restart it.
    stdin: Mutex<ChildStdin>,
    answers: Mutex<std::sync::mpsc::Receiver<String>>,
    _child: Mutex<Child>,
}

static SHARED: OnceLock<Gitea> = OnceLock::new();

/// The Gitea every test of this binary shares (each test uses repositories of its own).
pub fn shared() -> &'static Gitea {
    SHARED.get_or_init(|| Gitea::start("shared"))
}

/// A Gitea of its own for one test (one that stops and starts it), shared by name.
pub fn dedicated(name: &'static str) -> &'static Gitea {
    static ALL: Mutex<Vec<&'static Gitea>> = Mutex::new(Vec::new());
    let mut all = ALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(g) = all.iter().find(|g| g.name == name) {
        return g;
    }
    let g: &'static Gitea = Box::leak(Box::new(Gitea::start(name)));
    all.push(g);
    g
}

impl Gitea {
    fn start(name: &'static str) -> Gitea {
        let dir = std::env::temp_dir().join(format!("pontoon-gitea-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let script = repo_root().join("tests/support/gitea.sh");
        let started = Instant::now();
        let mut child = Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(&dir)
            .env("PONTOON_GITEA_CLEANUP", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stdin = child.stdin.take().expect("stdin is piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut line = String::new();
        loop {
            line.clear();
            let n = stdout.read_line(&mut line).expect("read gitea.sh output");
            if n == 0 {
                panic!(
                    "Gitea failed to start (see the output above; logs in {}); it needs Go and \
                     a C compiler to build gitea, plus git, openssl, curl and python3",
                    dir.display()
                );
            }
            if line.trim() == "ready" {
                break;
            }
        }
        // Keep reading stdout so the script never blocks on a full pipe; its answers to
        // stop/start requests arrive here.
        let (answer_tx, answers) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if answer_tx.send(line.trim().to_owned()).is_err() {
                    break;
                }
            }
        });
        let env = std::fs::read_to_string(dir.join("env")).expect("gitea env file");
        let get = |key: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("{key} missing from gitea env"))
                .to_owned()
        };
        let url = get("GITEA_URL");
        eprintln!("gitea ready in {:.1?} at {url}", started.elapsed());
        Gitea {
            user: get("GITEA_USER"),
            password: get("GITEA_PASSWORD"),
            token: get("GITEA_TOKEN"),
            url,
            http: reqwest::Client::new(),
            dir,
            name,
            stdin: Mutex::new(stdin),
            answers: Mutex::new(answers),
            _child: Mutex::new(child),
        }
    }

    fn ask(&self, request: &str, answer: &str) {
        use std::io::Write;
        let mut stdin = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(stdin, "{request}").expect("write to gitea.sh");
        stdin.flush().expect("flush");
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let got = answers
            .recv_timeout(std::time::Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("gitea {}: no answer to {request}: {e}", self.name));
        assert_eq!(got, answer, "gitea {}: {request}", self.name);
    }

    /// Stops Gitea (its data stays). Only for a [`dedicated`] Gitea.
    pub fn stop(&self) {
        self.ask("stop", "stopped");
    }

    /// Starts Gitea again on the same port, and waits until it answers.
    pub fn start_again(&self) {
        self.ask("start", "ready");
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

    /// The commit statuses of `sha` in repository `repo`, newest first, as Gitea returns them.
    pub async fn statuses(&self, repo: &str, sha: &str) -> Value {
        let path = format!("/repos/{}/{repo}/commits/{sha}/statuses", self.user);
        let resp = self
            .api(reqwest::Method::GET, &path)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status();
        assert!(status.is_success(), "GET {path}: {status}");
        resp.json().await.expect("statuses json")
    }
}
