//! The instance's control socket: a Unix stream socket (mode 0600) in the runtime directory,
//! one JSON object per line each way. Commands: `reload`, `canary`, `upgrade`, `stop`, `scale`,
//! `status`.
//!
//! ```text
//! → {"cmd":"reload"}
//! ← {"ok":true,"reload":{"outcome":"success","generation":2,"reason":null,"duration_ms":412}}
//! → {"cmd":"canary","workers":1,"secs":30,"max_error_ratio":0.01}
//! ← {"ok":true,"reload":{"outcome":"rollback",…,"canary":{"old":{…},"new":{…},"verdict":"rollback",…}}}
//! → {"cmd":"scale","workers":4}
//! ← {"ok":true,"workers":4}
//! → {"cmd":"bogus"}
//! ← {"ok":false,"error":"bad request: unknown variant `bogus`, expected one of …"}
//! ```
//!
//! ```no_run
//! use flora_cluster::control::{self, Request};
//! use std::time::Duration;
//! let reply = control::call("/run/user/1000/flora-cluster/web.sock".as_ref(), &Request::Reload,
//!                           Duration::from_secs(120)).unwrap();
//! println!("{:?}", reply.reload);
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::canary::{CanaryLimits, CanaryReport, CanarySpec};

/// Longest request or reply line accepted.
pub const MAX_LINE: usize = 64 * 1024;

/// A command to the master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Request {
    /// Replace every worker with a new generation; answered with the outcome.
    Reload,
    /// Stop the cluster gracefully.
    Stop,
    /// Change the worker count.
    Scale {
        /// The new count.
        workers: usize,
    },
    /// The master's view: phase, generation, last reload, workers.
    Status,
    /// A canary reload ([`crate::canary`]): `workers` new workers serve next to the old
    /// generation for `secs` seconds, then it is promoted or rolled back; answered with the
    /// outcome and its `canary` figures. Limits left out take the master's (`[canary]` in
    /// its configuration, [`crate::MasterBuilder::canary_limits`], else
    /// [`CanaryLimits::default`]).
    Canary {
        /// Canary workers (1..=the worker count).
        workers: usize,
        /// Observation window, seconds.
        secs: f64,
        /// Allowed 5xx ratio over the old generation's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_error_ratio: Option<f64>,
        /// Allowed p99 factor over the old generation's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_p99_ratio: Option<f64>,
        /// Requests needed in each generation to judge.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_requests: Option<u64>,
    },
    /// Replace the master itself ([`crate::upgrade`]): the binary on disk (`binary`, else the
    /// path the master was started from) takes over the sockets, the scoreboard and the
    /// state; answered with the [`UpgradeReport`] once the old master hands over or rolls
    /// back. Only on the control socket (never over HTTP).
    Upgrade {
        /// The new master's binary (absolute path); `None`: the master's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        binary: Option<PathBuf>,
        /// How long the new master may take to become ready, seconds (`None`: the ready
        /// timeout plus 10 s).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_secs: Option<f64>,
    },
}

impl Request {
    /// A canary request with the default limits.
    pub fn canary(workers: usize, secs: f64) -> Self {
        Self::Canary {
            workers,
            secs,
            max_error_ratio: None,
            max_p99_ratio: None,
            min_requests: None,
        }
    }

    /// A canary request's spec, the limits it leaves out taken from `defaults` (`None` for
    /// other requests).
    pub fn canary_spec(&self, defaults: &CanaryLimits) -> Option<CanarySpec> {
        let Self::Canary {
            workers,
            secs,
            max_error_ratio,
            max_p99_ratio,
            min_requests,
        } = *self
        else {
            return None;
        };
        let d = defaults;
        Some(CanarySpec {
            workers,
            secs,
            limits: CanaryLimits {
                max_error_ratio: max_error_ratio.unwrap_or(d.max_error_ratio),
                max_p99_ratio: max_p99_ratio.unwrap_or(d.max_p99_ratio),
                min_requests: min_requests.unwrap_or(d.min_requests),
            },
        })
    }
}

/// How a reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every new worker became ready; the old generation was drained.
    Success,
    /// The reload was cancelled; the old generation kept serving.
    Rollback,
}

impl Outcome {
    /// `success` or `rollback`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Rollback => "rollback",
        }
    }
}

/// The result of one reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    /// Success or rollback.
    pub outcome: Outcome,
    /// The generation that was started (serving on success, stopped on rollback).
    pub generation: u64,
    /// Why it was rolled back.
    pub reason: Option<String>,
    /// How long it took, ms.
    pub duration_ms: u64,
    /// A canary reload's comparison (absent for other reloads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryReport>,
}

