//! Command-line interface: parsing only; `main` maps it onto [`flora_cluster::Config`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// flora-cluster: run and supervise N workers of an HTTP server.
#[derive(Debug, Parser)]
#[command(name = "flora-cluster", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a master in the foreground: `flora-cluster run [OPTIONS] -- PROGRAM [ARGS...]`.
    Run(RunArgs),
}

/// Flags of `run` (each overrides the same key of `--config`).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Worker processes [default: number of CPUs].
    #[arg(short = 'w', long, value_name = "N")]
    pub workers: Option<usize>,
    /// Seconds a new worker may take to become ready [default: 30].
    #[arg(long, value_name = "SECS")]
    pub ready_timeout: Option<f64>,
    /// Seconds a worker may drain before it is killed [default: 30].
    #[arg(long, value_name = "SECS")]
    pub shutdown_timeout: Option<f64>,
    /// Instance name (scoreboard, lock and socket names) [default: flora].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Directory for the scoreboard and lock [default: $XDG_RUNTIME_DIR/flora-cluster or /dev/shm/flora-cluster-UID].
    #[arg(long, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,
    /// Scoreboard slots [default: 2 × workers + 2].
    #[arg(long, value_name = "N")]
    pub slots: Option<usize>,
    /// Bind ADDR before the workers start (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,
    /// TOML file with the same settings (flags win).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The worker program and its arguments, after `--`.
    #[arg(last = true, value_name = "PROGRAM")]
    pub program: Vec<String>,
}
