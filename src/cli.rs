//! Command-line interface: parsing only; `main` maps it onto [`flora_cluster::Config`] or a
//! control-socket request.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use flora_cluster::config::{
    parse_heartbeat_seconds, parse_jitter_seconds, parse_seconds, parse_size,
};

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
    Run(Box<RunArgs>),
    /// Replace every worker with a new generation; exits 0 on success, 1 on rollback.
    /// With `--canary K --canary-secs S`: K new workers serve next to the old generation
    /// for S seconds, then are promoted (rolling, K at a time) or rolled back.
    Reload(ReloadArgs),
    /// Replace the master itself with the binary now on disk (the path it was started
    /// from, or --binary) without refusing a connection: the new master takes over the
    /// sockets, the scoreboard and the state, the old one drains and exits. Exits 0 once the
    /// old master is gone, 1 on rollback (the old master serves on). Same as SIGUSR2.
    Upgrade(UpgradeArgs),
    /// Stop a running master gracefully and wait until it is gone.
    Stop(Target),
    /// Change the number of workers of a running master.
    Scale {
        /// The new worker count.
        workers: usize,
        /// Which instance.
        #[command(flatten)]
        target: Target,
    },
    /// Show a running instance: totals and one row per worker, read from its scoreboard.
    Status {
        /// Print the JSON document (as /server-status.json) instead of the table.
        #[arg(long)]
        json: bool,
        /// Which instance.
        #[command(flatten)]
        target: Target,
    },
    /// A live terminal view read from the scoreboard every interval: the cluster, one row
    /// per worker, the longest-running requests. Keys: q quit, p pause, s/r/c/m sort, h help.
    Top(TopArgs),
}

/// Flags of `top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Print one frame (after one interval's sample) to stdout and exit.
    #[arg(long)]
    pub once: bool,
    /// Seconds between samples (at least 0.1) [default: 1].
    #[arg(long, value_name = "SECS", default_value = "1",
          value_parser = flora_cluster::top::parse_interval, allow_hyphen_values = true)]
    pub interval: f64,
    /// Instance name [default: flora].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Runtime directory of the instance [default: as for `run`].
    #[arg(long, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,
}

/// Flags of `reload`.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// Canary reload: K new workers serve next to the old generation first.
    #[arg(long, value_name = "K", requires = "canary_secs",
          value_parser = flora_cluster::canary::parse_workers)]
    pub canary: Option<usize>,
    /// Seconds the canaries serve before the comparison (up to a day).
    #[arg(long, value_name = "SECS", requires = "canary", value_parser = parse_seconds,
          allow_hyphen_values = true)]
    pub canary_secs: Option<f64>,
    /// Roll back when the canaries' 5xx ratio exceeds the old one's by more than R (0..=1)
    /// [default: 0.01].
    #[arg(long, value_name = "R", requires = "canary", allow_hyphen_values = true,
          value_parser = flora_cluster::canary::parse_error_ratio)]
    pub canary_max_error_ratio: Option<f64>,
    /// Roll back when the canaries' p99 exceeds the old one's times P (> 0) [default: 1.5].
    #[arg(long, value_name = "P", requires = "canary", allow_hyphen_values = true,
          value_parser = flora_cluster::canary::parse_p99_ratio)]
    pub canary_max_p99_ratio: Option<f64>,
    /// Requests each generation needs in the window to be judged; fewer: rollback
    /// [default: 20].
    #[arg(long, value_name = "N", requires = "canary")]
    pub canary_min_requests: Option<u64>,
    /// Which instance.
    #[command(flatten)]
    pub target: Target,
}

impl ReloadArgs {
    /// The control request: a canary or a plain reload.
    pub fn request(&self) -> flora_cluster::control::Request {
        match (self.canary, self.canary_secs) {
            (Some(workers), Some(secs)) => flora_cluster::control::Request::Canary {
                workers,
                secs,
                max_error_ratio: self.canary_max_error_ratio,
                max_p99_ratio: self.canary_max_p99_ratio,
                min_requests: self.canary_min_requests,
            },
            _ => flora_cluster::control::Request::Reload,
        }
    }
}

/// Flags of `upgrade`.
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// The new master's binary [default: the path the running master was started from].
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Which instance (`--timeout`: how long the whole upgrade may take).
    #[command(flatten)]
    pub target: Target,
}

/// Which running instance a command talks to.
#[derive(Debug, Args)]
pub struct Target {
    /// Instance name [default: flora].
    #[arg(long, value_name = "NAME", conflicts_with = "control_socket")]
    pub name: Option<String>,
    /// Runtime directory of the instance [default: as for `run`].
    #[arg(long, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,
    /// Control socket path (instead of --name).
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// Seconds to wait for the answer (up to a day) [default: 300].
    #[arg(long, value_name = "SECS", default_value = "300", value_parser = parse_seconds,
          allow_hyphen_values = true)]
    pub timeout: f64,
}