/// The result of one master upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeReport {
    /// Success (the new master serves) or rollback (the old one serves on).
    pub outcome: Outcome,
    /// The master that was asked.
    pub from_pid: u32,
    /// The new master, once it was started.
    #[serde(default)]
    pub to_pid: Option<u32>,
    /// The old master's version.
    pub from_version: String,
    /// The new master's version, once it said hello.
    #[serde(default)]
    pub to_version: Option<String>,
    /// From the request to the handover (or the rollback), ms.
    pub duration_ms: u64,
    /// Why it was rolled back.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A reply line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the command was carried out (a rolled-back reload is still `ok`).
    pub ok: bool,
    /// What went wrong, when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The outcome of a reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadOutcome>,
    /// The worker count after a scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// The status document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
    /// The outcome of a master upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeReport>,
}

impl Reply {
    /// An error reply.
    pub fn error(msg: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(msg.into()),
            ..Self::default()
        }
    }

    /// A plain success reply.
    pub fn ok() -> Self {
        Self {
            ok: true,
            ..Self::default()
        }
    }
}

/// A request on its way to the master's event loop, with where its reply goes (the control
/// socket and the HTTP actions both send these).
#[derive(Debug)]
pub(crate) struct Command {
    /// The request.
    pub req: Request,
    /// The reply channel.
    pub reply: tokio::sync::oneshot::Sender<Reply>,
}

/// Errors of a control-socket client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// Connecting failed: usually no master runs with that name.
    #[error("cannot connect to {path}: {source} (is the master running? check --name / --control-socket)")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Sending or receiving failed, or timed out.
    #[error("control socket {path}: {source}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The master's reply was not understood.
    #[error("bad reply from the master: {0}")]
    BadReply(String),
}

/// The control socket of instance `name` in `runtime_dir`.
pub fn socket_path(runtime_dir: &Path, name: &str) -> PathBuf {
    runtime_dir.join(format!("{name}.sock"))
}

/// Sends one request and waits up to `timeout` for its reply.
///
/// # Errors
/// [`ControlError`] when the master cannot be reached or answers garbage.
pub fn call(path: &Path, req: &Request, timeout: Duration) -> Result<Reply, ControlError> {
    let mut stream = UnixStream::connect(path).map_err(|source| ControlError::Connect {
        path: path.to_owned(),
        source,
    })?;
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| ControlError::BadReply(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut reader = BufReader::new(stream.try_clone().map_err(io)?).take(MAX_LINE as u64);
    let mut reply = String::new();
    reader.read_line(&mut reply).map_err(io)?;
    if reply.is_empty() {
        return Err(ControlError::BadReply(
            "the master closed the connection".into(),
        ));
    }
    serde_json::from_str(&reply).map_err(|e| ControlError::BadReply(e.to_string()))
}

/// After a `stop` reply: waits until the master is gone (its socket refuses connections; the
/// master removes it when it exits), up to `timeout`. Returns whether it is gone.
pub fn wait_gone(path: &Path, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if UnixStream::connect(path).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        assert_eq!(
            serde_json::to_string(&Request::Reload).unwrap(),
            r#"{"cmd":"reload"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"scale","workers":3}"#).unwrap(),
            Request::Scale { workers: 3 }
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"scale"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"scale","workers":3,"x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
        let canary = r#"{"cmd":"canary","workers":1,"secs":2.5}"#;
        let req = serde_json::from_str::<Request>(canary).unwrap();
        assert_eq!(req, Request::canary(1, 2.5));
        assert_eq!(serde_json::to_string(&req).unwrap(), canary);
        let spec = req.canary_spec(&CanaryLimits::default()).unwrap();
        assert_eq!(spec.limits, CanaryLimits::default());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"canary","workers":1}"#).is_err());
        let up = Request::Upgrade {
            binary: None,
            timeout_secs: None,
        };
        assert_eq!(serde_json::to_string(&up).unwrap(), r#"{"cmd":"upgrade"}"#);
        let up = r#"{"cmd":"upgrade","binary":"/usr/bin/flora-cluster","timeout_secs":30.0}"#;
        assert!(matches!(
            serde_json::from_str::<Request>(up).unwrap(),
            Request::Upgrade { binary: Some(_), timeout_secs: Some(t) } if t == 30.0
        ));
        let r = Reply::error("nope");
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"ok":false,"error":"nope"}"#
        );
    }
}
