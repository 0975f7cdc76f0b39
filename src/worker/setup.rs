//! Joining the master (or starting standalone): adopting the inherited descriptors once per
//! process, the control reader, parent-death and signal watching.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::control::{self, Control};
use super::{Inner, Worker, WorkerError};
use crate::ipc::{self, Channel};
use crate::scoreboard::{Scoreboard, SegmentLayout, SlotWriter};

/// Drain time when the master did not say (standalone, or an old master).
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Set by the first [`Worker::from_env`] of the process: inherited descriptors are adopted once.
static SET_UP: AtomicBool = AtomicBool::new(false);

fn env_num<T: std::str::FromStr>(name: &'static str) -> Result<Option<T>, WorkerError> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(WorkerError::Env {
            name,
            reason: e.to_string(),
        }),
        Ok(v) => v.trim().parse().map(Some).map_err(|_| WorkerError::Env {
            name,
            reason: format!("{v:?} is not a number"),
        }),
    }
}

fn required<T>(name: &'static str, v: Option<T>) -> Result<T, WorkerError> {
    v.ok_or(WorkerError::Env {
        name,
        reason: "missing".into(),
    })
}

/// Takes over an inherited descriptor: ours to own from now on, and close-on-exec, so no
/// program this process starts inherits it.
fn adopt(name: &'static str, fd: i32) -> Result<OwnedFd, WorkerError> {
    let bad = |e: std::io::Error| WorkerError::Env {
        name,
        reason: format!("fd {fd}: {e}"),
    };
    let owned = crate::scoreboard::raw::fd::adopt_inherited_fd(fd).map_err(bad)?;
    nix::fcntl::fcntl(
        owned.as_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| bad(e.into()))?;
    Ok(owned)
}

/// Checks, before anything is adopted, that the inherited control descriptor is a
/// `SOCK_SEQPACKET` socket and the scoreboard descriptor a regular file (a memfd is one). A
/// stale variable inherited by a program a worker started names descriptors that are not
/// ours: they are refused and left open, never closed under their owner.
fn check_inherited(control_fd: i32, sb_fd: i32) -> Result<(), WorkerError> {
    use crate::scoreboard::raw::fd::check_inherited_fd;
    use nix::sys::socket::{getsockopt, sockopt, SockType};
    let env = |name, fd, reason: String| WorkerError::Env {
        name,
        reason: format!("fd {fd}: {reason}"),
    };
    let control = check_inherited_fd(control_fd, |b| {
        Ok(getsockopt(&b, sockopt::SockType).ok() == Some(SockType::SeqPacket))
    })
    .map_err(|e| env(ipc::ENV_CONTROL_FD, control_fd, e.to_string()))?;
    if !control {
        return Err(env(
            ipc::ENV_CONTROL_FD,
            control_fd,
            "not a control socket of a flora-cluster master".into(),
        ));
    }
    let regular = check_inherited_fd(sb_fd, |b| {
        let st = nix::sys::stat::fstat(b)?;
        Ok(st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG)
    })
    .map_err(|e| env(ipc::ENV_SCOREBOARD_FD, sb_fd, e.to_string()))?;
    if !regular {
        return Err(env(
            ipc::ENV_SCOREBOARD_FD,
            sb_fd,
            "not a scoreboard segment (not a regular file)".into(),
        ));
    }
    Ok(())
}

/// What the environment sets besides the descriptors.
#[derive(Debug, Clone, Copy)]
struct Settings {
    shutdown_timeout: Duration,
    show_query: bool,
    /// `None`: no request timeout.
    request_timeout: Option<Duration>,
    /// `None`: no heartbeat.
    heartbeat: Option<Duration>,
    /// `--max-requests`: report promptly from this count on.
    max_requests: Option<u64>,
}

impl Settings {
    fn from_env() -> Result<Self, WorkerError> {
        let ms = |name| Ok::<_, WorkerError>(env_num::<u64>(name)?.map(Duration::from_millis));
        Ok(Self {
            shutdown_timeout: ms(ipc::ENV_SHUTDOWN_TIMEOUT_MS)?.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
            show_query: env_num::<u8>(ipc::ENV_SHOW_QUERY).ok().flatten() == Some(1),
            request_timeout: ms(ipc::ENV_REQUEST_TIMEOUT_MS)?.filter(|d| !d.is_zero()),
            heartbeat: ms(ipc::ENV_HEARTBEAT_MS)?.filter(|d| !d.is_zero()),
            max_requests: env_num::<u64>(ipc::ENV_MAX_REQUESTS)?,
        })
    }

