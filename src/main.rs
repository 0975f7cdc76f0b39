//! `flora-cluster`: parses the command line, builds the configuration and runs the master.

mod cli;

use std::process::ExitCode;

use std::time::Duration;

use clap::Parser;
use flora_cluster::control::{self, Outcome, Request};
use flora_cluster::{Config, Error, Master};

/// Exit code for invalid configuration or flags (clap uses 2 as well).
const EXIT_USAGE: u8 = 2;

fn config_from(args: cli::RunArgs) -> Result<Config, Error> {
    let mut cfg = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    guard_flags(&mut cfg, &args);
    autoscale_flags(&mut cfg, &args);
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
    if let Some(v) = args.control_socket {
        cfg.control_socket = Some(v);
    }
    if let Some(v) = args.status_addr {
        cfg.status_addr = v;
    }
    cfg.show_query_strings |= args.show_query_strings;
    cfg.route_metrics |= args.route_metrics;
    if let Some(v) = args.route_limit {
        cfg.route_limit = v;
    }
    if let Some(v) = args.user {
        cfg.user = Some(v);
    }
    if let Some(v) = args.group {
        cfg.group = Some(v);
    }
    if let Some(v) = args.status_token_file {
        cfg.status_token_file = Some(v);
    }
    if let Some(v) = args.otlp_endpoint {
        cfg.otlp_endpoint = Some(v);
    }
    if let Some(v) = args.otlp_interval {
        cfg.otlp_interval = v;
    }
    cfg.otlp_headers.extend(args.otlp_header);
    cfg.otlp_gzip |= args.otlp_gzip;
    cfg.otlp_resource.extend(args.otlp_resource);
    if let Some(v) = args.otlp_names {
        cfg.otlp_names = v;
    }
    if let Some(v) = args.slots {
        cfg.slots = Some(v);
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        cfg.tls_cert = Some(cert);
        cfg.tls_key = Some(key);
    }
    cfg.listen.extend(args.listen);
    cfg.backlog = args.backlog.or(cfg.backlog);
    // Unix sockets.
    if let Some(v) = args.unix_mode {
        cfg.unix_mode = Some(v);
    }
    if let Some(v) = args.unix_owner {
        cfg.unix_owner = Some(v);
    }
    cfg.status_hosts.extend(args.status_host);
    if !args.program.is_empty() {
        cfg.program = args.program;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// The worker guards' flags over the config file's values.
fn guard_flags(cfg: &mut Config, args: &cli::RunArgs) {
    let set_f64 = |slot: &mut Option<f64>, v: Option<f64>| *slot = v.or(*slot);
    set_f64(&mut cfg.request_timeout, args.request_timeout);
    set_f64(&mut cfg.heartbeat_timeout, args.heartbeat_timeout);
    set_f64(&mut cfg.max_worker_age, args.max_worker_age);
    set_f64(&mut cfg.max_worker_age_jitter, args.max_worker_age_jitter);
    let set_u64 = |slot: &mut Option<u64>, v: Option<u64>| *slot = v.or(*slot);
    set_u64(&mut cfg.max_memory, args.max_memory);
    set_u64(&mut cfg.max_requests, args.max_requests);
    set_u64(&mut cfg.max_requests_jitter, args.max_requests_jitter);
    if let Some(v) = args.max_recycling {
        cfg.max_recycling = v;
    }
    cfg.reload_batch = args.reload_batch.or(cfg.reload_batch);
}

/// The autoscaling flags over the config file's values.
fn autoscale_flags(cfg: &mut Config, args: &cli::RunArgs) {
    cfg.workers_min = args.workers_min.or(cfg.workers_min);
    cfg.workers_max = args.workers_max.or(cfg.workers_max);
    cfg.scale_down_after = args.scale_down_after.or(cfg.scale_down_after);
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
    let result = rt.block_on(master.run());
    // A name lookup for a worker can still be stuck in a blocking thread (a resolver that
    // never answers): the master does not wait for it to exit.
    rt.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
    result
}

/// How long an exiting master waits for blocking helper threads (name lookups, copies).
const RUNTIME_SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Exit code of `reload` when the reload was rolled back, and of failed client commands.
const EXIT_FAILED: u8 = 1;

fn socket_of(t: &cli::Target) -> std::path::PathBuf {
    t.control_socket.clone().unwrap_or_else(|| {
        let dir = t
            .runtime_dir
            .clone()
            .unwrap_or_else(flora_cluster::master::default_runtime_dir);
        control::socket_path(&dir, t.name.as_deref().unwrap_or("flora"))
    })
}

/// Sends one control request and prints the answer; returns the exit code.
fn client(target: &cli::Target, req: &Request) -> ExitCode {
    let path = socket_of(target);
    // The flag is checked by clap (finite, in (0, a day]); at least 0.1 s to get an answer.
    // A canary's window comes on top of the wait.
    let window = match req {
        Request::Canary { secs, .. } => *secs,
        // The master answers an upgrade at its own deadline (the same timeout).
        Request::Upgrade { .. } => 15.0,
        _ => 0.0,
    };
    let timeout = Duration::try_from_secs_f64(target.timeout.max(0.1) + window)
        .unwrap_or(Duration::from_secs(300));
    let reply = match control::call(&path, req, timeout) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flora-cluster: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    if !reply.ok {
        eprintln!(
            "flora-cluster: {}",
            reply.error.as_deref().unwrap_or("request failed")
        );
        return ExitCode::from(EXIT_FAILED);
    }
    match req {
        Request::Reload | Request::Canary { .. } => match &reply.reload {
            Some(r) if r.outcome == Outcome::Success => {
                if let Some(c) = &r.canary {
                    println!("{}", c.summary());
                }
                println!(
                    "reload succeeded: generation {} serving ({} ms)",
                    r.generation, r.duration_ms
                );
                ExitCode::SUCCESS
            }
            Some(r) => {
                if let Some(c) = &r.canary {
                    println!("{}", c.summary());
                }
                println!(
                    "reload rolled back: {} (generation {} was stopped, the previous one keeps serving)",
                    r.reason.as_deref().unwrap_or("no reason given"),
                    r.generation
                );
                ExitCode::from(EXIT_FAILED)
            }
            None => {
                eprintln!("flora-cluster: the master sent no reload outcome");
                ExitCode::from(EXIT_FAILED)
            }
        },
        Request::Upgrade { .. } => upgraded(reply.upgrade, timeout),
        Request::Stop => {
            if control::wait_gone(&path, timeout) {
                println!("stopped");
                ExitCode::SUCCESS
            } else {
                eprintln!("flora-cluster: the master is still stopping after {timeout:?}");
                ExitCode::from(EXIT_FAILED)
            }
        }
        Request::Scale { .. } => {
            println!("scaled to {} workers", reply.workers.unwrap_or_default());
            ExitCode::SUCCESS
        }
        _ => {
            let doc = reply.status.unwrap_or_default();
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            ExitCode::SUCCESS
        }
    }
}

/// `flora-cluster upgrade`: asks for the upgrade, the whole of it within `--timeout`.
fn upgrade(u: cli::UpgradeArgs) -> ExitCode {
    let binary = match u.binary.map(|b| std::path::absolute(&b)).transpose() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("flora-cluster: --binary: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let req = Request::Upgrade {
        binary,
        timeout_secs: Some(u.target.timeout),
    };
    client(&u.target, &req)
}

/// Prints an upgrade's outcome; after a success, waits (up to `timeout`) until the old master
/// is gone, so that scripts never see two masters after this returns.
fn upgraded(report: Option<control::UpgradeReport>, timeout: Duration) -> ExitCode {
    let Some(r) = report else {
        eprintln!("flora-cluster: the master sent no upgrade outcome");
        return ExitCode::from(EXIT_FAILED);
    };
    let to = r
        .to_pid
        .map_or_else(|| "none".to_string(), |p| p.to_string());
    if r.outcome != Outcome::Success {
        println!(
            "upgrade rolled back: {}; master {} serves on",
            r.reason.as_deref().unwrap_or("no reason given"),
            r.from_pid
        );
        return ExitCode::from(EXIT_FAILED);
    }
    let versions = format!(
        "{} -> {}",
        r.from_version,
        r.to_version.as_deref().unwrap_or("?")
    );
    let start = std::time::Instant::now();
    let deadline = start + timeout;
    while alive(r.from_pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive(r.from_pid) {
        println!(
            "upgraded: master {} -> {to} ({versions}) in {} ms; the old master is still draining",
            r.from_pid, r.duration_ms
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "upgraded: master {} -> {to} ({versions}) in {} ms; old master exited after {} ms more",
        r.from_pid,
        r.duration_ms,
        start.elapsed().as_millis()
    );
    ExitCode::SUCCESS
}

/// Whether `pid` runs (a zombie is gone: only its parent's wait is left).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// `flora-cluster status`: reads the instance's scoreboard directly (no round trip); with only
/// `--control-socket` given, asks the master instead.
fn status(target: &cli::Target, json: bool) -> ExitCode {
    if target.control_socket.is_some() && target.name.is_none() {
        return client(target, &Request::Status);
    }
    let sb = match open_segment(target.runtime_dir.clone(), target.name.as_deref()) {
        Ok(sb) => sb,
        Err(code) => return code,
    };
    let mut snap = sb.snapshot();
    let master_alive = snap.master_pid != 0
        && nix::sys::signal::kill(nix::unistd::Pid::from_raw(snap.master_pid as i32), None).is_ok();
    let history = if master_alive {
        add_guards(target, &mut snap)
    } else {
        None
    };
    let doc =
        flora_cluster::exporter::StatusDoc::build(snap).with_history(history.unwrap_or_default());
    if !master_alive {
        eprintln!(
            "flora-cluster: warning: master pid {} is not running; this scoreboard is stale",
            doc.master_pid
        );
    }
    if json {
        match serde_json::to_string_pretty(&doc) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("flora-cluster: {e}");
                return ExitCode::from(EXIT_FAILED);
            }
        }
    } else {
        print!("{}", flora_cluster::exporter::terminal::render(&doc));
    }
    if master_alive {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

/// Opens `DIR/NAME.scoreboard` read-only; on failure prints why and gives the exit code.
fn open_segment(
    dir: Option<std::path::PathBuf>,
    name: Option<&str>,
) -> Result<flora_cluster::ScoreboardReader, ExitCode> {
    let dir = dir.unwrap_or_else(flora_cluster::master::default_runtime_dir);
    let path = dir.join(format!("{}.scoreboard", name.unwrap_or("flora")));
    // Never open a FIFO or device by that name: opening it could block for ever.
    match std::fs::metadata(&path) {
        Ok(meta) if !meta.is_file() => {
            eprintln!(
                "flora-cluster: {} is not a regular file; refusing to read it as a scoreboard",
                path.display()
            );
            return Err(ExitCode::from(EXIT_FAILED));
        }
        _ => {}
    }
    flora_cluster::Scoreboard::open_read_only(&path).map_err(|e| {
        eprintln!("flora-cluster: {e} (is the master running? check --name / --runtime-dir)");
        ExitCode::from(EXIT_FAILED)
    })
}

/// `flora-cluster top`: the live view, or one frame with `--once`.
fn top(args: cli::TopArgs) -> ExitCode {
    let sb = match open_segment(args.runtime_dir, args.name.as_deref()) {
        Ok(sb) => sb,
        Err(code) => return code,
    };
    // The flag is checked by clap (at least 0.1 s, up to a day).
    let interval = Duration::from_secs_f64(args.interval);
    if args.once {
        let width = flora_cluster::top::stdout_size()
            .map_or(flora_cluster::top::DEFAULT_WIDTH, |(w, _)| usize::from(w));
        let lines = flora_cluster::top::once(&sb, interval, width);
        return match flora_cluster::top::print(&lines) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("flora-cluster: {e}");
                ExitCode::from(EXIT_FAILED)
            }
        };
    }
    let tty = |t: &dyn std::io::IsTerminal| t.is_terminal();
    if !tty(&std::io::stdin()) || !tty(&std::io::stdout()) {
        eprintln!(
            "flora-cluster: top needs a terminal (stdin and stdout); use --once for one frame"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    match flora_cluster::top::run(&sb, interval) {
        Ok(flora_cluster::top::Exit::Quit) => ExitCode::SUCCESS,
        Ok(flora_cluster::top::Exit::Signal(n)) => ExitCode::from(128u8.saturating_add(n as u8)),
        Err(e) => {
            eprintln!("flora-cluster: top: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// How long `status` waits for the master's guard records on its control socket.
const GUARDS_TIMEOUT: Duration = Duration::from_secs(2);

/// The guard records are the master's own (not in the segment): asks the master for them on
/// its control socket. Without an answer they stay unknown (`"guards": null`).
/// The master's records into `snap`; returns its history.
fn add_guards(
    target: &cli::Target,
    snap: &mut flora_cluster::Snapshot,
) -> Option<flora_cluster::scoreboard::HistorySeries> {
    let reply = match control::call(&socket_of(target), &Request::Status, GUARDS_TIMEOUT) {
        Ok(reply) => reply,
        Err(e) => {
            eprintln!("flora-cluster: warning: no guard records from the master: {e}");
            return None;
        }
    };
    // The last canary's comparison and the verdicts: the master's own records too.
    let mut status = reply.status;
    let mut take = |key: &str| Some(status.as_mut()?.get_mut(key)?.take());
    snap.last_canary = take("last_canary").and_then(|v| serde_json::from_value(v).ok());
    snap.canary_counts = take("canary_verdicts").and_then(|v| serde_json::from_value(v).ok());
    // The master's pid, version and upgrades (`Snapshot::master_status_fields`).
    let [master, last] = flora_cluster::scoreboard::MASTER_STATUS_KEYS;
    let master = take(master).and_then(|v| serde_json::from_value(v).ok());
    let last = take(last).and_then(|v| serde_json::from_value(v).ok());
    if let Some(master) = master {
        snap.apply_master(master, last);
    }
    let report = take("guards").and_then(|g| serde_json::from_value(g).ok());
    if let Some(report) = report {
        snap.apply_guards(report);
    }
    take("history").and_then(|h| serde_json::from_value(h).ok())
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
        cli::Command::Run(args) => run(*args),
        cli::Command::Reload(r) => return client(&r.target, &r.request()),
        cli::Command::Upgrade(u) => return upgrade(u),
        cli::Command::Stop(t) => return client(&t, &Request::Stop),
        cli::Command::Scale { workers, target } => {
            return client(&target, &Request::Scale { workers })
        }
        cli::Command::Status { json, target } => return status(&target, json),
        cli::Command::Top(args) => return top(args),
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
