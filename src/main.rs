use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pontoon::config::Config;

/// GitOps reconciliation daemon for platform teams.
#[derive(Debug, Parser)]
#[command(name = "pontoon", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with the daemon's config file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the version.
    Version,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a config file: every field, path, variable and name. Exit 1 on any problem.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => match Config::load(&file) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} cluster{})",
                    file.display(),
                    cfg.clusters.len(),
                    if cfg.clusters.len() == 1 { "" } else { "s" }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Version => {
            println!("pontoon {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}
