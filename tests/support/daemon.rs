//! Running pontoon's daemon in a test: files of a platform repo, a free port for its HTTP
//! server, and the daemon itself with a way to stop it and read what it serves.

use std::path::Path;
use std::time::Duration;

pub use super::daemon_config::free_port;

/// Writes `text` to `root/path`, creating folders.
pub fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

/// `pontoon run --config CONFIG` as a process of its own, its output going to `log`.
pub fn spawn_run(config: &Path, log: &Path) -> std::process::Child {
    let log = std::fs::File::create(log).expect("log file");
    std::process::Command::new(env!("CARGO_BIN_EXE_pontoon"))
        .args(["run", "--config"])
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start pontoon run")
}

/// `pontoon::daemon::run_from_source` on a config file, in this process.
pub struct Daemon {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub base: String,
}

impl Daemon {
    pub fn start(config_path: &Path) -> Daemon {
        let config = pontoon::config::Config::load(config_path).expect("valid config");
        let base = format!("http://{}", config.listen.http);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(pontoon::daemon::run_from_source(config, async move {
            let _ = stopped.await;
        }));
        Daemon { stop, task, base }
    }

    /// Stops it as SIGTERM would, and checks it exits cleanly within its deadline.
    pub async fn finish(self) {
        self.stop.send(()).expect("daemon still running");
        tokio::time::timeout(Duration::from_secs(40), self.task)
            .await
            .expect("daemon stops within its deadline")
            .expect("daemon task")
            .expect("daemon exits cleanly");
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// `/api/status`, or None while the server is not up yet.
    pub async fn status(&self) -> Option<serde_json::Value> {
        reqwest::get(format!("{}/api/status", self.base))
            .await
            .ok()?
            .json()
            .await
            .ok()
    }
}
