//! The worker guards on [`MasterBuilder`]: request deadlines, the heartbeat kill and the
//! graceful recycles. All off by default; [`MasterBuilder::build`] checks them.

use std::time::Duration;

use super::MasterBuilder;

impl MasterBuilder {
    /// Answers a request that has no response head after `t` with 503 (an empty body and
    /// `Connection: close` on HTTP/1) and drops its handler. A response body that already
    /// started is not cut. Defaults to none.
    ///
    /// ```
    /// use std::time::Duration;
    /// let master = flora_cluster::Master::builder()
    ///     .program(["./app"])
    ///     .request_timeout(Duration::from_millis(2500))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(master.config().request_timeout(), Some(Duration::from_millis(2500)));
    /// ```
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.config.request_timeout = Some(t.as_secs_f64());
        self
    }

    /// Kills a ready worker that sent no heartbeat for `t` (its event loop is blocked), after
    /// saving what it was doing (the kill record); the slot is respawned. At least 1 s;
    /// workers send a heartbeat every quarter of it (at most every second). Defaults to none.
    ///
    /// ```
    /// use std::time::Duration;
    /// let master = flora_cluster::Master::builder()
    ///     .program(["./app"])
    ///     .heartbeat_timeout(Duration::from_secs(10))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(master.config().heartbeat_interval(), Duration::from_secs(1));
    /// let too_short = flora_cluster::Master::builder()
    ///     .program(["./app"])
    ///     .heartbeat_timeout(Duration::from_millis(500))
    ///     .build();
    /// assert!(too_short.unwrap_err().to_string().contains("heartbeat_timeout"));
    /// ```
    pub fn heartbeat_timeout(mut self, t: Duration) -> Self {
        self.config.heartbeat_timeout = Some(t.as_secs_f64());
        self
    }

    /// Recycles a worker whose resident memory is over `bytes` in three samples in a row (the
    /// master samples each second): a replacement starts in a spare slot, then the old worker
    /// drains. Defaults to none.
    ///
    /// ```
    /// let master = flora_cluster::Master::builder()
    ///     .program(["./app"])
    ///     .max_memory(512 << 20)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(master.config().max_memory, Some(512 << 20));
    /// ```
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.config.max_memory = Some(bytes);
        self
    }

    /// Recycles a worker after it served `n` requests (plus its jitter). Defaults to none.
    ///
    /// ```
    /// let master = flora_cluster::Master::builder()
    ///     .program(["./app"])
    ///     .max_requests(10_000)
    ///     .max_requests_jitter(500)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(master.config().max_requests, Some(10_000));
    /// ```
    pub fn max_requests(mut self, n: u64) -> Self {
        self.config.max_requests = Some(n);
        self
    }

    /// Adds up to `n` requests to [`MasterBuilder::max_requests`], drawn per worker, so the
    /// workers do not all recycle at once. Needs `max_requests`. Defaults to 0.
    ///
    /// ```
    /// let alone = flora_cluster::Master::builder()
    ///     .program(["./app"])
    ///     .max_requests_jitter(500)
    ///     .build();
    /// assert!(alone.unwrap_err().to_string().contains("needs max_requests"));
    /// ```
    pub fn max_requests_jitter(mut self, n: u64) -> Self {
        self.config.max_requests_jitter = Some(n);
        self
    }

    /// Recycles a worker after it lived `t` (plus its jitter). Defaults to none.
    ///
    /// ```
    /// use std::time::Duration;
    /// let master = flora_cluster::Master::builder()
    ///     .program(["./app"])
    ///     .max_worker_age(Duration::from_secs(3600))
    ///     .max_worker_age_jitter(Duration::from_secs(300))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(master.config().max_worker_age(), Some(Duration::from_secs(3600)));
    /// ```
    pub fn max_worker_age(mut self, t: Duration) -> Self {
        self.config.max_worker_age = Some(t.as_secs_f64());
        self
    }

    /// Adds up to `t` to [`MasterBuilder::max_worker_age`], drawn per worker. Needs
    /// `max_worker_age`. Defaults to 0.
    ///
    /// ```
    /// use std::time::Duration;
    /// let master = flora_cluster::Master::builder()
    ///     .program(["./app"])
    ///     .max_worker_age(Duration::from_secs(600))
    ///     .max_worker_age_jitter(Duration::from_secs(60))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(master.config().max_worker_age_jitter(), Duration::from_secs(60));
    /// ```
    pub fn max_worker_age_jitter(mut self, t: Duration) -> Self {
        self.config.max_worker_age_jitter = Some(t.as_secs_f64());
        self
    }

    /// Recycles running at once; each needs a spare slot. Defaults to 1.
    ///
    /// ```
    /// let master = flora_cluster::Master::builder()
    ///     .program(["./app"])
    ///     .workers(4)
    ///     .max_requests(1000)
    ///     .max_recycling(2)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(master.config().max_recycling, 2);
    /// ```
    pub fn max_recycling(mut self, n: usize) -> Self {
        self.config.max_recycling = n;
        self
    }

    /// Scoreboard slots: the workers plus room for replacements during reloads and recycles.
    /// Defaults to twice the workers plus two.
    ///
    /// ```
    /// let no_spare = flora_cluster::Master::builder()
    ///     .program(["./app"])
    ///     .workers(2)
    ///     .slots(2)
    ///     .max_requests(1000)
    ///     .build();
    /// assert!(no_spare.unwrap_err().to_string().contains("--slots 3"));
    /// ```
    pub fn slots(mut self, n: usize) -> Self {
        self.config.slots = Some(n);
        self
    }
}
