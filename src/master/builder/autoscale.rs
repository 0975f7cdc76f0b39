//! Autoscaling on [`MasterBuilder`]: the bounds and the idle time before a scale-down.
//! Off by default; [`MasterBuilder::build`] checks them.

use std::time::Duration;

use super::MasterBuilder;

impl MasterBuilder {
    /// Autoscales between `min` and `max` workers: the master adds a worker when the
    /// requests in flight stay at or over three quarters per ready worker for a second, and
    /// removes one after the cluster was idle for [`MasterBuilder::scale_down_after`] (see
    /// the README's "Autoscaling"). [`MasterBuilder::workers`] is then the start count (default
    /// `min`) and must lie within the bounds; the default slots are `2 × max + 2`. A manual
    /// `scale N` must stay within the bounds too. `1 ≤ min ≤ max`. Defaults to off.
    ///
    /// ```
    /// let master = flora_cluster::Master::builder()
    ///     .program(["./app"])
    ///     .autoscale(2, 8)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(master.config().autoscale_bounds(), Some((2, 8)));
    /// assert_eq!(master.config().worker_count(), 2);
    /// assert_eq!(master.config().slot_count(), 18);
    /// let upside_down = flora_cluster::Master::builder().program(["./app"]).autoscale(5, 2).build();
    /// assert!(upside_down.unwrap_err().to_string().contains("workers_min"));
    /// let outside = flora_cluster::Master::builder()
    ///     .program(["./app"])
    ///     .autoscale(2, 4)
    ///     .workers(6)
    ///     .build();
    /// assert!(outside.unwrap_err().to_string().contains("2..=4"));
    /// ```
    pub fn autoscale(mut self, min: usize, max: usize) -> Self {
        self.config.workers_min = Some(min);
        self.config.workers_max = Some(max);
        self
    }

    /// How long the cluster must stay idle (its busiest moment in that time well below the
    /// scale-up threshold with one worker fewer) before the autoscaler removes a worker.
    /// Needs [`MasterBuilder::autoscale`]. Defaults to 30 s.
    ///
    /// ```
    /// use std::time::Duration;
    /// let master = flora_cluster::Master::builder()
    ///     .program(["./app"])
    ///     .autoscale(1, 4)
    ///     .scale_down_after(Duration::from_secs(10))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(master.config().scale_down_after(), Duration::from_secs(10));
    /// let zero = flora_cluster::Master::builder()
    ///     .program(["./app"])
    ///     .autoscale(1, 4)
    ///     .scale_down_after(Duration::ZERO)
    ///     .build();
    /// assert!(zero.unwrap_err().to_string().contains("scale_down_after"));
    /// ```
    pub fn scale_down_after(mut self, t: Duration) -> Self {
        self.config.scale_down_after = Some(t.as_secs_f64());
        self
    }
}
