//! Canary reloads on [`MasterBuilder`]: the default limits of canary requests.

use super::MasterBuilder;
use crate::canary::CanaryLimits;

impl MasterBuilder {
    /// The limits a canary reload is judged against when its request leaves them out
    /// (the `[canary]` table of a configuration file). Defaults to
    /// [`CanaryLimits::default`]: 5xx ratio over the old generation's + 0.01, p99 over the old
    /// one's × 1.5, at least 20 requests in each generation. [`MasterBuilder::build`] checks
    /// them. A canary reload itself is asked for on the control socket
    /// ([`crate::control::Request::Canary`]) or with `flora-cluster reload --canary K
    /// --canary-secs S`.
    ///
    /// ```
    /// use flora_cluster::canary::CanaryLimits;
    /// use flora_cluster::control::{self, Request};
    /// let strict = CanaryLimits { max_error_ratio: 0.0, max_p99_ratio: 1.2, min_requests: 100 };
    /// let master = flora_cluster::Master::builder()
    ///     .program(["./app"])
    ///     .canary_limits(strict)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(master.config().canary, strict);
    /// // Later, from any process: 1 canary worker for 60 s, judged against `strict`.
    /// let ask = Request::canary(1, 60.0);
    /// # let _ = (ask, control::socket_path);
    /// let nan = CanaryLimits { max_p99_ratio: f64::NAN, ..CanaryLimits::default() };
    /// let bad = flora_cluster::Master::builder().program(["./app"]).canary_limits(nan).build();
    /// assert!(bad.unwrap_err().to_string().contains("p99 ratio NaN"));
    /// ```
    pub fn canary_limits(mut self, limits: CanaryLimits) -> Self {
        self.config.canary = limits;
        self
    }
}
