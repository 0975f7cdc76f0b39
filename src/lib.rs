//! # flora-cluster
//!
//! A cluster manager for preforking HTTP servers: a master process runs N worker processes of
//! your hyper server, keeps them alive, and keeps a shared-memory scoreboard of everything
//! they do — in the style of Apache's `mod_status`, readable from any worker without a round
//! trip.
//!
//! - [`Master`] (library) and the `flora-cluster` binary: spawn, respawn with backoff, stop in
//!   order; the master owns the listening sockets.
//! - [`Worker`]: the worker side — `listen`, `serve` (hyper 1.x, HTTP/1.1 and HTTP/2) with
//!   automatic connection and request tracking, readiness, graceful drain.
//! - [`scoreboard`]: the segment, its writers, and [`Snapshot`] readers.
//!
//! # Quick start
//! ```
//! use flora_cluster::scoreboard::Scoreboard;
//!
//! // What a worker writes...
//! let dir = tempfile::tempdir().unwrap();
//! let sb = Scoreboard::create(&dir.path().join("web.scoreboard"), "web", 2).unwrap();
//! let conn = sb.writer(0).unwrap().conn_open("127.0.0.1:50000".parse().unwrap());
//! conn.request_begin("GET", "/", 11).finish(200, 12);
//!
//! // ...any process can read.
//! let snap = sb.snapshot();
//! assert_eq!(snap.totals.counters.requests_total, 1);
//! assert_eq!(snap.totals.counters.status[1], 1); // 2xx
//! ```
//!
//! Linux is the target platform.

pub mod canary;
pub mod config;
pub mod control;
mod error;
pub mod exporter;
pub mod ipc;
mod limits;
pub mod master;
pub mod metrics;
pub mod scoreboard;
pub mod top;
pub mod unix_socket;
pub mod worker;

pub use config::Config;
pub use error::{Error, Result};
pub use master::{Hooks, Master, MasterBuilder, Phase, StatusReader};
pub use scoreboard::{Scoreboard, ScoreboardReader, Snapshot};
pub use worker::Worker;
