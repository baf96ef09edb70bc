//! A server started by one of the `tests/support/*.sh start DIR` scripts. They share one
//! contract: start the server on free loopback ports, write `DIR/env` (KEY=VALUE lines),
//! print `ready`, then run until standard input closes and stop everything. Lines written
//! to standard input are requests (stop, start) answered with one line on stdout.
//!
//! The write end of the pipe lives as long as the [`Script`]; the harnesses keep theirs in
//! statics, so when the test binary exits — normally, by a panic, or killed — the kernel
//! closes the pipe and the script stops its servers.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use super::control_plane::repo_root;

pub struct Script {
    pub dir: PathBuf,
    name: String,
    env: HashMap<String, String>,
    stdin: Mutex<ChildStdin>,
    answers: Mutex<Receiver<String>>,
    child: Mutex<Child>,
}

impl Script {
    /// Runs `tests/support/{script} start DIR` (DIR under the temp dir, named after the
    /// process and `name`, removed afterwards via `cleanup_var=1`) and waits for `ready`.
    /// `needs` says what the server needs, for the message when it does not start.
    pub fn start(script: &str, name: &str, cleanup_var: &str, needs: &str) -> Script {
        Script::start_with(script, name, &[], cleanup_var, needs)
    }

    /// [`Script::start`] with `args` after `start DIR` (e.g. `--nodes`).
    pub fn start_with(
        script: &str,
        name: &str,
        args: &[&str],
        cleanup_var: &str,
        needs: &str,
    ) -> Script {
        let dir = std::env::temp_dir().join(format!(
            "pontoon-{}-{}-{name}",
            script.trim_end_matches(".sh"),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let path = repo_root().join("tests/support").join(script);
        let started = Instant::now();
        let mut child = Command::new("bash")
            .arg(&path)
            .arg("start")
            .arg(&dir)
            .args(args)
            .env(cleanup_var, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
        let stdin = child.stdin.take().expect("stdin is piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut line = String::new();
        loop {
            line.clear();
            let n = stdout
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("read {script} output: {e}"));
            assert!(
                n > 0,
                "{script} {name} failed to start (see the output above; files in {}); {needs}",
                dir.display()
            );
            if line.trim() == "ready" {
                break;
            }
        }
        // Keep reading stdout so the script never blocks on a full pipe; its answers to
        // requests arrive here.
        let (tx, answers) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line.trim().to_owned()).is_err() {
                    break;
                }
            }
        });
        let env = std::fs::read_to_string(dir.join("env"))
            .unwrap_or_else(|e| panic!("{script} wrote no env file: {e}"))
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        eprintln!("{script} {name} ready in {:.1?}", started.elapsed());
        Script {
            dir,
            name: name.to_owned(),
            env,
            stdin: Mutex::new(stdin),
            answers: Mutex::new(answers),
            child: Mutex::new(child),
        }
    }

    /// A value the script wrote to `DIR/env`.
    pub fn get(&self, key: &str) -> String {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from {}'s env", self.name))
            .clone()
    }

    /// Closes the script's standard input, which stops its servers, and waits until the
    /// script has exited.
    pub fn stop(self) {
        drop(self.stdin);
        let mut child = self.child.into_inner().unwrap_or_else(|e| e.into_inner());
        let status = child.wait().expect("wait for the script");
        assert!(status.success(), "{} stopped with {status}", self.name);
    }

    /// Sends a request line and waits for the expected answer.
    pub fn ask(&self, request: &str, answer: &str) {
        let mut stdin = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(stdin, "{request}").expect("write a request to the script");
        stdin.flush().expect("flush");
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let got = answers
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("{}: no answer to {request}: {e}", self.name));
        assert_eq!(got, answer, "{}: {request}", self.name);
    }
}
