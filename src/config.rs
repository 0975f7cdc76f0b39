//! Master configuration: a TOML file with the same settings as the command-line flags
//! (flags win). Unknown keys and bad values are errors that name the key and its line.
//!
//! ```
//! use flora_cluster::Config;
//! let cfg = Config::from_toml_str("workers = 3\nprogram = [\"./hello\"]\n").unwrap();
//! assert_eq!(cfg.workers, Some(3));
//! assert!(Config::from_toml_str("wrokers = 3").unwrap_err().to_string().contains("wrokers"));
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::limits::MAX_SLOTS;

// The worker guards' settings and byte sizes, beside this file.
mod autoscale;
mod guards;
mod listen;
mod otlp;
mod reload;
mod seconds;
mod size;
// TLS certificate files (feature `tls`): checks and paths, beside this file.
mod tls;

pub use autoscale::DEFAULT_SCALE_DOWN_AFTER_SECS;
pub use guards::{
    parse_heartbeat_seconds, parse_jitter_seconds, MAX_HEARTBEAT_INTERVAL,
    MIN_HEARTBEAT_TIMEOUT_SECS,
};
pub(crate) use listen::{backlog_arg, warn_if_capped};
pub use listen::{DEFAULT_BACKLOG, MAX_BACKLOG};
pub use otlp::OtlpNames;
use seconds::duration_of;
pub use seconds::{check_seconds, parse_seconds, MAX_TIMEOUT_SECS};
pub use size::parse_size;

/// Most workers one master runs.
pub const MAX_WORKERS: usize = 1024;
/// Default address of the management (status) server: loopback only. Also
/// `exporter::DEFAULT_ADDR`.
pub const DEFAULT_STATUS_ADDR: &str = "127.0.0.1:9337";
/// Configuration errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type, syntax).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid {key}{}: {reason}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Invalid {
        /// The key (or flag) at fault.
        key: &'static str,
        /// Its line in the config file, when it came from one.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },
}

