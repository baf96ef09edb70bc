//! The operator's commands on Units (`pontoon reconcile`, `suspend`, `resume`): each runs
//! as the person at the keyboard (their kubeconfig, never the daemon's credentials, so
//! Kubernetes RBAC decides who may and the audit log says who did), and turns the
//! daemon's answers on the Units into lines and an exit code. `main.rs` parses the
//! arguments and hands them here.
//!
//! Writes only the Units' `spec.suspend` and annotations; never a managed object.

pub mod reconcile;
pub mod resume;
pub mod suspend;

use std::path::Path;

use anyhow::Context;

use crate::config::{Config, Owner};

/// One unit (a team on a cluster) an operator's command acts on, and how to reach its
/// cluster.
#[derive(Debug, Clone)]
pub struct Target {
    pub team: String,
    pub cluster: String,
    /// The kubeconfig context; default: the one named like the cluster.
    pub context: Option<String>,
    /// The daemon's `sync.namespace`.
    pub namespace: String,
    /// The daemon's `sync.owner`.
    pub owner: String,
}

impl Target {
    /// A client with the caller's kubeconfig (never the daemon's credentials), in the
    /// context given or else the one named like the cluster.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        client_for(&self.cluster, self.context.as_deref()).await
    }
}

/// A client with the caller's kubeconfig for `cluster`: in `context`, or else the
/// context named like the cluster.
pub async fn client_for(cluster: &str, context: Option<&str>) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read().context("reading your kubeconfig")?;
    let context = match context {
        Some(c) => c.to_owned(),
        None if kubeconfig.contexts.iter().any(|c| c.name == cluster) => cluster.to_owned(),
        None => anyhow::bail!(
            "your kubeconfig has no context named {cluster}: pass --context with the one that reaches cluster {cluster}"
        ),
    };
    let options = kube::config::KubeConfigOptions {
        context: Some(context.clone()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .with_context(|| format!("kubeconfig context {context}"))?;
    kube::Client::try_from(config).context("connecting")
}

/// Which of a team's units a command acts on: one cluster, or every cluster of the
/// daemon's config, with the daemon's namespace and owner.
#[derive(Debug, Clone)]
pub struct Units {
    pub team: String,
    /// One cluster; None: every cluster of `config`.
    pub cluster: Option<String>,
    /// The daemon's config: its clusters, namespace and owner.
    pub config: Option<std::path::PathBuf>,
    pub context: Option<String>,
    /// The daemon's `sync.namespace` (without `config`).
    pub namespace: String,
    /// The daemon's `sync.owner` (without `config`).
    pub owner: String,
}

impl Units {
    /// The clusters, namespace and owner: from the daemon's config when given, else from
    /// the flags.
    fn resolve(&self) -> anyhow::Result<(Vec<String>, String, Owner)> {
        match &self.config {
            Some(file) => {
                let cfg = load_config(file)?;
                let clusters = match &self.cluster {
                    None => cfg.clusters.iter().map(|c| c.name.clone()).collect(),
                    Some(one) => vec![one.clone()],
                };
                Ok((clusters, cfg.sync.namespace, cfg.sync.owner))
            }
            None => Ok((
                self.cluster.iter().cloned().collect(),
                self.namespace.clone(),
                Owner::new(&self.owner).map_err(|e| anyhow::anyhow!("--owner {e}"))?,
            )),
        }
    }

    /// The team's unit on `cluster`, reached as this command says.
    fn on(&self, cluster: &str, namespace: &str, owner: &Owner) -> Target {
        Target {
            team: self.team.clone(),
            cluster: cluster.to_owned(),
            context: self.context.clone(),
            namespace: namespace.to_owned(),
            owner: owner.to_string(),
        }
    }
}

/// The daemon's config, its errors as they read.
pub fn load_config(file: &Path) -> anyhow::Result<Config> {
    Config::load(file).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Exit 0 when every unit did what was asked, 1 otherwise.
fn exit(ok: bool) -> std::process::ExitCode {
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// The newest snapshot of the platform repo the daemon's config points at.
pub async fn snapshot(cfg: &Config) -> anyhow::Result<std::sync::Arc<crate::source::Snapshot>> {
    snapshot_at(cfg, None, None).await
}

/// A snapshot of the platform repo: of `dir` when given (a checkout on disk), else of
/// `revision` (a commit) of the config's repo when given, else its newest.
pub async fn snapshot_at(
    cfg: &Config,
    revision: Option<String>,
    dir: Option<std::path::PathBuf>,
) -> anyhow::Result<std::sync::Arc<crate::source::Snapshot>> {
    use crate::config::{GitRef, SourceLocation};
    let mut source_cfg = cfg.source.clone();
    if let Some(d) = dir {
        source_cfg.location = SourceLocation::Directory(d);
    } else if let (Some(rev), SourceLocation::Git { git_ref, .. }) =
        (revision, &mut source_cfg.location)
    {
        *git_ref = GitRef::Commit(rev);
    }
    let mut source =
        crate::source::Source::from_config(&source_cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let polled = source.poll().await;
    if let Some(e) = polled.error {
        anyhow::bail!("cannot read the platform repo: {e}");
    }
    source.last().context("the platform repo gave no snapshot")
}