    /// The worker on `writer`'s slot with these settings.
    fn worker(self, writer: SlotWriter, generation: u64, managed: Option<Control>) -> Worker {
        let (shutdown_tx, _) = watch::channel(false);
        Worker {
            inner: Arc::new(Inner {
                writer,
                generation,
                managed,
                ready_sent: AtomicBool::new(false),
                shutdown_tx,
                shutdown_timeout: self.shutdown_timeout,
                tracking: AtomicBool::new(true),
                show_query: self.show_query,
                request_timeout_ns: AtomicU64::new(super::timeout_ns(self.request_timeout)),
                heartbeat: self.heartbeat.map(|every| super::heartbeat::Beat {
                    every,
                    prompt_from: self.max_requests,
                }),
            }),
        }
    }
}

impl Worker {
    /// Joins the master named by the environment, or starts standalone when there is none.
    /// Call it inside a tokio runtime; the worker's tasks run on that runtime.
    ///
    /// It runs once per process: the first call takes over the descriptors the master passed
    /// (made close-on-exec, so programs the app starts do not inherit them); every later call
    /// returns [`WorkerError::AlreadySetUp`] — clone the returned `Worker` (cheap) instead.
    /// Standalone works the same, so a program that runs standalone also runs under a master.
    ///
    /// Besides the master's protocol it reads `FLORA_REQUEST_TIMEOUT_MS` (the request timeout
    /// in ms, also standalone; see [`Worker::set_request_timeout`]) and, under a master,
    /// `FLORA_HEARTBEAT_MS` (how often the worker tells the master that its runtime turns).
    ///
    /// # Errors
    /// [`WorkerError::Env`] for malformed protocol variables, [`WorkerError::Scoreboard`] when
    /// the inherited segment is invalid, [`WorkerError::NoRuntime`] outside tokio,
    /// [`WorkerError::AlreadySetUp`] on a second call.
    pub fn from_env() -> Result<Self, crate::Error> {
        tokio::runtime::Handle::try_current().map_err(|_| WorkerError::NoRuntime)?;
        if SET_UP.swap(true, Ordering::AcqRel) {
            return Err(WorkerError::AlreadySetUp.into());
        }
        let settings = Settings::from_env()?;
        let worker = match env_num::<i32>(ipc::ENV_CONTROL_FD)? {
            Some(fd) => Self::managed(fd, settings)?,
            None => Self::standalone(settings)?,
        };
        worker.watch_signals();
        Ok(worker)
    }

    fn managed(control_fd: i32, settings: Settings) -> Result<Self, WorkerError> {
        let sb_fd = required(
            ipc::ENV_SCOREBOARD_FD,
            env_num::<i32>(ipc::ENV_SCOREBOARD_FD)?,
        )?;
        let slot = required(ipc::ENV_SLOT, env_num::<usize>(ipc::ENV_SLOT)?)?;
        let generation = env_num::<u64>(ipc::ENV_GENERATION)?.unwrap_or(0);
        if sb_fd == control_fd {
            return Err(WorkerError::Env {
                name: ipc::ENV_SCOREBOARD_FD,
                reason: format!("fd {sb_fd} is also the control socket"),
            });
        }
        check_inherited(control_fd, sb_fd)?;
        let control = adopt(ipc::ENV_CONTROL_FD, control_fd)?;
        let sb_fd = adopt(ipc::ENV_SCOREBOARD_FD, sb_fd)?;
        // Attach by the layout the master announced, never by a header any worker can write.
        let sb = match std::env::var(ipc::ENV_SCOREBOARD_LAYOUT) {
            Ok(v) => {
                let layout = SegmentLayout::decode(&v).ok_or_else(|| WorkerError::Env {
                    name: ipc::ENV_SCOREBOARD_LAYOUT,
                    reason: format!("{v:?} is not `slots:hash`"),
                })?;
                Scoreboard::from_fd_with_layout(sb_fd, layout)?
            }
            Err(_) => Scoreboard::from_fd(sb_fd)?,
        };
        let writer = sb.writer(slot)?;
        let channel = Arc::new(Channel::new(control).map_err(WorkerError::Channel)?);
        let (client, answers) = Control::new(channel.clone(), control::REPLY_TIMEOUT);
        let worker = settings.worker(writer, generation, Some(client));
        worker.spawn_control_reader(channel, answers);
        worker.watch_parent();
        Ok(worker)
    }

