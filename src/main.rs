//! The `pontoon` command line: parses arguments, hands them to the library (`daemon`,
//! `render`, `sync`, `source`) and turns its answers into output and exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use pontoon::config::{Config, LogFormat};
use pontoon::desired::Severity;

/// GitOps reconciliation daemon for platform teams.
#[derive(Debug, Parser)]
#[command(name = "pontoon", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: poll the platform repo and keep every cluster equal to it.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Sync every unit once and exit: 0 when all are Synced, 1 otherwise.
    Sync {
        #[arg(long, short)]
        config: PathBuf,
        /// One pass (the only mode; kept explicit for scripts).
        #[arg(long, required = true)]
        once: bool,
    },
    /// Show what a sync would do, without writing: exit 0 when nothing would change,
    /// 2 when something would, 1 on errors.
    Plan {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        team: Option<String>,
        /// Plan a given commit of the configured repo.
        #[arg(long, conflicts_with = "dir")]
        revision: Option<String>,
        /// Plan a local folder instead of the configured repo.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Check the platform's policies (platform.yaml spec.policies) against the live
    /// objects pontoon manages on each cluster: what a new rule, or an exception
    /// expiring, would break. Reads only. Exit 0 when nothing breaks a deny rule without
    /// an exception, 1 otherwise.
    Audit {
        #[arg(long, short)]
        config: PathBuf,
        /// Audit with the policies of a local folder instead of the configured repo.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Release one unit's held deletions for one revision: the sync of that revision goes
    /// ahead past the mass-deletion hold, once. Writes the annotation
    /// `pontoon.dev/release` on the unit's inventory as your own Kubernetes identity (your
    /// kubeconfig, as kubectl uses it), so RBAC decides who may and the audit log records
    /// who did.
    Release {
        /// The team as the platform repo names it.
        #[arg(long)]
        team: String,
        /// The cluster as the platform repo names it.
        #[arg(long)]
        cluster: String,
        /// The exact revision the held unit names; a later one is held again.
        #[arg(long)]
        revision: String,
        /// The kubeconfig context to use; default: the context named like the cluster.
        #[arg(long)]
        context: Option<String>,
        /// Where the daemon keeps its inventories (its `sync.namespace`).
        #[arg(long, default_value = pontoon::config::DEFAULT_NAMESPACE)]
        namespace: String,
        /// The daemon instance whose unit it is (its `sync.owner`).
        #[arg(long, default_value = pontoon::config::DEFAULT_OWNER)]
        owner: String,
    },
    /// Sync a team's units now: sets `pontoon.dev/reconcile-requested-at` on each Unit as
    /// your own Kubernetes identity (your kubeconfig; RBAC decides who may). Exit 0 once
    /// asked, or with `--wait` once every unit answered Ready; 1 otherwise.
    Reconcile {
        /// The team as the platform repo names it.
        #[arg(long)]
        team: String,
        /// One cluster; default: every cluster of `--config`.
        #[arg(long, required_unless_present = "config")]
        cluster: Option<String>,
        /// The daemon's config: its clusters, namespace and owner.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Have the daemon poll the platform repo first (a commit pushed a moment ago).
        #[arg(long)]
        with_source: bool,
        /// Follow each Unit until the daemon answered, print its summary.
        #[arg(long)]
        wait: bool,
        /// How long `--wait` waits.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// The kubeconfig context to use; default: the context named like the cluster.
        #[arg(long)]
        context: Option<String>,
        /// The daemon's `sync.namespace` (without `--config`).
        #[arg(long, default_value = pontoon::config::DEFAULT_NAMESPACE)]
        namespace: String,
        /// The daemon's `sync.owner` (without `--config`).
        #[arg(long, default_value = pontoon::config::DEFAULT_OWNER)]
        owner: String,
    },
    /// Suspend a team's units: no new revision is applied, and drift is left alone
    /// unless --keep-correcting (then corrected at the revision each runs). Sets
    /// `spec.suspend` on each Unit as you (field manager `pontoon-cli:<your user>`).
    Suspend {
        #[command(flatten)]
        units: UnitArgs,
        /// Why, for whoever looks: the incident, the change.
        #[arg(long)]
        reason: String,
        /// Resume by itself after this long (e.g. `2h`).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        for_: Option<std::time::Duration>,
        /// Keep correcting drift at the revision each unit runs.
        #[arg(long)]
        keep_correcting: bool,
    },
    /// Resume suspended units: each takes the newest revision its rollout stage allows.
    /// One team with `--team`, or with `--all` every suspended unit of the config's
    /// clusters, in waves: stage by stage, each cluster's `platform` unit before its
    /// teams; `--wait` resumes a wave only once the one before is Ready and stops at the
    /// first that is not (exit 1, the rest left suspended).
    Resume {
        /// The team as the platform repo names it; with `--all`, repeat to resume only
        /// these teams.
        #[arg(long, required_unless_present = "all")]
        team: Vec<String>,
        /// Every suspended unit of the config's clusters, in the rollout's order.
        #[arg(long, requires = "config")]
        all: bool,
        /// One cluster; default: every cluster of `--config`. With `--all` it may repeat.
        #[arg(long, required_unless_present = "config")]
        cluster: Vec<String>,
        /// The daemon's config: its platform repo, clusters, namespace and owner.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// With `--all`: resume a wave once the one before is Ready, stop at a failure.
        #[arg(long, requires = "all")]
        wait: bool,
        /// How long `--wait` waits for each wave.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// The kubeconfig context to use (one cluster); default: the context named like
        /// the cluster.
        #[arg(long, conflicts_with = "all")]
        context: Option<String>,
        /// The daemon's `sync.namespace` (without `--config`).
        #[arg(long, default_value = pontoon::config::DEFAULT_NAMESPACE)]
        namespace: String,
        /// The daemon's `sync.owner` (without `--config`).
        #[arg(long, default_value = pontoon::config::DEFAULT_OWNER)]
        owner: String,
    },
    /// Work with a unit's inventory on a cluster.
    Inventory {
        #[command(subcommand)]
        command: InventoryCommand,
    },
    /// Print the objects a platform repo renders to, as YAML. Secrets' values are
    /// replaced by `(secret)` unless `--show-secrets` is given.
    Render {
        repo: PathBuf,
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        cluster: Option<String>,
        /// Decrypt SOPS files with the keys of this daemon config (without it, their
        /// structure is checked and their encrypted values render empty).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print Secrets' values as they are.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Check a platform repo and print every diagnostic. Exit 1 on errors.
    Validate {
        repo: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Work with the daemon's config file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the version.
    Version,
}

/// Which units an operator's command acts on (`suspend`, `resume`).
#[derive(Debug, clap::Args)]
struct UnitArgs {
    /// The team as the platform repo names it.
    #[arg(long)]
    team: String,
    /// One cluster; default: every cluster of `--config`.
    #[arg(long, required_unless_present = "config")]
    cluster: Option<String>,
    /// The daemon's config: its clusters, namespace and owner.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The kubeconfig context to use; default: the context named like the cluster.
    #[arg(long)]
    context: Option<String>,
    /// The daemon's `sync.namespace` (without `--config`).
    #[arg(long, default_value = pontoon::config::DEFAULT_NAMESPACE)]
    namespace: String,
    /// The daemon's `sync.owner` (without `--config`).
    #[arg(long, default_value = pontoon::config::DEFAULT_OWNER)]
    owner: String,
}

impl From<UnitArgs> for pontoon::cli::Units {
    fn from(a: UnitArgs) -> Self {
        pontoon::cli::Units {
            team: a.team,
            cluster: a.cluster,
            config: a.config,
            context: a.context,
            namespace: a.namespace,
            owner: a.owner,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
    /// GitHub workflow annotations, for pull-request checks.
    Github,
}

#[derive(Debug, Subcommand)]
enum InventoryCommand {
    /// Write a lost or unreadable inventory again from the objects labelled for the team:
    /// those in the team's namespaces (Namespaces labelled for it) and its cluster-scoped
    /// ones; labelled objects elsewhere are left out and listed. Prints every entry.
    /// Runs as your own Kubernetes identity (your kubeconfig).
    Rebuild {
        /// The team as the platform repo names it.
        #[arg(long)]
        team: String,
        /// The cluster as the platform repo names it.
        #[arg(long)]
        cluster: String,
        /// The kubeconfig context to use; default: the context named like the cluster.
        #[arg(long)]
        context: Option<String>,
        /// Where the daemon keeps its inventories (its `sync.namespace`).
        #[arg(long, default_value = pontoon::config::DEFAULT_NAMESPACE)]
        namespace: String,
        /// The daemon instance whose unit it is (its `sync.owner`).
        #[arg(long, default_value = pontoon::config::DEFAULT_OWNER)]
        owner: String,
        /// Print what the inventory would hold; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a config file: every field, path, variable and name. Exit 1 on any problem.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => config_check(&file),
        Command::Version => {
            println!("pontoon {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Inventory {
            command:
                InventoryCommand::Rebuild {
                    team,
                    cluster,
                    context,
                    namespace,
                    owner,
                    dry_run,
                },
        } => run_on_worker(rebuild_cmd(
            pontoon::cli::Target {
                team,
                cluster,
                context,
                namespace,
                owner,
            },
            dry_run,
        )),
        Command::Render {
            repo,
            team,
            cluster,
            config,
            show_secrets,
        } => render_cmd(
            &repo,
            team.as_deref(),
            cluster.as_deref(),
            config.as_deref(),
            show_secrets,
        ),
        Command::Validate { repo, format } => validate_cmd(&repo, format),
        Command::Run { config } => run_on_worker(run_cmd(config)),
        Command::Sync { config, .. } => run_on_worker(sync_once(config)),
        Command::Plan {
            config,
            cluster,
            team,
            revision,
            dir,
        } => run_on_worker(plan_cmd(config, cluster, team, revision, dir)),
        Command::Audit { config, dir } => run_on_worker(audit_cmd(config, dir)),
        Command::Release {
            team,
            cluster,
            revision,
            context,
            namespace,
            owner,
        } => run_on_worker(release_cmd(
            pontoon::cli::Target {
                team,
                cluster,
                context,
                namespace,
                owner,
            },
            revision,
        )),
        Command::Reconcile {
            team,
            cluster,
            config,
            with_source,
            wait,
            timeout,
            context,
            namespace,
            owner,
        } => run_on_worker(pontoon::cli::reconcile::reconcile(
            pontoon::cli::Units {
                team,
                cluster,
                config,
                context,
                namespace,
                owner,
            },
            pontoon::cli::reconcile::Asking {
                with_source,
                wait: wait.then_some(timeout),
            },
        )),
        Command::Suspend {
            units,
            reason,
            for_,
            keep_correcting,
        } => run_on_worker(async move {
            let spec = pontoon::cli::suspend::Suspending {
                reason,
                for_,
                keep_correcting,
            }
            .spec()?;
            pontoon::cli::suspend::suspend(units.into(), Some(spec)).await
        }),
        Command::Resume {
            team,
            all,
            cluster,
            config,
            wait,
            timeout,
            context,
            namespace,
            owner,
        } => match config {
            Some(config) if all => run_on_worker(pontoon::cli::resume::resume_all(
                pontoon::cli::resume::Resuming {
                    config,
                    clusters: cluster,
                    teams: team,
                    wait: wait.then_some(timeout),
                },
            )),
            config => match (<[String; 1]>::try_from(team), cluster.len()) {
                (Ok([team]), 0 | 1) => {
                    let units = pontoon::cli::Units {
                        team,
                        cluster: cluster.into_iter().next(),
                        config,
                        context,
                        namespace,
                        owner,
                    };
                    run_on_worker(pontoon::cli::suspend::suspend(units, None))
                }
                _ => Err(anyhow::anyhow!(
                    "repeat --team or --cluster only with --all"
                )),
            },
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc's malloc gives threads that allocate at once arenas of their own, up to eight per
/// core, and memory freed in one arena serves no other: a runtime whose workers take
/// turns at the same requests keeps the high-water mark of every arena. With two, a
/// `pontoon run` of 10,000 objects peaked at 86.5 MiB where glibc's default (16 arenas
/// on 2 cores) peaked at 92.5 MiB, and a `sync --once` with nothing to do at 64 MiB
/// instead of 68 MiB, with no CPU cost seen (`cargo bench --bench restart`, with and
/// without `MALLOC_ARENA_MAX=16`). `MALLOC_ARENA_MAX` set in the environment still
/// decides.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in main, before any other thread exists; mallopt
        // only changes a malloc tunable and reports failure by its return value, which
        // leaves the default in place.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Runs a command on a worker of a new runtime. Driven by `block_on` on the main thread
/// instead, every apiserver response would have to wake that thread from a worker (a
/// futex wake and a context switch per request: a third more CPU in a sync of 10,000
/// objects, measured by `cargo bench --bench sync`).
fn run_on_worker<F>(command: F) -> anyhow::Result<ExitCode>
where
    F: std::future::Future<Output = anyhow::Result<ExitCode>> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async { tokio::spawn(command).await.context("command task")? })
}

fn config_check(file: &Path) -> anyhow::Result<ExitCode> {
    match Config::load(file) {
        Ok(cfg) => {
            println!(
                "{}: ok ({} cluster{})",
                file.display(),
                cfg.clusters.len(),
                if cfg.clusters.len() == 1 { "" } else { "s" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn load_config(file: &Path) -> anyhow::Result<Config> {
    Config::load(file).map_err(|e| anyhow::anyhow!("{e}"))
}

fn read_repo(repo: &Path) -> anyhow::Result<pontoon::source::Snapshot> {
    pontoon::source::dir::read(repo).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Renders a folder read as a snapshot, the entries it did not read included.
/// SOPS files are decrypted with `keys`, or without keys only checked.
/// Charts and Kustomize folders are expanded with the tools `packages` names, with no
/// cluster to ask.
fn render_snapshot(
    snapshot: &pontoon::source::Snapshot,
    keys: Option<&pontoon::sops::Keyring>,
    packages: &pontoon::config::PackagesConfig,
) -> pontoon::desired::DesiredState {
    let expansions =
        pontoon::daemon::packages::Packages::offline(packages).expand_blocking(&snapshot.files);
    pontoon::render::render_expanded(
        &snapshot.files,
        &snapshot.skipped,
        &snapshot.revision,
        &Default::default(),
        keys.map_or(
            pontoon::render::Decryption::StructureOnly,
            pontoon::render::Decryption::Keys,
        ),
        Some(pontoon::daemon::poll_and_render::today()),
        &expansions,
    )
}

/// Exit 1 when any diagnostic is an error; warnings alone do not fail.
fn exit_for(diagnostics: &[pontoon::desired::Diagnostic]) -> ExitCode {
    if diagnostics.iter().any(|d| d.severity == Severity::Error) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn render_cmd(
    repo: &Path,
    team: Option<&str>,
    cluster: Option<&str>,
    config: Option<&Path>,
    show_secrets: bool,
) -> anyhow::Result<ExitCode> {
    let snapshot = read_repo(repo)?;
    let (keys, packages) = match config {
        Some(c) => {
            let config = load_config(c)?;
            (Some(config.decryption.keyring()?), config.packages)
        }
        None => (None, Default::default()),
    };
    let state = render_snapshot(&snapshot, keys.as_ref(), &packages);
    for d in state.diagnostics.iter() {
        eprintln!("{d}");
    }
    let mut out = String::new();
    for (id, unit) in &state.units {
        if team.is_some_and(|t| t != id.team.0) || cluster.is_some_and(|c| c != id.cluster.0) {
            continue;
        }
        for o in &unit.objects {
            out.push_str(&format!(
                "---\n# cluster: {}, team: {}, from {}\n",
                id.cluster, id.team, o.source
            ));
            let yaml = if show_secrets {
                serde_saphyr::to_string(&o.object)
            } else {
                serde_saphyr::to_string(&pontoon::render::redacted(&o.object.to_value()))
            };
            out.push_str(&yaml.context("writing YAML")?);
        }
    }
    print!("{out}");
    Ok(exit_for(&state.diagnostics))
}

fn validate_cmd(repo: &Path, format: Format) -> anyhow::Result<ExitCode> {
    let snapshot = read_repo(repo)?;
    let state = render_snapshot(&snapshot, None, &Default::default());
    match format {
        Format::Text => {
            print!("{}", pontoon::render::format_text(&state.diagnostics));
            let errors = state
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            eprintln!(
                "{} error{}, {} warning{}; {} units from {} teams",
                errors,
                if errors == 1 { "" } else { "s" },
                state.diagnostics.len() - errors,
                if state.diagnostics.len() - errors == 1 {
                    ""
                } else {
                    "s"
                },
                state.units.len(),
                state
                    .units
                    .keys()
                    .map(|u| &u.team)
                    .collect::<std::collections::BTreeSet<_>>()
                    .len()
            );
        }
        Format::Json => println!("{}", serde_json::to_string_pretty(&state.diagnostics)?),
        Format::Github => print!("{}", pontoon::render::format_github(&state.diagnostics)),
    }
    Ok(exit_for(&state.diagnostics))
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PONTOON_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: a log redirected to a file or a collector stays plain.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn run_cmd(config_path: PathBuf) -> anyhow::Result<ExitCode> {
    let mut config = load_config(&config_path)?;
    init_tracing(&config);
    loop {
        let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<Config>(1);
        let _config_watch = pontoon::daemon::watch_config(&config_path, reload_tx)?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(pontoon::daemon::run_from_source(
            config.clone(),
            async move {
                let _ = stop_rx.await;
            },
        ));
        let next = tokio::select! {
            _ = pontoon::daemon::signal() => None,
            new = reload_rx.recv() => new,
        };
        let _ = stop_tx.send(());
        running.await.context("daemon task")??;
        match next {
            None => return Ok(ExitCode::SUCCESS),
            Some(new) => {
                tracing::info!(file = %config_path.display(), "config changed and is valid: restarting with it");
                config = new;
            }
        }
    }
}

async fn audit_cmd(config_path: PathBuf, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = load_config(&config_path)?;
    let snapshot = pontoon::cli::snapshot_at(&config, None, dir).await?;
    let syncers = pontoon::daemon::connect(&config).await?;
    let today = pontoon::daemon::poll_and_render::today();
    let packages =
        pontoon::daemon::packages::Packages::new(&config.packages, &config.charts, &syncers);
    let audit = pontoon::daemon::audit::audit(&snapshot, &syncers, &packages, today).await?;
    print!("{}", pontoon::daemon::audit::report(&audit));
    Ok(if audit.denies() || !audit.problems.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn sync_once(config_path: PathBuf) -> anyhow::Result<ExitCode> {
    let config = load_config(&config_path)?;
    init_tracing(&config);
    let snapshot = pontoon::cli::snapshot_at(&config, None, None).await?;
    let syncers = pontoon::daemon::connect(&config).await?;
    let owners = pontoon::daemon::poll_and_render::namespace_owners(&syncers).await;
    let keys = pontoon::daemon::poll_and_render::load_keys(&config.decryption).await?;
    let packages =
        pontoon::daemon::packages::Packages::new(&config.packages, &config.charts, &syncers);
    let state = pontoon::daemon::poll_and_render::render(
        snapshot,
        owners,
        &config.sync.owner,
        &keys,
        &packages,
    )
    .await;
    for d in &state.diagnostics {
        eprintln!("{d}");
    }
    if state.platform_failed {
        eprintln!("platform.yaml is broken: nothing synced");
        return Ok(ExitCode::FAILURE);
    }
    let mut all_synced = state.failed_teams.is_empty();
    let mut synced = Vec::new();
    for syncer in syncers.values() {
        synced.extend(
            syncer
                .sync_cluster(&state)
                .await
                .into_iter()
                .map(|r| (syncer, r)),
        );
    }
    // Every unit's rollout is waited for at once: the slowest one sets the time, and each
    // unit still has the whole health timeout from the end of the applies.
    let waited_from = std::time::Instant::now();
    let timeout = config.sync.health_timeout;
    let state = &state;
    let settle = |syncer: std::sync::Arc<pontoon::sync::Syncer>, r: pontoon::sync::UnitResult| async move {
        match state.units.get(&r.unit) {
            // Waits for health, and syncs again whenever objects waiting for others
            // (dependsOn) can be applied.
            Some(desired) if r.state == pontoon::sync::UnitState::Progressing => {
                syncer
                    .settle(
                        desired,
                        &state.revision,
                        r,
                        waited_from,
                        timeout,
                        std::time::Duration::from_secs(2),
                    )
                    .await
            }
            None if r.state == pontoon::sync::UnitState::Progressing => {
                syncer
                    .wait_healthy(r, waited_from, timeout, std::time::Duration::from_secs(2))
                    .await
            }
            _ => r,
        }
    };
    // The platform units settle first; a team's objects that wait for a component are
    // then synced again, the components' health being known.
    let (platform, teams): (Vec<_>, Vec<_>) = synced
        .into_iter()
        .partition(|(_, r)| r.unit.team.0 == pontoon::desired::PLATFORM_UNIT);
    let mut results =
        futures::future::join_all(platform.into_iter().map(|(s, r)| settle(s.clone(), r))).await;
    results.extend(
        futures::future::join_all(teams.into_iter().map(|(syncer, r)| async move {
            let r = match state.units.get(&r.unit) {
                Some(desired) if r.waits_for_components() => {
                    syncer.sync(desired, &state.revision).await
                }
                _ => r,
            };
            settle(syncer.clone(), r).await
        }))
        .await,
    );
    for r in results {
        println!(
            "{:<24} {:<12} {}{}",
            r.unit.to_string(),
            r.state.as_str(),
            r.summary(),
            r.message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
        all_synced &= r.state == pontoon::sync::UnitState::Synced;
    }
    for team in state.failed_teams.keys() {
        println!(
            "{:<24} {:<12} render failed; clusters left as they were",
            format!("*/{team}"),
            "Failed"
        );
    }
    Ok(if all_synced {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn plan_cmd(
    config_path: PathBuf,
    cluster: Option<String>,
    team: Option<String>,
    revision: Option<String>,
    dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let config = load_config(&config_path)?;
    let snapshot = pontoon::cli::snapshot_at(&config, revision, dir).await?;
    let syncers = pontoon::daemon::connect(&config).await?;
    let owners = pontoon::daemon::poll_and_render::namespace_owners(&syncers).await;
    let keys = pontoon::daemon::poll_and_render::load_keys(&config.decryption).await?;
    let packages =
        pontoon::daemon::packages::Packages::new(&config.packages, &config.charts, &syncers);
    let state = pontoon::daemon::poll_and_render::render(
        snapshot,
        owners,
        &config.sync.owner,
        &keys,
        &packages,
    )
    .await;
    for d in &state.diagnostics {
        eprintln!("{d}");
    }
    if state.platform_failed {
        return Ok(ExitCode::FAILURE);
    }
    let mut changes = false;
    let mut errors = !state.failed_teams.is_empty();
    for (id, unit) in &state.units {
        if cluster.as_ref().is_some_and(|c| c != &id.cluster.0)
            || team.as_ref().is_some_and(|t| t != &id.team.0)
        {
            continue;
        }
        let Some(syncer) = syncers.get(&id.cluster) else {
            println!("{id}: no connection configured for cluster {}", id.cluster);
            errors = true;
            continue;
        };
        let plan = syncer
            .plan_at(unit, &state.revision)
            .await
            .with_context(|| format!("planning {id}"))?;
        print_plan(&id.to_string(), &plan);
        changes |= plan.changes_anything();
        // A held unit is not synced as its repo says until someone releases it.
        errors |= plan.counts().3 > 0 || plan.held.is_some();
    }
    // The teams that left the repo (or stopped targeting a cluster): removed by the sync.
    for (name, syncer) in &syncers {
        if cluster.as_ref().is_some_and(|c| c != &name.0) {
            continue;
        }
        let removals = syncer
            .plan_removals(&state)
            .await
            .with_context(|| format!("planning the teams that left cluster {name}"))?;
        for plan in removals
            .iter()
            .filter(|p| team.as_ref().is_none_or(|t| *t == p.unit.team.0))
        {
            print_plan(&format!("{} (left the repo)", plan.unit), plan);
            changes |= plan.changes_anything();
            errors |= plan.counts().3 > 0 || plan.held.is_some();
        }
    }
    Ok(if errors {
        ExitCode::FAILURE
    } else if changes {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// One unit's plan as `pontoon plan` prints it: its summary, whether the hold would stop
/// it, then a line per object that would change (`+`, `~` with each field, `-`) or be
/// refused (`!`).
fn print_plan(id: &str, plan: &pontoon::sync::plan::UnitPlan) {
    use pontoon::sync::plan::Action;
    println!("{id}: {}", plan.summary());
    if let Some(held) = &plan.held {
        println!("  {held}");
        println!("  released, the sync would do:");
    }
    if let Some(by) = &plan.released_by {
        println!("  the hold is released for this revision by {by}");
    }
    for o in &plan.objects {
        match &o.action {
            Action::Create => println!("  + {}", o.object),
            Action::CreateUnchecked { unchecked } => {
                println!("  + {} (not dry-run: {unchecked})", o.object)
            }
            Action::Prune => println!("  - {}", o.object),
            Action::Keep { reason } => println!("  = {} (kept: {reason})", o.object),
            Action::Update { changes } => {
                println!("  ~ {}", o.object);
                for c in changes {
                    if c.is_hidden() {
                        println!("      {} (secret changed)", c.path);
                        continue;
                    }
                    let show = |v: &Option<serde_json::Value>| {
                        v.as_ref().map_or("(none)".to_owned(), |v| v.to_string())
                    };
                    println!("      {}: {} → {}", c.path, show(&c.old), show(&c.new));
                }
            }
            Action::Error { message } => println!("  ! {}: {message}", o.object),
            Action::Unchanged => {}
        }
    }
}

/// Rebuilds a unit's inventory from the objects labelled for the team, as the caller.
async fn rebuild_cmd(req: pontoon::cli::Target, dry_run: bool) -> anyhow::Result<ExitCode> {
    let owner =
        pontoon::config::Owner::new(&req.owner).map_err(|e| anyhow::anyhow!("--owner {e}"))?;
    let client = req.client().await?;
    let team = pontoon::desired::TeamName(req.team.clone());
    let rebuilt = pontoon::sync::rebuild::rebuild(&client, &req.namespace, &owner, &team, dry_run)
        .await
        .with_context(|| format!("{}/{team}", req.cluster))?;
    for e in &rebuilt.entries {
        let at = if e.namespace.is_empty() {
            e.name.clone()
        } else {
            format!("{}/{}", e.namespace, e.name)
        };
        let applier = match e.applier {
            pontoon::desired::Applier::Platform => "pontoon",
            pontoon::desired::Applier::Team => "the team",
        };
        println!("{} {at} (deleted as {applier})", e.kind);
    }
    for o in &rebuilt.left_out {
        println!("left out, labelled for {team} outside its namespaces: {o}");
    }
    let verb = if dry_run { "would hold" } else { "holds" };
    println!(
        "{}/{team}: the inventory {verb} {} objects; the next sync checks each against the repo",
        req.cluster,
        rebuilt.entries.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// Connects with the caller's kubeconfig (never the daemon's credentials) and writes the
/// release on the unit's inventory.
async fn release_cmd(req: pontoon::cli::Target, revision: String) -> anyhow::Result<ExitCode> {
    let revision = revision.trim().to_owned();
    anyhow::ensure!(!revision.is_empty(), "--revision may not be empty");
    let owner =
        pontoon::config::Owner::new(&req.owner).map_err(|e| anyhow::anyhow!("--owner {e}"))?;
    let client = req.client().await?;
    let api = kube::Api::namespaced(client, &req.namespace);
    let team = pontoon::desired::TeamName(req.team);
    let cluster = req.cluster;
    match pontoon::sync::inventory::Inventory::release(&api, &owner, &team, &revision).await {
        Ok(()) => {
            println!(
                "{cluster}/{team}: released for revision {revision} only; the unit's next sync of that revision deletes what the hold kept"
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{cluster}/{team}: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
