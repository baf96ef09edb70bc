//! The apiserver's audit log (`control-plane.sh` writes one event per write request):
//! who sent each write, and when, so a test counts a client's writes by its user agent.

use std::path::Path;

use jiff::Timestamp;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub verb: String,
    #[serde(default)]
    pub user_agent: String,
    #[serde(default)]
    pub object_ref: Option<ObjectRef>,
    /// The path and query the request was sent to (`?dryRun=All` marks a dry run).
    #[serde(default, rename = "requestURI")]
    pub request_uri: String,
    request_received_timestamp: String,
    stage_timestamp: String,
    /// The HTTP status the apiserver answered with.
    #[serde(default)]
    pub response_status: Option<ResponseStatus>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ResponseStatus {
    #[serde(default)]
    pub code: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
}

impl Event {
    /// When the apiserver finished the request.
    pub fn at(&self) -> Timestamp {
        self.stage_timestamp
            .parse()
            .unwrap_or_else(|e| panic!("audit stageTimestamp {}: {e}", self.stage_timestamp))
    }

    /// When the apiserver received the request: a request received after a moment was
    /// sent after it (a request sent before may finish after).
    pub fn received(&self) -> Timestamp {
        self.request_received_timestamp.parse().unwrap_or_else(|e| {
            panic!(
                "audit requestReceivedTimestamp {}: {e}",
                self.request_received_timestamp
            )
        })
    }

    /// `verb resource namespace/name at time`, for a failure message.
    pub fn describe(&self) -> String {
        let (resource, ns, name) = self
            .object_ref
            .as_ref()
            .map_or(("", "", ""), |o| (&o.resource, &o.namespace, &o.name));
        format!(
            "{} {resource} {ns}/{name} received {} finished {}",
            self.verb, self.request_received_timestamp, self.stage_timestamp
        )
    }
}

/// Every write request the control plane in `dir` logged, oldest first.
pub fn writes(dir: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(dir.join("audit.log")).expect("the apiserver's audit log");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit event {l}: {e}")))
        .collect()
}

/// The writes sent with a user agent starting `agent` that the apiserver received after
/// `after`.
pub fn writes_by(dir: &Path, agent: &str, after: Timestamp) -> Vec<Event> {
    writes(dir)
        .into_iter()
        .filter(|e| e.user_agent.starts_with(agent) && e.received() > after)
        .collect()
}

impl Event {
    /// Whether the apiserver carried the write out (a 2xx answer), rather than refusing it.
    pub fn succeeded(&self) -> bool {
        self.response_status
            .as_ref()
            .is_some_and(|s| (200..300).contains(&s.code))
    }

    /// Whether the request was a dry run (nothing written).
    pub fn dry_run(&self) -> bool {
        self.request_uri.contains("dryRun=All")
    }

    /// Whether the request was about `namespace`: an object in it, or the Namespace itself.
    pub fn touches_namespace(&self, namespace: &str) -> bool {
        self.object_ref.as_ref().is_some_and(|o| {
            o.namespace == namespace || (o.resource == "namespaces" && o.name == namespace)
        })
    }
}

/// The dry runs of objects in (or of) `namespace` that the apiserver received after
/// `after`, oldest first.
pub fn dry_runs_in(dir: &Path, namespace: &str, after: Timestamp) -> Vec<Event> {
    writes(dir)
        .into_iter()
        .filter(|e| e.dry_run() && e.touches_namespace(namespace) && e.received() > after)
        .collect()
}
