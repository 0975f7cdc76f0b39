//! The worker guards' end-to-end tests (`tests/guards_*.rs`): a worker that misbehaves on
//! purpose, and what the tests watch the cluster with.
//!
//! - here: the worker app ([`worker_entry`], the test binary itself, started again by the
//!   master) and [`GuardCluster`], a master running it whose strays are killed on drop;
//! - [`client`]: requests on fresh connections, a bounded-rate request loop, `wrk`;
//! - [`watch`]: the status JSON and `/metrics` of the guards, a scoreboard monitor that
//!   records the fewest ready workers, and RSS from `/proc`.
//!
//! The worker's routes (current-thread runtime): `/` answers `ok`; `/pid` its pid; `/slot`
//! its slot; `/sleep/{ms}` sleeps asynchronously (a dropped sleep is counted); `/block/{ms}`
//! sets the request info `job=blocker`, then blocks the runtime's only thread
//! (`std::thread::sleep`); `/leak/{mb}` keeps that many MiB, every page written, for good;
//! `/stream/{ms}` sends its head at once, then [`STREAM_CHUNKS`] chunks spread over `ms`;
//! `/stats` answers `requests=N dropped=N leaked_mib=N`. When its `serve` returns (a drain),
//! the worker writes a [`WorkerReport`] into the reports directory.

pub mod client;
pub mod watch;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use flora_cluster::worker::RequestInfo;
use flora_cluster::Worker;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::self_worker::{run_worker, self_worker_argv};
use super::{pid_alive, Cluster, TestDir};

/// Set for the workers: runs the guards' worker in the re-started test binary. Its value
/// (the test's instance name) marks this cluster's workers for [`GuardCluster`]'s cleanup.
pub const WORKER_ENV: &str = "FLORA_GUARDS_WORKER";
/// Set for the workers: the directory each writes its [`WorkerReport`] into when it drained.
pub const REPORTS_ENV: &str = "FLORA_GUARDS_REPORTS";
/// Longest a `/block` or `/sleep` may ask for (a failed test never leaves a worker stuck).
const MAX_HOLD_MS: u64 = 120_000;
/// Most MiB one `/leak` may ask for.
const MAX_LEAK_MIB: u64 = 64;
/// Chunks of a `/stream` body (each `chunk\n`).
pub const STREAM_CHUNKS: u32 = 10;

/// The worker's response bodies: whole, or streamed by `/stream`.
type AppBody = BoxBody<Bytes, Infallible>;

/// Memory `/leak` keeps (a global, so the allocations cannot be optimized away).
static LEAKED: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

/// What one worker process did, written by itself once its `serve` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerReport {
    /// Its pid.
    pub pid: u32,
    /// Requests its handler answered.
    pub requests: u64,
    /// `/sleep` futures dropped before they finished (request timeouts).
    pub dropped: u64,
    /// From its start to the end of its drain, ms (its own clock).
    pub lifetime_ms: u64,
}

/// The worker side, called by each `tests/guards_*.rs`'s `worker_entry` test: returns at once
/// unless [`WORKER_ENV`] is set (then this process is a worker of the test's master).
pub fn worker_entry() {
    if std::env::var_os(WORKER_ENV).is_none() {
        return;
    }
    let started = Instant::now();
    let reports = std::env::var_os(REPORTS_ENV).map(PathBuf::from);
    let app = run_worker(async move {
        let worker = Worker::from_env().expect("worker");
        let port = std::env::var("PORT").expect("PORT");
        let listener = worker
            .listen(&format!("127.0.0.1:{port}"))
            .await
            .expect("listen");
        let app = Arc::new(App {
            slot: worker.slot(),
            requests: AtomicU64::new(0),
            dropped: Arc::new(AtomicU64::new(0)),
        });
        let a = app.clone();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let a = a.clone();
            async move { Ok::<_, Infallible>(a.handle(req.uri().path()).await) }
        });
        worker.serve(listener, svc).await.expect("serve");
        app
    });
    if let Some(dir) = reports {
        let report = WorkerReport {
            pid: std::process::id(),
            requests: app.requests.load(Ordering::Relaxed),
            dropped: app.dropped.load(Ordering::Relaxed),
            lifetime_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        write_report(&dir, &report);
    }
}

