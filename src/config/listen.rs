//! The listeners' setting (`backlog`): its check, and the limit the kernel will apply.

use super::{Config, ConfigError};

/// The accept-queue limit of the listeners the master binds when `backlog` is not set.
pub const DEFAULT_BACKLOG: u32 = 1024;
/// The highest `backlog` (the kernel keeps it in 16 bits).
pub const MAX_BACKLOG: u32 = 65_535;

impl Config {
    /// The accept-queue limit the master asks for.
    pub fn listen_backlog(&self) -> u32 {
        self.backlog.unwrap_or(DEFAULT_BACKLOG)
    }

    /// `backlog`: 1 to [`MAX_BACKLOG`].
    pub(super) fn check_backlog(&self) -> Result<(), ConfigError> {
        match self.backlog {
            Some(n) if !(1..=MAX_BACKLOG).contains(&n) => Err(ConfigError::Invalid {
                key: "backlog",
                line: None,
                reason: format!("{n}: must be 1..={MAX_BACKLOG}"),
            }),
            _ => Ok(()),
        }
    }
}

/// `listen`'s argument for a limit of `n`: `n` itself up to `SOMAXCONN` (4096), above it -1,
/// which the kernel reads as its own cap (`net.core.somaxconn`).
pub(crate) fn backlog_arg(n: u32) -> nix::sys::socket::Backlog {
    use nix::sys::socket::Backlog;
    i32::try_from(n)
        .ok()
        .and_then(|n| Backlog::new(n).ok())
        .unwrap_or(Backlog::MAXALLOWABLE)
}

/// Warns when the kernel will cut `n` down (once per master start is enough: at bind).
pub(crate) fn warn_if_capped(n: u32) {
    if let Some(cap) = somaxconn().filter(|&cap| n > cap) {
        tracing::warn!(
            "listen backlog {n} is above net.core.somaxconn ({cap}): the kernel caps it at {cap} \
             (raise it with sysctl -w net.core.somaxconn={n})"
        );
    }
}

/// The kernel's cap on every listen backlog (`net.core.somaxconn`), if readable.
pub(crate) fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_defaults_and_bounds() {
        assert_eq!(Config::default().listen_backlog(), DEFAULT_BACKLOG);
        let c = Config::from_toml_str("backlog = 16\n").expect("valid");
        assert_eq!(c.listen_backlog(), 16);
        for bad in ["backlog = 0\n", "backlog = 65536\n"] {
            let e = Config::from_toml_str(bad).unwrap_err().to_string();
            assert!(e.contains("backlog"), "{bad}: {e}");
        }
        assert!(Config::from_toml_str("backlog = -1\n").is_err());
        assert!(Config::from_toml_str("backlog = \"big\"\n").is_err());
    }

    #[test]
    fn the_listen_argument_is_exact_up_to_somaxconn_then_the_kernels_cap() {
        assert_eq!(i32::from(backlog_arg(16)), 16);
        assert_eq!(i32::from(backlog_arg(4096)), 4096);
        assert_eq!(i32::from(backlog_arg(65_535)), -1);
    }
}
