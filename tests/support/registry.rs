//! A real OCI registry (distribution's `registry`, built from the Go module proxy by
//! `go-build.sh`), started by `registry.sh` on a loopback port with htpasswd basic auth,
//! for tests of charts pulled from a registry. It stops with the test binary, however the
//! binary ends (the script runs until its standard input closes).

use std::path::PathBuf;

use super::script::Script;

pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    pub user: String,
    pub password: String,
    /// The registry's log, access log included.
    pub log: PathBuf,
    script: Script,
}

impl Registry {
    pub fn start(name: &str) -> Registry {
        let script = Script::start(
            "registry.sh",
            name,
            "PONTOON_REGISTRY_CLEANUP",
            "it needs Go (go-build.sh packages builds the registry), curl and python3",
        );
        Registry {
            host: script.get("REGISTRY_HOST"),
            user: script.get("REGISTRY_USER"),
            password: script.get("REGISTRY_PASSWORD"),
            log: PathBuf::from(script.get("REGISTRY_LOG")),
            script,
        }
    }

    /// Stops the registry (its data stays).
    pub fn stop(&self) {
        self.script.ask("stop", "stopped");
    }

    /// Starts it again on the same port with the same data, and waits until it answers.
    pub fn start_again(&self) {
        self.script.ask("start", "ready");
    }

    /// Requests the registry logged whose line holds every one of `parts` (for instance
    /// a path and a user agent).
    pub fn requests(&self, parts: &[&str]) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .count()
    }
}
