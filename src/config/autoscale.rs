//! Autoscaling's settings (`workers_min`, `workers_max`, `scale_down_after`): their checks.
//! Both bounds or neither; with them, `workers` is the start count (default: `workers_min`)
//! and the slots must hold `workers_max` (the default slots are `2 × workers_max + 2`).

use std::time::Duration;

use super::{check_seconds, duration_of, Config, ConfigError, MAX_WORKERS};

/// Default of `scale_down_after`, seconds.
pub const DEFAULT_SCALE_DOWN_AFTER_SECS: f64 = 30.0;

impl Config {
    /// The autoscaling bounds `(min, max)` when both are set.
    pub fn autoscale_bounds(&self) -> Option<(usize, usize)> {
        self.workers_min.zip(self.workers_max)
    }

    /// How long the cluster must be idle before a worker is removed (`scale_down_after`,
    /// default 30 s).
    pub fn scale_down_after(&self) -> Duration {
        duration_of(
            self.scale_down_after
                .unwrap_or(DEFAULT_SCALE_DOWN_AFTER_SECS),
        )
    }

    /// The most workers the cluster may run: `workers_max` when autoscaling, else the
    /// worker count.
    pub fn peak_workers(&self) -> usize {
        self.autoscale_bounds()
            .map_or_else(|| self.worker_count(), |(_, max)| max)
    }

    /// Checks the autoscaling settings.
    pub(super) fn check_autoscale(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| {
            Err(ConfigError::Invalid {
                key,
                line: None,
                reason,
            })
        };
        if let Some(secs) = self.scale_down_after {
            if let Err(reason) = check_seconds(secs) {
                return invalid("scale_down_after", reason);
            }
        }
        let (min, max) = match (self.workers_min, self.workers_max) {
            (None, None) if self.scale_down_after.is_some() => {
                return invalid(
                    "scale_down_after",
                    "needs workers_min and workers_max (--workers-min, --workers-max)".into(),
                );
            }
            (None, None) => return Ok(()),
            (Some(_), None) => {
                return invalid(
                    "workers_max",
                    "missing: autoscaling needs both workers_min and workers_max \
                     (--workers-min, --workers-max)"
                        .into(),
                );
            }
            (None, Some(_)) => {
                return invalid(
                    "workers_min",
                    "missing: autoscaling needs both workers_min and workers_max \
                     (--workers-min, --workers-max)"
                        .into(),
                );
            }
            (Some(min), Some(max)) => (min, max),
        };
        if !(1..=MAX_WORKERS).contains(&min) {
            return invalid("workers_min", format!("{min}: must be 1..={MAX_WORKERS}"));
        }
        if !(1..=MAX_WORKERS).contains(&max) {
            return invalid("workers_max", format!("{max}: must be 1..={MAX_WORKERS}"));
        }
        if min > max {
            return invalid(
                "workers_min",
                format!("{min}: must be at most workers_max ({max})"),
            );
        }
        if let Some(w) = self.workers {
            if !(min..=max).contains(&w) {
                return invalid(
                    "workers",
                    format!(
                        "{w}: with autoscaling it is the start count and must be within \
                         workers_min..=workers_max ({min}..={max})"
                    ),
                );
            }
        }
        if self.slot_count() < max {
            return invalid(
                "slots",
                format!(
                    "{}: autoscaling up to {max} workers needs {max} slots or more (the \
                     default is 2 × workers_max + 2)",
                    self.slot_count()
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::Config;

    fn err(toml: &str) -> String {
        Config::from_toml_str(toml).unwrap_err().to_string()
    }

    #[test]
    fn the_keys_turn_it_on_with_min_workers_and_room_for_max() {
        let cfg = Config::from_toml_str("workers_min = 2\nworkers_max = 5\nscale_down_after = 3")
            .unwrap();
        assert_eq!(cfg.autoscale_bounds(), Some((2, 5)));
        assert_eq!(cfg.worker_count(), 2);
        assert_eq!(cfg.slot_count(), 12);
        assert_eq!(cfg.peak_workers(), 5);
        assert_eq!(cfg.scale_down_after(), Duration::from_secs(3));
        let plain = Config::from_toml_str("workers = 3").unwrap();
        assert_eq!(plain.autoscale_bounds(), None);
        assert_eq!(plain.scale_down_after(), Duration::from_secs(30));
    }

    #[test]
    fn both_bounds_or_neither() {
        assert!(err("workers_min = 2").contains("invalid workers_max: missing"));
        assert!(err("workers_max = 2").contains("invalid workers_min: missing"));
        assert!(err("scale_down_after = 5").contains("needs workers_min and workers_max"));
    }

    #[test]
    fn bad_bounds_are_refused_with_the_reason() {
        assert!(err("workers_min = 0\nworkers_max = 2").contains("0: must be 1..=1024"));
        assert!(err("workers_min = 1\nworkers_max = 2000").contains("2000: must be 1..=1024"));
        assert!(err("workers_min = 4\nworkers_max = 2").contains("must be at most workers_max (2)"));
        let outside = err("workers = 6\nworkers_min = 2\nworkers_max = 4");
        assert!(outside.contains("invalid workers (line 1): 6"), "{outside}");
        assert!(outside.contains("2..=4"), "{outside}");
        let slots = err("slots = 4\nworkers_min = 2\nworkers_max = 5");
        assert!(slots.contains("needs 5 slots"), "{slots}");
    }

    #[test]
    fn scale_down_after_must_be_positive_seconds() {
        for bad in ["0", "-1", "nan", "inf", "1e12"] {
            let e = err(&format!(
                "workers_min = 1\nworkers_max = 2\nscale_down_after = {bad}"
            ));
            assert!(e.contains("invalid scale_down_after"), "{bad}: {e}");
        }
    }
}
