//! The rolling reload's setting (`reload_batch`) and the canary's default limits: their
//! checks.

use super::{Config, ConfigError, MAX_WORKERS};

impl Config {
    /// `reload_batch`: 1 to [`MAX_WORKERS`], and room for the batch beside the workers.
    pub(super) fn check_reload_batch(&self) -> Result<(), ConfigError> {
        let Some(k) = self.reload_batch else {
            return Ok(());
        };
        let invalid = |key, reason| {
            Err(ConfigError::Invalid {
                key,
                line: None,
                reason,
            })
        };
        if !(1..=MAX_WORKERS).contains(&k) {
            return invalid("reload_batch", format!("{k}: must be 1..={MAX_WORKERS}"));
        }
        let workers = self.peak_workers();
        let need = workers + k.min(workers);
        if self.slot_count() < need {
            return invalid(
                "slots",
                format!(
                    "{}: a rolling reload of {workers} workers, {k} at a time, needs {need} \
                     slots; use --slots {need} or more (the default is 2 × workers + 2)",
                    self.slot_count()
                ),
            );
        }
        Ok(())
    }
}

impl Config {
    /// `[canary]`: ratios in range (see [`crate::canary::CanaryLimits::validate`]).
    pub(super) fn check_canary(&self) -> Result<(), ConfigError> {
        self.canary
            .validate()
            .map_err(|reason| ConfigError::Invalid {
                key: "canary",
                line: None,
                reason,
            })
    }
}
