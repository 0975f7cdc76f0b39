//! `flora-cluster`: parses the command line, builds the configuration and runs the master.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use flora_cluster::{Config, Error, Master};

/// Exit code for invalid configuration or flags (clap uses 2 as well).
const EXIT_USAGE: u8 = 2;

fn config_from(args: cli::RunArgs) -> Result<Config, Error> {
    let mut cfg = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(v) = args.workers {
        cfg.workers = Some(v);
    }
    if let Some(v) = args.ready_timeout {
        cfg.ready_timeout = v;
    }
    if let Some(v) = args.shutdown_timeout {
        cfg.shutdown_timeout = v;
    }
    if let Some(v) = args.name {
        cfg.name = v;
    }
    if let Some(v) = args.runtime_dir {
        cfg.runtime_dir = Some(v);
    }
    if let Some(v) = args.slots {
        cfg.slots = Some(v);
    }
    cfg.listen.extend(args.listen);
    if !args.program.is_empty() {
        cfg.program = args.program;
    }
    cfg.validate()?;
    Ok(cfg)
}

fn run(args: cli::RunArgs) -> Result<(), Error> {
    let cfg = config_from(args)?;
    let master = Master::builder().config(cfg).build()?;
    // One thread: the master spawns every worker from it, and the workers' parent-death
    // signal is tied to the spawning thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            context: "start the runtime".into(),
            source,
        })?;
    rt.block_on(master.run())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Run(args) => run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ Error::Config(_)) => {
            eprintln!("flora-cluster: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("flora-cluster: {e}");
            ExitCode::FAILURE
        }
    }
}
