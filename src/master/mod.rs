//! The master: owns the listening sockets and the scoreboard, spawns and supervises the
//! workers, and stops them in order.
//!
//! ```no_run
//! use flora_cluster::Master;
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), flora_cluster::Error> {
//! Master::builder()
//!     .name("hello")
//!     .workers(3)
//!     .program(["./target/debug/examples/hello"])
//!     .shutdown_timeout(Duration::from_secs(10))
//!     .build()?
//!     .run()
//!     .await
//! # }
//! ```
//!
//! # Lifecycle
//! Each worker moves through `Starting → Ready → Draining → Exited` ([`crate::scoreboard::SlotState`] in the
//! scoreboard). The master publishes its own [`Phase`] on a watch channel, only once it is
//! true. A worker that dies while its generation serves is respawned into the same slot
//! ([`backoff`]). SIGTERM, SIGINT and SIGQUIT drain every worker within the shutdown timeout
//! and then kill what is left; a second one kills at once.
//!
//! # Inside
//! Every decision (phases, generations, slots, the reload transaction, respawns, stopping)
//! is made by `core`, a pure state machine (events in, actions out; no syscalls, no clock,
//! no tokio) with its state diagrams in its module docs, unit tests for each transition and
//! a property test over random event sequences. `shell` is the event loop around it: it
//! turns signals, worker messages and exits, control requests and timers into core events,
//! and carries out the actions (processes, signals, scoreboard writes, systemd, hooks).
//!
//! # Platform
//! Linux only: it relies on `SOCK_SEQPACKET`, `SCM_RIGHTS`, `PR_SET_PDEATHSIG`, `flock` and a
//! tmpfs for the scoreboard.

pub mod backoff;
mod builder;
mod control_server;
mod core;
mod fronts;
mod handover;
mod history;
mod instance;
mod listen_queue;
mod listeners;
mod program;
mod reaper;
mod shell;
pub mod signals;
mod spawn;
mod start;
mod systemd;
mod token;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

pub use self::core::Phase;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::scoreboard::{MetricSpec, Scoreboard};
pub use instance::default_runtime_dir;
use instance::RuntimeDir;
use shell::Shell;
use signals::{SignalSource, UnixSignals};

pub use builder::MasterBuilder;

/// An async hook: gets the generation about to start (0 for shutdown); an `Err` cancels a reload.
pub type HookFn =
    Arc<dyn Fn(u64) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Lifecycle hooks of a master.
#[derive(Clone, Default)]
pub struct Hooks {
    before_reload: Option<HookFn>,
    before_shutdown: Option<HookFn>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("before_reload", &self.before_reload.is_some())
            .field("before_shutdown", &self.before_shutdown.is_some())
            .finish()
    }
}

fn boxed_hook<F, Fut>(f: F) -> HookFn
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move |g| Box::pin(f(g)))
}

/// A configured master, ready to [`Master::run`].
#[derive(Debug)]
pub struct Master {
    config: Config,
    hooks: Hooks,
    metrics: Vec<MetricSpec>,
    phase: watch::Sender<Phase>,
    scoreboard: Arc<std::sync::OnceLock<Scoreboard>>,
}

/// Reads a running master's scoreboard from the process that runs it ([`Master::status_reader`]).
#[derive(Debug, Clone)]
pub struct StatusReader {
    scoreboard: Arc<std::sync::OnceLock<Scoreboard>>,
}

impl StatusReader {
    /// The cluster's snapshot, once the master has created its scoreboard.
    pub fn snapshot(&self) -> Option<crate::Snapshot> {
        self.scoreboard.get().map(Scoreboard::snapshot)
    }
}

impl Master {
    /// A builder with default settings.
    pub fn builder() -> MasterBuilder {
        MasterBuilder::default()
    }

    /// Its configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A handle that reads the same snapshot as every output, from this process.
    pub fn status_reader(&self) -> StatusReader {
        StatusReader {
            scoreboard: self.scoreboard.clone(),
        }
    }

    /// A receiver of the master's [`Phase`].
    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Runs the cluster until it is stopped by a signal. Spawns from the calling task: run it
    /// on a thread that lives as long as the master (see `spawn`).
    ///
    /// # Errors
    /// [`Error::AlreadyRunning`], runtime directory and scoreboard errors at start,
    /// [`Error::StartFailed`] when the first generation does not become ready.
    pub async fn run(self) -> Result<()> {
        let signals = UnixSignals::install().map_err(|source| Error::Io {
            context: "install signal handlers".into(),
            source,
        })?;
        self.run_with_signals(signals).await
    }

