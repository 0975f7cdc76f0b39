//! [`MasterBuilder`]: a [`Master`] from its settings, hooks and metrics.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{boxed_hook, Hooks, Master, Phase};
use crate::config::Config;
use crate::error::Result;
use crate::scoreboard::MetricSpec;

mod autoscale;
mod canary;
mod guards;

/// Builder of a [`Master`]; every setting defaults as in [`Config`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct MasterBuilder {
    config: Config,
    hooks: Hooks,
    metrics: Vec<MetricSpec>,
}

impl MasterBuilder {
    /// Starts from a whole [`Config`].
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Instance name. Defaults to `flora`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Worker count. Defaults to the number of CPUs.
    pub fn workers(mut self, n: usize) -> Self {
        self.config.workers = Some(n);
        self
    }

    /// The worker program and its arguments.
    pub fn program<I, S>(mut self, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.program = argv.into_iter().map(Into::into).collect();
        self
    }

    /// How long a new worker may take to become ready. Defaults to 30 s.
    pub fn ready_timeout(mut self, t: Duration) -> Self {
        self.config.ready_timeout = t.as_secs_f64();
        self
    }

    /// How long a worker may drain before it is killed. Defaults to 30 s.
    pub fn shutdown_timeout(mut self, t: Duration) -> Self {
        self.config.shutdown_timeout = t.as_secs_f64();
        self
    }

    /// Rolling reloads: the new generation starts `k` workers at a time in spare slots;
    /// when a batch is ready, `k` old workers drain, then the next batch starts. A failure
    /// in any batch rolls back: the new workers stop and the old generation respawns to full
    /// strength. At most workers + `k` processes live during a reload (all at once needs
    /// twice the workers). `k` is 1 to the maximum worker count and needs workers + `k`
    /// slots. Defaults to none (the whole generation at once).
    ///
    /// ```
    /// let master = flora_cluster::Master::builder()
    ///     .program(["./app"])
    ///     .workers(4)
    ///     .reload_batch(1)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(master.config().reload_batch, Some(1));
    /// let too_tight = flora_cluster::Master::builder()
    ///     .program(["./app"])
    ///     .workers(4)
    ///     .slots(5)
    ///     .reload_batch(2)
    ///     .build();
    /// assert!(too_tight.unwrap_err().to_string().contains("--slots 6"));
    /// let zero = flora_cluster::Master::builder().program(["./app"]).reload_batch(0).build();
    /// assert!(zero.unwrap_err().to_string().contains("reload_batch"));
    /// ```
    pub fn reload_batch(mut self, k: usize) -> Self {
        self.config.reload_batch = Some(k);
        self
    }

    /// The accept-queue limit of the listeners the master binds (TCP and `unix:`), 1 to
    /// 65535; the kernel caps it at `net.core.somaxconn` (the master warns when it will).
    /// Defaults to 1024. The queue, its limit and the drops are in `flora_listen_queue_*`.
    ///
    /// ```
    /// let master = flora_cluster::Master::builder()
    ///     .program(["./app"])
    ///     .listen("127.0.0.1:8080")
    ///     .backlog(4096)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(master.config().backlog, Some(4096));
    /// let zero = flora_cluster::Master::builder().program(["./app"]).backlog(0).build();
    /// assert!(zero.unwrap_err().to_string().contains("backlog"));
    /// ```
    pub fn backlog(mut self, n: u32) -> Self {
        self.config.backlog = Some(n);
        self
    }

    /// Directory of the scoreboard and lock. Defaults to [`super::default_runtime_dir`].
    pub fn runtime_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.runtime_dir = Some(dir.into());
        self
    }

    /// Binds `addr` before the workers start.
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.config.listen.push(addr.into());
        self
    }

    /// Control socket path. Defaults to `<runtime dir>/<name>.sock`.
    pub fn control_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.control_socket = Some(path.into());
        self
    }

    /// Runs `hook(new_generation)` before each reload spawns anything; an `Err` (or a panic,
    /// or taking longer than the ready timeout) cancels that reload with outcome `rollback`
    /// and the reason. The cluster keeps serving.
    pub fn before_reload<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.hooks.before_reload = Some(boxed_hook(hook));
        self
    }

    /// Runs `hook(0)` when a stop is requested, before the workers drain; an `Err` is logged
    /// and the stop goes on (bounded by the shutdown timeout).
    pub fn before_shutdown<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.hooks.before_shutdown = Some(boxed_hook(hook));
        self
    }

    /// Registers a custom metric series before any worker starts, so it is exported (at 0,
    /// or without a value for gauges) from the first scrape on. Workers registering the same
    /// name, labels and shape get this series.
    pub fn metric(mut self, spec: MetricSpec) -> Self {
        self.metrics.push(spec);
        self
    }

    /// Validates and builds.
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming the invalid setting.
    pub fn build(self) -> Result<Master> {
        self.config.validate()?;
        for spec in &self.metrics {
            spec.validate()?;
        }
        let (phase, _) = watch::channel(Phase::Starting);
        Ok(Master {
            config: self.config,
            hooks: self.hooks,
            metrics: self.metrics,
            phase,
            scoreboard: Arc::new(std::sync::OnceLock::new()),
        })
    }
}