/// The worker app's state.
struct App {
    slot: usize,
    requests: AtomicU64,
    dropped: Arc<AtomicU64>,
}

impl App {
    async fn handle(&self, path: &str) -> Response<AppBody> {
        let arg = |prefix: &str| {
            path.strip_prefix(prefix)
                .and_then(|n| n.parse::<u64>().ok())
        };
        let body = if path == "/" {
            "ok".to_string()
        } else if path == "/pid" {
            std::process::id().to_string()
        } else if path == "/slot" {
            self.slot.to_string()
        } else if path == "/stats" {
            format!(
                "requests={} dropped={} leaked_mib={}",
                self.requests.load(Ordering::Relaxed),
                self.dropped.load(Ordering::Relaxed),
                leaked_mib()
            )
        } else if let Some(ms) = arg("/sleep/") {
            let armed = DropCount(Some(self.dropped.clone()));
            tokio::time::sleep(Duration::from_millis(ms.min(MAX_HOLD_MS))).await;
            armed.disarm();
            format!("slept {ms} ms")
        } else if let Some(ms) = arg("/block/") {
            if let Some(info) = RequestInfo::current() {
                info.set("job", "blocker");
            }
            // On purpose: a synchronous call that holds the runtime's only thread.
            std::thread::sleep(Duration::from_millis(ms.min(MAX_HOLD_MS)));
            format!("blocked {ms} ms")
        } else if let Some(ms) = arg("/stream/") {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let every = Duration::from_millis(ms.min(MAX_HOLD_MS)) / STREAM_CHUNKS;
            return Response::new(Slow::new(every).boxed());
        } else if let Some(mb) = arg("/leak/") {
            leak(mb.min(MAX_LEAK_MIB));
            format!("leaked {mb} MiB, {} MiB in all", leaked_mib())
        } else {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"no such route\n")).boxed());
            *resp.status_mut() = StatusCode::NOT_FOUND;
            return resp;
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        Response::new(Full::new(Bytes::from(body)).boxed())
    }
}

/// A body of [`STREAM_CHUNKS`] chunks, one every `every` (the first one too).
struct Slow {
    left: u32,
    every: Duration,
    tick: Pin<Box<tokio::time::Sleep>>,
}

impl Slow {
    fn new(every: Duration) -> Self {
        Self {
            left: STREAM_CHUNKS,
            every,
            tick: Box::pin(tokio::time::sleep(every)),
        }
    }
}

impl Body for Slow {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        if self.tick.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.left -= 1;
        let next = tokio::time::Instant::now() + self.every;
        self.tick.as_mut().reset(next);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"chunk\n")))))
    }
}

/// Counts a `/sleep` future dropped before it finished.
struct DropCount(Option<Arc<AtomicU64>>);

impl DropCount {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for DropCount {
    fn drop(&mut self) {
        if let Some(n) = self.0.take() {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Keeps `mb` MiB with every page written (so they count in the RSS).
fn leak(mb: u64) {
    let bytes = usize::try_from(mb << 20).unwrap_or(0);
    let block = std::hint::black_box(vec![0x5a_u8; bytes].into_boxed_slice());
    leaked().push(block);
}

fn leaked() -> MutexGuard<'static, Vec<Box<[u8]>>> {
    LEAKED.lock().unwrap_or_else(PoisonError::into_inner)
}

fn leaked_mib() -> usize {
    leaked().iter().map(|b| b.len()).sum::<usize>() >> 20
}

fn write_report(dir: &Path, r: &WorkerReport) {
    let text = format!(
        "requests={} dropped={} lifetime_ms={}\n",
        r.requests, r.dropped, r.lifetime_ms
    );
    let tmp = dir.join(format!(".{}.tmp", r.pid));
    std::fs::write(&tmp, text).expect("write the worker report");
    std::fs::rename(&tmp, dir.join(r.pid.to_string())).expect("install the worker report");
}

fn parse_report(pid: u32, text: &str) -> Option<WorkerReport> {
    let fields: BTreeMap<&str, u64> = text
        .split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k, v.parse().ok()?))
        })
        .collect();
    Some(WorkerReport {
        pid,
        requests: *fields.get("requests")?,
        dropped: *fields.get("dropped")?,
        lifetime_ms: *fields.get("lifetime_ms")?,
    })
}