/// Settings of a master. Every field has a default; see each for its meaning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Instance name: names the scoreboard, lock and control socket. Defaults to `flora`.
    pub name: String,
    /// Worker processes to run. Defaults to the number of CPUs.
    pub workers: Option<usize>,
    /// Seconds a new worker may take to become ready. Defaults to 30.
    pub ready_timeout: f64,
    /// Seconds a worker may take to drain before it is killed. Defaults to 30.
    pub shutdown_timeout: f64,
    /// Directory for the scoreboard, lock and socket. Defaults to `$XDG_RUNTIME_DIR/flora-cluster`,
    /// else `/dev/shm/flora-cluster-UID`.
    pub runtime_dir: Option<PathBuf>,
    /// Scoreboard slots. Defaults to twice the workers plus two (room for a reload).
    pub slots: Option<usize>,
    /// Control socket path. Defaults to `<runtime_dir>/<name>.sock`.
    pub control_socket: Option<PathBuf>,
    /// Management HTTP address (`/metrics`, `/server-status`), `IP:PORT`, or `off`.
    /// Defaults to `127.0.0.1:9337` (loopback only).
    pub status_addr: String,
    /// Run the workers as this user (the master must be root; it keeps binding privileged
    /// ports). Defaults to the master's own user.
    pub user: Option<String>,
    /// Run the workers with this group (defaults to the user's primary group when `user` is set).
    pub group: Option<String>,
    /// Record query strings with request paths (status page, JSON). Defaults to false: query
    /// strings often carry secrets, so only paths are kept.
    pub show_query_strings: bool,
    /// Count requests per route the app sets (`RequestInfo::set_route`). Defaults to false.
    pub route_metrics: bool,
    /// Distinct routes the cluster counts with `route_metrics` (1..=1024); requests of
    /// further routes count as `route="other"`. Defaults to 64.
    pub route_limit: usize,
    /// Host names the status server answers besides IP literals and `localhost` while it
    /// listens on a loopback address (a check against DNS rebinding). Defaults to none.
    pub status_hosts: Vec<String>,
    /// File holding the bearer token that enables `POST /-/reload`, `/-/stop` and
    /// `/-/scale` on the status server (mode 0600, at least 16 characters). Defaults to none:
    /// those endpoints are off and only the control socket changes state.
    pub status_token_file: Option<PathBuf>,
    /// OTLP/HTTP metrics endpoint to push to, e.g. `http://127.0.0.1:4318/v1/metrics`.
    /// Defaults to none (no push).
    pub otlp_endpoint: Option<String>,
    /// Seconds between OTLP pushes. Defaults to 10.
    pub otlp_interval: f64,
    /// Extra HTTP headers of every push, `name=value`.
    pub otlp_headers: Vec<String>,
    /// Gzip the OTLP request bodies. Defaults to false.
    pub otlp_gzip: bool,
    /// Resource attributes, `key=value` (defaults: `service.name` = the instance name,
    /// `host.name` = the host name, `service.instance.id` = host:instance).
    pub otlp_resource: Vec<String>,
    /// Metric names of the OTLP push: `prometheus` (the Prometheus names) or `otel` (also
    /// the OpenTelemetry HTTP semantic conventions). Defaults to `prometheus`.
    pub otlp_names: OtlpNames,
    // --- TLS (feature `tls`) ---
    /// PEM certificate chain (leaf first) the workers serve HTTPS with; each worker reads it
    /// when it starts (`Worker::tls_from_config`), so a reload picks up a renewed file.
    /// Needs `tls_key`. Defaults to none.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (unencrypted PKCS#8, PKCS#1 or SEC1). Defaults to none.
    pub tls_key: Option<PathBuf>,
    // --- end TLS ---
    /// Addresses to bind before the workers start (they are handed out on `listen`):
    /// `IP:PORT`, `HOST:PORT` or `unix:/abs/path`.
    pub listen: Vec<String>,
    /// Accept-queue limit of the listeners the master binds (TCP and Unix): 1 to
    /// [`MAX_BACKLOG`]; the kernel caps it at `net.core.somaxconn` (the master warns). Sockets
    /// inherited by socket activation keep theirs. Defaults to [`DEFAULT_BACKLOG`].
    pub backlog: Option<u32>,
    // --- Unix sockets (`unix:/path` listeners) ---
    /// Mode of the Unix socket files the master creates, octal (`"0660"`). Defaults to 0660.
    pub unix_mode: Option<String>,
    /// Owner of the Unix socket files the master creates: `user`, `user:group` or `:group`
    /// (e.g. `"app:www-data"` so nginx can connect). Defaults to the master's user and group.
    pub unix_owner: Option<String>,
    // --- Worker guards (all off by default) ---
    /// Seconds a request may run until its worker answers 503 and drops it (up to the
    /// response head). Defaults to none.
    pub request_timeout: Option<f64>,
    /// Seconds without a heartbeat after which the master kills a ready worker (its event
    /// loop is blocked), at least 1. Defaults to none.
    pub heartbeat_timeout: Option<f64>,
    /// Resident memory (bytes, or text such as `"512MiB"`) over which a worker is recycled
    /// after three samples in a row. Defaults to none.
    #[serde(deserialize_with = "size::de_opt_size")]
    pub max_memory: Option<u64>,
    /// Requests after which a worker is recycled (at least 1). Defaults to none.
    pub max_requests: Option<u64>,
    /// Up to this many more requests, drawn per worker (needs `max_requests`). Defaults to 0.
    pub max_requests_jitter: Option<u64>,
    /// Seconds a worker lives before it is recycled. Defaults to none.
    pub max_worker_age: Option<f64>,
    /// Up to this many more seconds, drawn per worker (needs `max_worker_age`). Defaults to 0.
    pub max_worker_age_jitter: Option<f64>,
    /// Recycles running at once. Defaults to 1.
    pub max_recycling: usize,
    /// Rolling reloads: start this many new workers at a time (1 to the maximum worker
    /// count; needs workers + this many slots). Defaults to none (all at once).
    pub reload_batch: Option<usize>,
    /// Canary reloads: the limits a canary request that leaves them out is judged against
    /// (`[canary]`: `max_error_ratio`, `max_p99_ratio`, `min_requests`).
    pub canary: crate::canary::CanaryLimits,
    // --- Autoscaling (off unless both bounds are set) ---
    /// Fewest workers while autoscaling (needs `workers_max`). Defaults to none (off).
    pub workers_min: Option<usize>,
    /// Most workers while autoscaling (needs `workers_min`). Defaults to none (off).
    pub workers_max: Option<usize>,
    /// Seconds the cluster must be idle before the autoscaler removes a worker. Defaults
    /// to 30.
    pub scale_down_after: Option<f64>,
    /// The worker program and its arguments.
    pub program: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: "flora".into(),
            workers: None,
            ready_timeout: 30.0,
            shutdown_timeout: 30.0,
            runtime_dir: None,
            slots: None,
            control_socket: None,
            status_token_file: None,
            status_hosts: Vec::new(),
            show_query_strings: false,
            route_metrics: false,
            route_limit: crate::scoreboard::DEFAULT_ROUTE_LIMIT,
            user: None,
            group: None,
            otlp_endpoint: None,
            otlp_interval: 10.0,
            otlp_headers: Vec::new(),
            otlp_gzip: false,
            otlp_resource: Vec::new(),
            otlp_names: OtlpNames::Prometheus,
            tls_cert: None,
            tls_key: None,
            status_addr: DEFAULT_STATUS_ADDR.to_string(),
            listen: Vec::new(),
            backlog: None,
            unix_mode: None,
            unix_owner: None,
            request_timeout: None,
            heartbeat_timeout: None,
            max_memory: None,
            max_requests: None,
            max_requests_jitter: None,
            max_worker_age: None,
            max_worker_age_jitter: None,
            max_recycling: 1,
            reload_batch: None,
            canary: crate::canary::CanaryLimits::default(),
            workers_min: None,
            workers_max: None,
            scale_down_after: None,
            program: Vec::new(),
        }
    }
}