/// Flags of `run` (each overrides the same key of `--config`).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Worker processes [default: number of CPUs].
    #[arg(short = 'w', long, value_name = "N")]
    pub workers: Option<usize>,
    /// Seconds a new worker may take to become ready (up to a day) [default: 30].
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, allow_hyphen_values = true)]
    pub ready_timeout: Option<f64>,
    /// Seconds a worker may drain before it is killed (up to a day) [default: 30].
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, allow_hyphen_values = true)]
    pub shutdown_timeout: Option<f64>,
    /// Instance name (scoreboard, lock and socket names) [default: flora].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Directory for the scoreboard, lock and control socket [default: $XDG_RUNTIME_DIR/flora-cluster or /dev/shm/flora-cluster-UID].
    #[arg(long, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,
    /// Control socket path [default: <runtime dir>/<name>.sock].
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// Management HTTP address for /metrics and /server-status, or `off` [default: 127.0.0.1:9337].
    #[arg(long, value_name = "ADDR")]
    pub status_addr: Option<String>,
    /// Run the workers as USER (the master runs as root, binds privileged ports, and hands them over).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Run the workers with GROUP [default: USER's primary group].
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Show query strings on the status page and in the JSON (they often carry secrets).
    #[arg(long)]
    pub show_query_strings: bool,
    /// Count requests per route template the app sets (flora_http_route_requests_total{route,code}).
    #[arg(long)]
    pub route_metrics: bool,
    /// Distinct routes counted with --route-metrics; more count as route="other" (1 to 1024) [default: 64].
    #[arg(long, value_name = "N")]
    pub route_limit: Option<usize>,
    /// Also answer this Host name on a loopback status address (repeatable; IP addresses and localhost always work).
    #[arg(long, value_name = "NAME")]
    pub status_host: Vec<String>,
    /// File with a bearer token (mode 0600) that enables POST /-/reload, /-/stop, /-/scale on the status server.
    #[arg(long, value_name = "FILE")]
    pub status_token_file: Option<PathBuf>,
    /// Push metrics over OTLP/HTTP to URL (e.g. http://127.0.0.1:4318/v1/metrics) [default: off].
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Seconds between OTLP pushes (0.1 up to a day) [default: 10].
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, allow_hyphen_values = true)]
    pub otlp_interval: Option<f64>,
    /// Extra HTTP header of every OTLP push, NAME=VALUE (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub otlp_header: Vec<String>,
    /// Gzip OTLP request bodies.
    #[arg(long)]
    pub otlp_gzip: bool,
    /// OTLP resource attribute KEY=VALUE (repeatable; service.name and host.name have defaults).
    #[arg(long, value_name = "KEY=VALUE")]
    pub otlp_resource: Vec<String>,
    /// OTLP metric names: prometheus, or otel (also http.server.request.duration and http.server.active_requests) [default: prometheus].
    #[arg(long, value_name = "NAMES", value_enum)]
    pub otlp_names: Option<flora_cluster::config::OtlpNames>,
    /// Scoreboard slots [default: 2 × workers + 2].
    #[arg(long, value_name = "N")]
    pub slots: Option<usize>,
    /// PEM certificate chain the workers serve HTTPS with (feature `tls`; needs --tls-key).
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Bind ADDR before the workers start (repeatable): IP:PORT, HOST:PORT or unix:/abs/path.
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,
    /// Accept-queue limit of the listeners the master binds (capped by net.core.somaxconn) [default: 1024].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32),
          allow_hyphen_values = true)]
    pub backlog: Option<u32>,
    // --- Unix sockets ---
    /// Mode of the unix: socket files the master creates, octal [default: 0660].
    #[arg(long, value_name = "MODE")]
    pub unix_mode: Option<String>,
    /// Owner of the unix: socket files: USER, USER:GROUP or :GROUP [default: the master's].
    #[arg(long, value_name = "USER[:GROUP]")]
    pub unix_owner: Option<String>,
    // --- Worker guards (all off by default) ---
    /// Answer a request still without a response after SECS with 503 and drop it (fractions allowed) [default: off].
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, allow_hyphen_values = true)]
    pub request_timeout: Option<f64>,
    /// Kill a ready worker whose event loop sent no heartbeat for SECS (at least 1) [default: off].
    #[arg(long, value_name = "SECS", value_parser = parse_heartbeat_seconds,
          allow_hyphen_values = true)]
    pub heartbeat_timeout: Option<f64>,
    /// Recycle a worker whose resident memory stays over SIZE (3 samples, 1 s apart): bytes, or K/M/G (powers of 1000), KiB/MiB/GiB (powers of 1024), e.g. 512MiB [default: off].
    #[arg(long, value_name = "SIZE", value_parser = parse_size, allow_hyphen_values = true)]
    pub max_memory: Option<u64>,
    /// Recycle a worker after it served N requests [default: off].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..),
          allow_hyphen_values = true)]
    pub max_requests: Option<u64>,
    /// Add up to N requests to --max-requests, drawn per worker (so workers do not recycle together) [default: 0].
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub max_requests_jitter: Option<u64>,
    /// Recycle a worker after it lived SECS [default: off].
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, allow_hyphen_values = true)]
    pub max_worker_age: Option<f64>,
    /// Add up to SECS to --max-worker-age, drawn per worker [default: 0].
    #[arg(long, value_name = "SECS", value_parser = parse_jitter_seconds,
          allow_hyphen_values = true)]
    pub max_worker_age_jitter: Option<f64>,
    /// Recycles running at once (each needs a spare slot) [default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(usize),
          allow_hyphen_values = true)]
    pub max_recycling: Option<usize>,
    /// Rolling reload: start K new workers at a time, each batch ready before K old ones
    /// drain (peak workers + K processes) [default: all at once].
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(usize),
          allow_hyphen_values = true)]
    pub reload_batch: Option<usize>,
    // --- Autoscaling (off unless both bounds are given) ---
    /// Autoscale: fewest workers (with --workers-max; --workers is then the start count) [default: off].
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub workers_min: Option<usize>,
    /// Autoscale: most workers (with --workers-min; the default slots are 2 × this + 2) [default: off].
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub workers_max: Option<usize>,
    /// Autoscale: remove a worker after the cluster was idle for SECS [default: 30].
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, allow_hyphen_values = true)]
    pub scale_down_after: Option<f64>,
    /// TOML file with the same settings (flags win).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The worker program and its arguments, after `--`.
    #[arg(last = true, value_name = "PROGRAM")]
    pub program: Vec<String>,
}
