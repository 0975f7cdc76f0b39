//! The worker side: what an HTTP server links to run under a flora-cluster master — or
//! standalone, with the same code.
//!
//! The Rust counterpart of the original `worker.run(); worker.attach(server); server.listen(1337)`:
//!
//! ```no_run
//! use flora_cluster::worker::Worker;
//! use http_body_util::Full;
//! use hyper::{body::Bytes, service::service_fn, Response};
//!
//! # async fn app() -> Result<(), flora_cluster::Error> {
//! let worker = Worker::from_env()?; // under a master, or standalone
//! let listener = worker.listen("127.0.0.1:1337").await?;
//! worker
//!     .serve(listener, service_fn(|_req| async {
//!         Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("Hello World\n"))))
//!     }))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Under a master
//! The master passes a control socket, the scoreboard segment and the worker's slot in
//! environment variables ([`crate::ipc`]). [`Worker::listen`] asks the master for the
//! listening socket (the master binds each address once and keeps it across generations),
//! [`Worker::serve`] tracks every connection and request into the worker's slot and marks
//! the worker ready, and the worker drains and exits when the master says so, when it gets
//! SIGTERM, or when the master is gone (end of file on the control socket, or the
//! parent-death signal). With `--heartbeat-timeout` a task of the worker's runtime tells the
//! master every so often that the runtime turns (`heartbeat.rs`); with `--request-timeout`
//! a request whose handler takes longer is answered 503 ([`Worker::set_request_timeout`]).
//!
//! # Standalone
//! Without those variables the worker binds its own sockets and tracks into a private
//! one-slot scoreboard; SIGINT and SIGTERM drain it.

mod control;
mod counting;
mod deadline;
mod heartbeat;
#[cfg(feature = "axum")]
mod routes;
mod serve;
mod setup;
#[cfg(feature = "tls")]
mod tls;
mod track;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use control::Control;

use crate::ipc::{ToMaster, ToWorker};
use crate::metrics::{Counter, Gauge, Histogram};
use crate::scoreboard::{
    Aggregation, MetricError, MetricKind, MetricSpec, Registered, SlotState, SlotWriter, Snapshot,
};

fn wrong_kind(spec: &MetricSpec, kind: &str) -> crate::Error {
    MetricError::Unavailable {
        name: spec.name.clone(),
        reason: format!("the spec is not a {kind}"),
    }
    .into()
}

#[cfg(feature = "axum")]
pub use routes::{RouteFuture, RouteLayer, RouteService};
pub use serve::{
    BoxError, HyperMarker, ListenAddr, Listener, ServeService, TowerMarker,
    HEADER_READ_TIMEOUT_ENV, UNIX_PREFIX,
};
#[cfg(feature = "tls")]
pub use tls::{TlsConfig, TlsError, DEFAULT_HANDSHAKE_TIMEOUT};
pub use track::RequestInfo;

/// Errors of the worker API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// An environment variable of the master protocol is malformed.
    #[error("bad environment variable {name}: {reason}")]
    Env {
        /// Variable name.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The inherited scoreboard is not usable.
    #[error("scoreboard: {0}")]
    Scoreboard(#[from] crate::scoreboard::ScoreboardError),
    /// Talking to the master failed.
    #[error("control channel: {0}")]
    Channel(#[source] std::io::Error),
    /// The master could not bind the address, or it did not answer.
    #[error("listen on {addr}: {reason}")]
    Listen {
        /// Address asked for.
        addr: String,
        /// Why it failed.
        reason: String,
    },
    /// Binding or serving failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A worker API call needs a tokio runtime.
    #[error("the worker API must be used inside a tokio runtime")]
    NoRuntime,
    /// [`Worker::from_env`] already ran in this process.
    #[error(
        "the worker is already set up in this process (Worker::from_env runs once: clone the worker it returned)"
    )]
    AlreadySetUp,
}

#[derive(Debug)]
struct Inner {
    writer: SlotWriter,
    generation: u64,
    managed: Option<Control>,
    ready_sent: AtomicBool,
    shutdown_tx: watch::Sender<bool>,
    shutdown_timeout: Duration,
    /// Whether `serve` tracks connections and requests (off only for benchmark baselines).
    tracking: AtomicBool,
    /// Whether request targets keep their query strings (the master's `--show-query-strings`).
    show_query: bool,
    /// The request timeout in ns (0: none), read by each `serve` call.
    request_timeout_ns: AtomicU64,
    /// The heartbeat sent once ready (`None`: never; only under a master).
    heartbeat: Option<heartbeat::Beat>,
}