    /// [`Master::run`] with another source of signal events (tests).
    ///
    /// # Errors
    /// As [`Master::run`].
    pub async fn run_with_signals<S: SignalSource>(self, mut signals: S) -> Result<()> {
        let cfg = &self.config;
        let token = cfg
            .status_token_file
            .as_deref()
            .map(token::read_token)
            .transpose()?;
        let dir = cfg.runtime_dir.clone().unwrap_or_else(default_runtime_dir);
        let dir = Arc::new(RuntimeDir::open(&dir)?);
        let credentials = resolve_credentials(cfg)?;
        if credentials.is_some() {
            // Unprivileged workers must reach their program copy: traverse, not list.
            dir.set_mode(0o711).map_err(|source| Error::Io {
                context: format!("chmod 0711 {}", dir.path().display()),
                source,
            })?;
        }
        let received = match handover::new::inherited() {
            None => None,
            Some(Err(e)) => {
                return Err(Error::Io {
                    context: format!("the upgrade descriptor ({})", handover::ENV_UPGRADE_FD),
                    source: e,
                })
            }
            Some(Ok(fd)) => Some(handover::new::receive(fd).await.map_err(|(_, why)| {
                Error::StartFailed(format!("the upgrade handover failed: {why}"))
            })?),
        };
        let socket_path = cfg
            .control_socket
            .clone()
            .unwrap_or_else(|| crate::control::socket_path(dir.path(), &cfg.name));
        let started = match received {
            None => start::fresh(cfg, &dir, &socket_path)?,
            Some(r) => start::takeover(cfg, &dir, &socket_path, r).await?,
        };
        let start::Started {
            lock,
            sb,
            control,
            status,
            takeover,
        } = started;
        for spec in &self.metrics {
            sb.register(spec)?;
        }
        let _ = self.scoreboard.set(sb.clone());
        let (commands_tx, mut commands) = mpsc::unbounded_channel();
        let http_control =
            token.map(|t| crate::exporter::actions::HttpControl::new(t, commands_tx.clone()));
        if let Some(l) = &status {
            let local = l
                .local_addr()
                .map_or_else(|_| "?".to_string(), |a| a.to_string());
            tracing::info!("status server on http://{local}/ (/metrics, /server-status)");
        }
        let mut fronts = fronts::Fronts::new(
            control,
            commands_tx,
            status.map(|listener| fronts::StatusFront {
                listener,
                control: http_control,
                hosts: cfg.status_hosts.clone(),
            }),
            crate::exporter::otlp::OtlpConfig::from_config(cfg),
            sb.clone(),
        );
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let sampler = listen_queue::Sampler::start(sb.clone());
        let _history = history::HistorySampler::start(sb.clone());
        let mut shell = Shell::new(
            cfg,
            dir,
            sb.clone(),
            events_tx,
            self.phase.clone(),
            self.hooks.clone(),
            credentials,
        );
        shell.lock = Some(lock);
        match sampler {
            Ok(s) => shell.listeners.sample_queues(s),
            Err(e) => tracing::warn!(
                "listen-queue metrics are off: the kernel refused a sock_diag socket ({e})"
            ),
        }
        crate::config::warn_if_capped(cfg.listen_backlog());
        shell
            .listeners
            .set_unix_options(crate::unix_socket::UnixOptions::from_config(cfg)?);
        let takeover = match takeover {
            None => {
                for (fd, name) in systemd::listen_fds() {
                    let addr = shell.listeners.adopt(fd).map_err(|source| Error::Io {
                        context: format!(
                            "socket-activated descriptor {name:?} is not a TCP or unix listener"
                        ),
                        source,
                    })?;
                    tracing::debug!("inherited {addr} from systemd ({name:?})");
                }
                None
            }
            Some(t) => {
                for (role, fd) in t.listeners {
                    if let Err(e) = shell.listeners.adopt_described(&role, fd) {
                        let reason = format!("cannot adopt {role:?}: {e}");
                        let refused = handover::wire::FromNew::Refused {
                            reason: reason.clone(),
                        };
                        let _ = t.channel.send(&refused, None).await;
                        return Err(Error::StartFailed(format!("upgrade refused: {reason}")));
                    }
                }
                Some((t.channel, t.state))
            }
        };
        for addr in &cfg.listen {
            shell
                .listeners
                .get_or_bind(addr)
                .map_err(|source| Error::Io {
                    context: format!("listen on {addr}"),
                    source,
                })?;
        }
        match takeover {
            None => {
                fronts.start().map_err(|source| Error::Io {
                    context: "serve the control socket and the status server".into(),
                    source,
                })?;
                shell.fronts = Some(fronts);
                shell.publish_segment();
            }
            Some((channel, state)) => {
                shell.fronts = Some(fronts);
                // Every slot not lent stays the old master's until the commit says which of
                // them still have a worker (one may be waiting for a respawn right now).
                let foreign: Vec<usize> = (0..state.slots)
                    .filter(|s| !state.lent.contains(s))
                    .collect();
                for slot in &foreign {
                    let _ = sb.set_slot_foreign(*slot, true);
                }
                sb.set_header_frozen(true);
                shell
                    .core_mut()
                    .resume(state.generation, state.target, &foreign);
                shell.foreign = foreign
                    .iter()
                    .map(|s| {
                        let pid = state.workers.iter().find(|(w, _)| w == s);
                        (*s, pid.map_or(0, |(_, p)| *p))
                    })
                    .collect();
                let accepted = handover::wire::FromNew::Accepted;
                if let Err(e) = channel.send(&accepted, None).await {
                    return Err(Error::StartFailed(format!(
                        "the old master went away during the handover: {e}"
                    )));
                }
                tracing::info!(
                    "taking over from master {} ({}): generation {} serves in {} slots",
                    state.from_pid,
                    state.from_version,
                    state.generation,
                    foreign.len()
                );
                shell.begin_takeover(channel);
            }
        }
        tracing::info!(
            "master {} of instance {:?} starting {} workers of {:?}; control socket {}",
            std::process::id(),
            cfg.name,
            shell.target(),
            cfg.program,
            socket_path.display()
        );
        shell.run(&mut signals, &mut events, &mut commands).await;
        if !shell.retired() {
            systemd::notify("STOPPING=1\nSTATUS=stopped");
        }
        shell.remove_program_copies();
        self.phase.send_replace(Phase::Stopped);
        let (failure, retired) = (shell.failure(), shell.retired());
        if let Some(reason) = &failure {
            // A new master that failed before it took over tells its predecessor why.
            shell.give_up(reason).await;
        }
        drop(shell);
        match failure {
            Some(reason) => Err(Error::StartFailed(reason)),
            None if retired => {
                tracing::info!("handed over to the new master; this master exits");
                Ok(())
            }
            None => {
                tracing::info!("all workers stopped; master exiting");
                Ok(())
            }
        }
    }
}