/// A master running the guards' worker (this test binary) for one test. Derefs to its
/// [`Cluster`]. On drop the cluster stops first; then every process still marked as one of
/// its workers (a worker the master failed to kill, e.g. one blocked in `/block`) is
/// SIGKILLed by pid.
#[derive(Debug)]
pub struct GuardCluster {
    cluster: Option<Cluster>,
    tag: String,
    reports: PathBuf,
}

impl GuardCluster {
    /// Starts `flora-cluster run MASTER_ARGS -- <this test binary as the guards' worker>` on
    /// `port` for `dir`'s instance.
    pub fn start<S: AsRef<std::ffi::OsStr>>(dir: &TestDir, port: u16, master_args: &[S]) -> Self {
        let reports = dir.scratch("reports");
        std::fs::create_dir_all(&reports).expect("mkdir reports");
        let cluster = dir
            .master(port)
            .args(master_args)
            .program(&self_worker_argv())
            .env(WORKER_ENV, &dir.name)
            .env(REPORTS_ENV, &reports.to_string_lossy())
            .start();
        Self {
            cluster: Some(cluster),
            tag: dir.name.clone(),
            reports,
        }
    }

    /// The reports of the workers that drained so far, by pid.
    pub fn reports(&self) -> BTreeMap<u32, WorkerReport> {
        let Ok(dir) = std::fs::read_dir(&self.reports) else {
            return BTreeMap::new();
        };
        dir.filter_map(|e| {
            let e = e.ok()?;
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let text = std::fs::read_to_string(e.path()).ok()?;
            Some((pid, parse_report(pid, &text)?))
        })
        .collect()
    }

    /// Pids of live processes that are workers of this cluster: their environment has this
    /// cluster's [`WORKER_ENV`] (the master's too) and a control channel (only workers').
    pub fn worker_processes(&self) -> Vec<u32> {
        let marker = format!("{WORKER_ENV}={}", self.tag);
        let control = format!("{}=", flora_cluster::ipc::ENV_CONTROL_FD);
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| *pid != std::process::id())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                    let mut vars = env.split(|b| *b == 0);
                    let mine = vars.clone().any(|kv| kv == marker.as_bytes());
                    mine && vars.any(|kv| kv.starts_with(control.as_bytes()))
                })
            })
            .filter(|pid| pid_alive(*pid))
            .collect()
    }
}

impl Deref for GuardCluster {
    type Target = Cluster;

    fn deref(&self) -> &Cluster {
        self.cluster.as_ref().expect("the cluster runs until drop")
    }
}

impl DerefMut for GuardCluster {
    fn deref_mut(&mut self) -> &mut Cluster {
        self.cluster.as_mut().expect("the cluster runs until drop")
    }
}

impl Drop for GuardCluster {
    fn drop(&mut self) {
        drop(self.cluster.take());
        for pid in self.worker_processes() {
            eprintln!("guards worker {pid} outlived its master: SIGKILL");
            if let Ok(raw) = i32::try_from(pid) {
                let _ = signal::kill(Pid::from_raw(raw), Signal::SIGKILL);
            }
        }
    }
}

/// Serializes the load tests of one test binary (they would share 2 cores otherwise).
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}
