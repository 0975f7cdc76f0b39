//! The crate's error type: one variant per module error.

use std::path::PathBuf;

/// Any flora-cluster error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Invalid configuration (file, flags or builder).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The scoreboard segment.
    #[error(transparent)]
    Scoreboard(#[from] crate::scoreboard::ScoreboardError),
    /// The worker API.
    #[error(transparent)]
    Worker(#[from] crate::worker::WorkerError),
    /// TLS set-up (feature `tls`).
    #[cfg(feature = "tls")]
    #[error(transparent)]
    Tls(#[from] crate::worker::TlsError),
    /// A custom metric registration.
    #[error(transparent)]
    Metric(#[from] crate::scoreboard::MetricError),
    /// Another master with this instance name is running.
    #[error(
        "instance {name:?} is already running (master pid {pid}); stop it or pick another --name"
    )]
    AlreadyRunning {
        /// Instance name.
        name: String,
        /// Pid recorded by the running master (0 if unknown).
        pid: u32,
    },
    /// The runtime directory is not usable.
    #[error("runtime directory {path}: {reason}")]
    RuntimeDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Spawning a worker failed.
    #[error("cannot spawn worker {program:?}: {source}")]
    Spawn {
        /// Program.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The first generation never became ready.
    #[error("workers did not start: {0}")]
    StartFailed(String),
    /// Other I/O failure in the master.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
