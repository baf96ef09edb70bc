//! Running a packaging tool (`helm`, `kustomize`) as a child process that cannot reach
//! the network and cannot outlive its timeout: a cleared environment (a fresh `HOME` and
//! Helm directories under the work folder, every proxy pointing at a closed loopback
//! port, no kubeconfig), its output read on threads of its own, and a kill when the
//! timeout passes. Blocking: callers run it off the async runtime.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

/// Output beyond this is refused: a chart is not meant to produce gigabytes.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024 * 1024;

/// Where every proxy variable points: the discard port on loopback, where nothing
/// listens, so a tool that tries the network fails at once instead of reaching it.
const NO_NETWORK_PROXY: &str = "http://127.0.0.1:9";

#[derive(Debug, Error)]
pub enum RunError {
    #[error("cannot start {tool}: {source}")]
    Spawn {
        tool: String,
        source: std::io::Error,
    },
    #[error("{tool} did not finish within {timeout:?} and was stopped")]
    Timeout { tool: String, timeout: Duration },
    #[error("{tool} wrote more than {MAX_OUTPUT_BYTES} bytes")]
    TooLarge { tool: String },
    #[error("waiting for {tool}: {source}")]
    Wait {
        tool: String,
        source: std::io::Error,
    },
}

/// What a finished run said.
#[derive(Debug)]
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program args` in `work` (a folder the caller owns) with no network and no
/// environment but what it is given, stopping it after `timeout`.
pub fn run(
    program: &Path,
    args: &[String],
    work: &Path,
    timeout: Duration,
) -> Result<Output, RunError> {
    let tool = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let home = work.join("home");
    // The child's environment holds no PATH: a bare name is found on pontoon's own.
    let program = on_path(program);
    let mut command = Command::new(&program);
    command
        .args(args)
        .current_dir(work)
        .env_clear()
        .env("HOME", &home)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env("HELM_PLUGINS", home.join("plugins"))
        .env("HELM_REGISTRY_CONFIG", home.join("registry.json"))
        .env("HELM_REPOSITORY_CONFIG", home.join("repositories.yaml"))
        .env("KUBECONFIG", home.join("kubeconfig"))
        .env("NO_PROXY", "")
        .env("no_proxy", "")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        command.env(var, NO_NETWORK_PROXY);
    }
    let mut child = command.spawn().map_err(|source| RunError::Spawn {
        tool: tool.clone(),
        source,
    })?;
    let stdout = child.stdout.take().map(reader);
    let stderr = child.stderr.take().map(reader);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                // Killing closes the pipes, which ends the reader threads.
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::Timeout { tool, timeout });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(source) => {
                let _ = child.kill();
                return Err(RunError::Wait { tool, source });
            }
        }
    };
    let collect = |h: Option<std::thread::JoinHandle<(Vec<u8>, bool)>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    let (out, out_full) = collect(stdout);
    let (err, _) = collect(stderr);
    if out_full {
        return Err(RunError::TooLarge { tool });
    }
    Ok(Output {
        success: status.success(),
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    })
}

/// `program` itself when it names a path; else the first executable of that name on
/// `PATH` (or the name alone, which then fails to start, saying so).
fn on_path(program: &Path) -> std::path::PathBuf {
    if program.components().count() > 1 {
        return program.to_path_buf();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| program.to_path_buf())
}

/// Reads a pipe to its end on a thread of its own, keeping at most
/// [`MAX_OUTPUT_BYTES`]; `true` when there was more.
fn reader<R: Read + Send + 'static>(mut pipe: R) -> std::thread::JoinHandle<(Vec<u8>, bool)> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        let mut full = false;
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if kept.len() + n > MAX_OUTPUT_BYTES {
                        full = true;
                    } else {
                        kept.extend_from_slice(&buf[..n]);
                    }
                }
            }
        }
        (kept, full)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_past_its_timeout_is_stopped_and_the_environment_is_cleared() {
        let work = tempfile::tempdir().expect("tempdir");
        let sh = Path::new("/bin/sh");
        let started = Instant::now();
        let err = run(
            sh,
            &["-c".into(), "sleep 30".into()],
            work.path(),
            Duration::from_millis(300),
        )
        .expect_err("stopped");
        assert!(matches!(err, RunError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20));
        let out = run(
            // A bare name, found on pontoon's PATH though the child gets none.
            Path::new("sh"),
            &[
                "-c".into(),
                "echo \"$HOME $HTTPS_PROXY ${CARGO_MANIFEST_DIR:-cleared}\"".into(),
            ],
            work.path(),
            Duration::from_secs(30),
        )
        .expect("runs");
        assert_eq!(
            out.stdout.trim(),
            format!(
                "{} http://127.0.0.1:9 cleared",
                work.path().join("home").display()
            )
        );
    }
}