impl Config {
    /// Reads a TOML file.
    ///
    /// # Errors
    /// [`ConfigError::Read`], [`ConfigError::Parse`], or [`ConfigError::Invalid`] with the line.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses TOML text (see [`Config::from_file`]).
    ///
    /// # Errors
    /// As [`Config::from_file`].
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, Path::new("<string>"))
    }

    fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        cfg.check().map_err(|e| match e {
            ConfigError::Invalid { key, reason, .. } => ConfigError::Invalid {
                key,
                line: line_of(text, key),
                reason,
            },
            other => other,
        })?;
        Ok(cfg)
    }

    /// Workers to run (the configured count, or the number of CPUs; with autoscaling the
    /// start count, `workers_min` by default).
    pub fn worker_count(&self) -> usize {
        self.workers.or(self.workers_min).unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// Routes the scoreboard counts: `route_limit` with `route_metrics`, else 0 (off).
    pub fn route_slots(&self) -> usize {
        usize::from(self.route_metrics) * self.route_limit
    }

    /// Scoreboard slots (the configured count, or `2 × workers + 2`; `workers_max` for
    /// workers with autoscaling).
    pub fn slot_count(&self) -> usize {
        self.slots.unwrap_or(2 * self.peak_workers() + 2)
    }

    /// The management address, or `None` when it is `off`.
    pub fn status_socket_addr(&self) -> Option<std::net::SocketAddr> {
        self.status_addr.parse().ok()
    }

    /// The ready timeout (an unvalidated out-of-range value is clamped, never a panic).
    pub fn ready_timeout(&self) -> Duration {
        duration_of(self.ready_timeout)
    }

    /// The shutdown timeout (an unvalidated out-of-range value is clamped, never a panic).
    pub fn shutdown_timeout(&self) -> Duration {
        duration_of(self.shutdown_timeout)
    }

    /// Checks every value; the program may still be empty (set later by flags).
    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| {
            Err(ConfigError::Invalid {
                key,
                line: None,
                reason,
            })
        };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && !self.name.starts_with('.');
        if !name_ok {
            return invalid(
                "name",
                format!(
                    "{:?}: use 1-64 of A-Z a-z 0-9 - _ . (not starting with .)",
                    self.name
                ),
            );
        }
        if let Some(w) = self.workers {
            if w == 0 || w > MAX_WORKERS {
                return invalid("workers", format!("{w}: must be 1..={MAX_WORKERS}"));
            }
        }
        for (key, v) in [
            ("ready_timeout", self.ready_timeout),
            ("shutdown_timeout", self.shutdown_timeout),
        ] {
            if let Err(reason) = check_seconds(v) {
                return invalid(key, reason);
            }
        }
        let (routes, max_routes) = (self.route_limit, crate::scoreboard::MAX_ROUTES);
        if !(1..=max_routes).contains(&routes) {
            return invalid(
                "route_limit",
                format!("{routes}: must be 1 to {max_routes}"),
            );
        }
        let min_slots = self.worker_count();
        if let Some(s) = self.slots {
            if s < min_slots || s > MAX_SLOTS {
                return invalid(
                    "slots",
                    format!(
                        "{s}: must be at least the worker count ({min_slots}) and at most {}",
                        MAX_SLOTS
                    ),
                );
            }
        }
        if self.status_addr != "off" && self.status_addr.parse::<std::net::SocketAddr>().is_err() {
            return invalid(
                "status_addr",
                format!(
                    "{:?}: use IP:PORT (e.g. 127.0.0.1:9337) or off",
                    self.status_addr
                ),
            );
        }
        if let Some(Err(reason)) = self
            .status_hosts
            .iter()
            .map(|h| validate_host_name(h))
            .find(Result::is_err)
        {
            return invalid("status_hosts", reason);
        }
        if let Some(e) = &self.otlp_endpoint {
            if !e.starts_with("http://") {
                return invalid(
                    "otlp_endpoint",
                    format!("{e:?}: use http://HOST:PORT/v1/metrics (TLS: run a collector next to the master)"),
                );
            }
        }
        if !(self.otlp_interval.is_finite()
            && (0.1..=MAX_TIMEOUT_SECS).contains(&self.otlp_interval))
        {
            return invalid(
                "otlp_interval",
                format!(
                    "{}: must be seconds in [0.1, {MAX_TIMEOUT_SECS}]",
                    self.otlp_interval
                ),
            );
        }
        for (key, pairs) in [
            ("otlp_headers", &self.otlp_headers),
            ("otlp_resource", &self.otlp_resource),
        ] {
            if let Some(bad) = pairs
                .iter()
                .find(|p| p.split_once('=').is_none_or(|(k, _)| k.trim().is_empty()))
            {
                return invalid(key, format!("{bad:?}: use name=value"));
            }
        }
        if self.program.first().is_some_and(String::is_empty) {
            return invalid("program", "the program name is empty".into());
        }
        self.check_unix()?;
        self.check_backlog()?;
        self.check_guards()?;
        self.check_reload_batch()?;
        self.check_canary()?;
        self.check_autoscale()?;
        self.check_tls_pair()
    }

    /// Checks the Unix socket settings (syntax only: names are looked up at start).
    fn check_unix(&self) -> Result<(), ConfigError> {
        crate::unix_socket::check_config(self).map_err(|(key, e)| ConfigError::Invalid {
            key,
            line: None,
            reason: e.to_string(),
        })
    }

    /// Full validation before a master starts: `Config::check` plus a program to run.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check()?;
        if self.program.is_empty() {
            return Err(ConfigError::Invalid {
                key: "program",
                line: None,
                reason: "no worker program given (flora-cluster run -- PROGRAM [ARGS...])".into(),
            });
        }
        self.check_tls_files()
    }
}

/// Line (1-based) where `key = …` stands in a TOML text.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// Checks a name given with `--status-host`: letters, digits, `-` and `.`, 1 to 253 bytes.
///
/// # Errors
/// A short reason.
pub(crate) fn validate_host_name(name: &str) -> Result<(), String> {
    let ok = (1..=253).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: use a host name (letters, digits, - and .; no port)"
        ))
    }
}

#[cfg(test)]
mod tests;