/// The sealed segment published for readers in other processes (CLI `status`, tools) as
/// `NAME.scoreboard` in the runtime dir: a symlink to `/proc/<master pid>/fd/<n>` that replaces
/// whatever a dead master left there; removed again on drop (only if it is still ours).
struct PublishedSegment {
    dir: Arc<RuntimeDir>,
    name: String,
    target: PathBuf,
}

impl PublishedSegment {
    fn publish(dir: Arc<RuntimeDir>, instance: &str, sb: &Scoreboard) -> Result<Self> {
        use std::os::fd::AsRawFd;
        let name = format!("{instance}.scoreboard");
        let target = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            sb.fd().as_raw_fd()
        ));
        dir.replace_symlink(&name, &target)
            .map_err(|source| Error::Io {
                context: format!(
                    "publish the scoreboard as {}",
                    dir.path().join(&name).display()
                ),
                source,
            })?;
        Ok(Self { dir, name, target })
    }
}

impl Drop for PublishedSegment {
    fn drop(&mut self) {
        let _ = self.dir.remove_symlink(&self.name, &self.target);
    }
}

/// The uid and gid the workers run as, from `--user`/`--group` (only root may switch).
fn resolve_credentials(cfg: &Config) -> Result<Option<(u32, u32)>> {
    use nix::unistd::{Group, User};
    let invalid = |key: &'static str, reason: String| {
        Error::Config(crate::config::ConfigError::Invalid {
            key,
            line: None,
            reason,
        })
    };
    let Some(name) = &cfg.user else {
        return match &cfg.group {
            Some(_) => Err(invalid("group", "--group needs --user".into())),
            None => Ok(None),
        };
    };
    if !nix::unistd::geteuid().is_root() {
        return Err(invalid(
            "user",
            format!("switching workers to {name:?} needs a master running as root"),
        ));
    }
    let user = User::from_name(name)
        .ok()
        .flatten()
        .ok_or_else(|| invalid("user", format!("no such user {name:?}")))?;
    let gid = match &cfg.group {
        Some(g) => {
            Group::from_name(g)
                .ok()
                .flatten()
                .ok_or_else(|| invalid("group", format!("no such group {g:?}")))?
                .gid
        }
        None => user.gid,
    };
    Ok(Some((user.uid.as_raw(), gid.as_raw())))
}