    fn standalone(settings: Settings) -> Result<Self, WorkerError> {
        let sb = Scoreboard::create_sealed("standalone", 1)?;
        // No master: this process records its own slot's pid and start.
        sb.slot_spawned(0, std::process::id(), 0);
        // No master to hear a heartbeat.
        let settings = Settings {
            heartbeat: None,
            ..settings
        };
        Ok(settings.worker(sb.writer(0)?, 0, None))
    }

    fn spawn_control_reader(&self, channel: Arc<Channel>, answers: mpsc::Sender<control::Answer>) {
        let me = self.clone();
        tokio::spawn(async move {
            control::read_loop(&channel, &answers, || {
                tracing::debug!("master asked this worker to shut down");
                me.shutdown();
            })
            .await;
            tracing::warn!("control channel closed: the master is gone, shutting down");
            me.orphaned();
        });
    }

    /// Second line of defence besides control-socket EOF: SIGTERM when the master dies.
    fn watch_parent(&self) {
        let master = env_num::<i32>(ipc::ENV_MASTER_PID).ok().flatten();
        if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM) {
            tracing::warn!("cannot set the parent-death signal: {e}");
        }
        // The master may have died before the signal was armed.
        if master.is_some_and(|pid| nix::unistd::getppid().as_raw() != pid) {
            self.orphaned();
        }
    }

    /// The master is gone: drain, and make sure the process ends even if the app lingers.
    fn orphaned(&self) {
        self.shutdown();
        let deadline = self.inner.shutdown_timeout + Duration::from_secs(1);
        std::thread::spawn(move || {
            std::thread::sleep(deadline);
            std::process::exit(1);
        });
    }

    fn watch_signals(&self) {
        use tokio::signal::unix::{signal, SignalKind};
        let me = self.clone();
        let standalone = self.inner.managed.is_none();
        tokio::spawn(async move {
            let Ok(mut term) = signal(SignalKind::terminate()) else {
                return;
            };
            let mut int = if standalone {
                signal(SignalKind::interrupt()).ok()
            } else {
                None
            };
            let interrupted = async {
                match int.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupted => {}
            }
            me.shutdown();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::ToMaster;
    use std::os::fd::AsRawFd;

    fn is_open(fd: i32) -> bool {
        crate::scoreboard::raw::fd::check_inherited_fd(fd, |_| Ok(())).is_ok()
    }

    #[tokio::test]
    async fn a_managed_worker_sends_heartbeats_only_once_ready() {
        let (worker_end, master_end) = ipc::pair().expect("socketpair");
        let channel = Arc::new(Channel::new(worker_end).expect("worker end"));
        let (control, _answers) = Control::new(channel, Duration::from_secs(1));
        let master = Channel::new(master_end).expect("master end");
        let dir = tempfile::tempdir().expect("tempdir");
        let sb = Scoreboard::create(&dir.path().join("s"), "t", 1).expect("segment");
        let every = Duration::from_millis(50);
        let settings = Settings {
            shutdown_timeout: Duration::from_secs(1),
            show_query: false,
            request_timeout: None,
            heartbeat: Some(every),
            max_requests: None,
        };
        let worker = settings.worker(sb.writer(0).expect("writer"), 0, Some(control));
        let next = || tokio::time::timeout(Duration::from_secs(5), master.recv::<ToMaster>());
        let quiet = tokio::time::timeout(every * 3, master.recv::<ToMaster>()).await;
        assert!(quiet.is_err(), "nothing before ready: {quiet:?}");
        worker.ready().await.expect("ready");
        let first = next().await.expect("in time").expect("recv");
        assert!(matches!(first, Some((ToMaster::Ready, _))), "{first:?}");
        let mut last = 0;
        for _ in 0..3 {
            match next().await.expect("in time").expect("recv") {
                Some((ToMaster::Heartbeat { lag_us, requests }, _)) => {
                    assert!(lag_us < 1_000_000, "lag {lag_us} us");
                    assert!(requests >= last, "the count only grows");
                    last = requests;
                }
                other => panic!("expected a heartbeat: {other:?}"),
            }
        }
    }

    #[test]
    fn descriptors_that_are_not_ours_are_refused_and_left_open() {
        let t = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(t.path().join("f")).unwrap();
        let (a, _b) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (f, s) = (file.as_raw_fd(), a.as_raw_fd());
        // A file where the control socket should be: refused, the file stays open.
        assert!(check_inherited(f, s).is_err());
        // A socket where the segment should be: refused, the socket stays open.
        assert!(check_inherited(s, s).is_err());
        assert!(is_open(f) && is_open(s));
        assert!(check_inherited(s, f).is_ok());
        assert!(check_inherited(s, 9999).is_err());
    }
}