/// `timeout` in ns for [`Inner::request_timeout_ns`] (0: none).
fn timeout_ns(timeout: Option<Duration>) -> u64 {
    timeout.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A worker process's handle on its cluster. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

impl Worker {
    /// Asks for a listening socket on `addr`: `host:port`, or `unix:PATH` for a Unix socket.
    /// Under a master the master binds it (once for all generations) and passes it over;
    /// standalone it is bound here (a stale socket file at `PATH` is replaced; anything else
    /// there, or a socket something still listens on, is refused).
    ///
    /// # Errors
    /// [`WorkerError::Listen`] when the address cannot be bound or the master does not answer.
    pub async fn listen(&self, addr: &str) -> Result<Listener, crate::Error> {
        let Some(m) = &self.inner.managed else {
            return Ok(Listener::bind(addr).await?);
        };
        let fail = |reason: String| WorkerError::Listen {
            addr: addr.to_string(),
            reason,
        };
        let reply = m
            .ask(|id| ToMaster::Listen {
                id,
                addr: addr.into(),
            })
            .await
            .map_err(|e| fail(e.to_string()))?;
        match reply {
            (ToWorker::Listening { .. }, mut fds) if fds.len() == 1 => {
                Ok(Listener::from_fd(fds.remove(0))
                    .map_err(|e| fail(e.to_string()))?
                    .named(addr))
            }
            (ToWorker::ListenFailed { error, .. }, _) => Err(fail(error).into()),
            (other, _) => Err(fail(format!("unexpected answer {other:?}")).into()),
        }
    }

    /// Registers a custom metric series (through the master, which keeps one registry for the
    /// whole cluster, so every worker registering the same name gets the same series).
    ///
    /// # Errors
    /// [`crate::scoreboard::MetricError`] for an invalid spec, a name registered with another
    /// shape, or a full registry.
    pub async fn register(&self, spec: &MetricSpec) -> Result<Registered, crate::Error> {
        spec.validate()?;
        let Some(m) = &self.inner.managed else {
            return Ok(self.inner.writer.scoreboard().register(spec)?);
        };
        let unavailable = |reason: String| MetricError::Unavailable {
            name: spec.name.clone(),
            reason,
        };
        let owned = spec.clone();
        match m.ask(|id| ToMaster::Register { id, spec: owned }).await {
            Ok((ToWorker::Registered { at, .. }, _)) => Ok(at),
            Ok((ToWorker::RegisterFailed { error, .. }, _)) => Err(error.into()),
            Ok((other, _)) => Err(unavailable(format!("unexpected answer {other:?}")).into()),
            Err(e) => Err(unavailable(e.to_string()).into()),
        }
    }

    /// Registers (or finds) a counter; see [`Worker::register`].
    ///
    /// # Errors
    /// As [`Worker::register`], and for a spec that is not a counter.
    pub async fn counter_with(&self, spec: MetricSpec) -> Result<Counter, crate::Error> {
        if spec.kind != MetricKind::Counter {
            return Err(wrong_kind(&spec, "counter"));
        }
        let at = self.register(&spec).await?;
        Ok(Counter::new(self.inner.writer.clone(), at))
    }

    /// Registers (or finds) the counter `name` (ending in `_total`) without labels.
    ///
    /// # Errors
    /// As [`Worker::register`].
    pub async fn counter(&self, name: &str, help: &str) -> Result<Counter, crate::Error> {
        self.counter_with(MetricSpec::counter(name, help)).await
    }

    /// Registers (or finds) a gauge; see [`Worker::register`].
    ///
    /// # Errors
    /// As [`Worker::register`], and for a spec that is not a gauge.
    pub async fn gauge_with(&self, spec: MetricSpec) -> Result<Gauge, crate::Error> {
        let MetricKind::Gauge { aggregation, .. } = spec.kind else {
            return Err(wrong_kind(&spec, "gauge"));
        };
        let at = self.register(&spec).await?;
        Ok(Gauge::new(self.inner.writer.clone(), at, aggregation))
    }

    /// Registers (or finds) the gauge `name` without labels, combined by `aggregation`.
    ///
    /// # Errors
    /// As [`Worker::register`].
    pub async fn gauge(
        &self,
        name: &str,
        help: &str,
        aggregation: Aggregation,
    ) -> Result<Gauge, crate::Error> {
        self.gauge_with(MetricSpec::gauge(name, help, aggregation))
            .await
    }

    /// Registers (or finds) a histogram; see [`Worker::register`].
    ///
    /// # Errors
    /// As [`Worker::register`], and for a spec that is not a histogram.
    pub async fn histogram_with(&self, spec: MetricSpec) -> Result<Histogram, crate::Error> {
        let MetricKind::Histogram { buckets } = &spec.kind else {
            return Err(wrong_kind(&spec, "histogram"));
        };
        let buckets = buckets.clone();
        let at = self.register(&spec).await?;
        Ok(Histogram::new(self.inner.writer.clone(), at, &buckets))
    }

    /// Registers (or finds) the histogram `name` without labels.
    ///
    /// # Errors
    /// As [`Worker::register`].
    pub async fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
    ) -> Result<Histogram, crate::Error> {
        self.histogram_with(MetricSpec::histogram(name, help, buckets))
            .await
    }

    /// Marks this worker ready: the master counts it as serving. [`Worker::serve`] calls it when it
    /// starts accepting; call it yourself only to be explicit after start-up checks. Idempotent.
    ///
    /// # Errors
    /// [`WorkerError::Channel`] when the master cannot be told.
    pub async fn ready(&self) -> Result<(), crate::Error> {
        if self.inner.ready_sent.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.writer.set_state(SlotState::Ready);
        if let Some(m) = &self.inner.managed {
            m.send(&ToMaster::Ready).await?;
            if let Some(beat) = self.inner.heartbeat {
                self.spawn_heartbeat(beat);
            }
        }
        Ok(())
    }

    /// Sends the heartbeat from a task of this runtime, until the master is gone.
    fn spawn_heartbeat(&self, beat: heartbeat::Beat) {
        let me = self.clone();
        tokio::spawn(async move {
            if let Some(m) = &me.inner.managed {
                heartbeat::run(
                    m,
                    beat,
                    crate::scoreboard::RequestGuard::finished_in_process,
                )
                .await;
            }
        });
    }

    /// Starts a graceful shutdown: [`Worker::serve`] stops accepting, finishes in-flight requests
    /// and returns.
    pub fn shutdown(&self) {
        self.inner.shutdown_tx.send_replace(true);
    }

    /// Resolves once a shutdown was requested (by the master, a signal, or [`Worker::shutdown`]).
    pub async fn shutdown_requested(&self) {
        let mut rx = self.inner.shutdown_tx.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Whether this worker runs under a master.
    pub fn is_managed(&self) -> bool {
        self.inner.managed.is_some()
    }

    /// This worker's slot index (0 standalone).
    pub fn slot(&self) -> usize {
        self.inner.writer.index()
    }

    /// This worker's generation (0 standalone).
    pub fn generation(&self) -> u64 {
        self.inner.generation
    }

    /// The aggregated status of the whole cluster, read from shared memory (no round trip).
    pub fn status(&self) -> Snapshot {
        self.inner.writer.scoreboard().snapshot()
    }

    /// This worker's slot writer (for custom tracking).
    pub fn slot_writer(&self) -> &SlotWriter {
        &self.inner.writer
    }

    /// Turns request tracking off (or on) for later `serve` calls: the benchmarks' untracked
    /// baseline. Untracked connections appear nowhere in the scoreboard, load spreading has
    /// nothing to go by, and drains close keep-alive connections without `Connection: close`.
    /// The request timeout still applies (its 503s are not counted).
    pub fn set_tracking(&self, on: bool) {
        self.inner.tracking.store(on, Ordering::Relaxed);
    }

    /// Sets the request timeout of later [`Worker::serve`] calls (`None` or zero: none; under
    /// a master it starts as `--request-timeout`, from `FLORA_REQUEST_TIMEOUT_MS`). A request
    /// whose handler has not produced its response head within the timeout is answered
    /// `503 Service Unavailable` with an empty body (`content-length: 0`; on HTTP/1 also
    /// `Connection: close`), its handler's future is dropped, and it counts as a 503 in
    /// `flora_http_requests_total` and in `flora_request_timeouts_total`. A response whose
    /// body already started is not cut. It works for HTTP/1, each HTTP/2 stream and TLS.
    ///
    /// It costs nothing for a handler that answers in its first poll: a deadline is armed
    /// (an entry in a table swept every few hundred ms) only when the handler waits. With tracking off
    /// ([`Worker::set_tracking`]) the timeout still applies but nothing is counted. It needs
    /// a runtime with the time driver enabled (as `serve` does anyway).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use flora_cluster::worker::Worker;
    /// # use http_body_util::Full;
    /// # use hyper::{body::Bytes, service::service_fn, Response};
    ///
    /// # async fn app() -> Result<(), flora_cluster::Error> {
    /// let worker = Worker::from_env()?;
    /// // Standalone too: requests still waiting after 30 s are answered 503.
    /// worker.set_request_timeout(Some(Duration::from_secs(30)));
    /// let listener = worker.listen("127.0.0.1:1337").await?;
    /// let svc = service_fn(|_req| async {
    ///     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("hi\n"))))
    /// });
    /// worker.serve(listener, svc).await?;
    /// # Ok(()) }
    /// ```
    pub fn set_request_timeout(&self, timeout: Option<Duration>) {
        let ns = timeout_ns(timeout);
        self.inner.request_timeout_ns.store(ns, Ordering::Relaxed);
    }

    /// The request timeout later `serve` calls apply (`None`: none).
    pub fn request_timeout(&self) -> Option<Duration> {
        match self.inner.request_timeout_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    pub(crate) fn show_query(&self) -> bool {
        self.inner.show_query
    }

    pub(crate) fn tracking(&self) -> bool {
        self.inner.tracking.load(Ordering::Relaxed)
    }

    pub(crate) fn shutdown_timeout(&self) -> Duration {
        self.inner.shutdown_timeout
    }
}
