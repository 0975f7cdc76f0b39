//! The TLS certificate files the master hands to its workers (`tls_cert`, `tls_key`):
//! both or neither, loaded once before the start so a typo fails fast.

use std::path::PathBuf;

use super::{Config, ConfigError};

impl Config {
    /// The certificate and key files as absolute paths (symbolic links are kept, so a renewed
    /// link target is read by the next generation), or `None` when TLS is off.
    pub fn tls_files(&self) -> Option<(PathBuf, PathBuf)> {
        let abs = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
        Some((abs(self.tls_cert.as_ref()?), abs(self.tls_key.as_ref()?)))
    }

    /// Both or neither of `tls_cert` and `tls_key`.
    pub(super) fn check_tls_pair(&self) -> Result<(), ConfigError> {
        let missing = match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => ("tls_cert", "tls_key"),
            (None, Some(_)) => ("tls_key", "tls_cert"),
            _ => return Ok(()),
        };
        Err(ConfigError::Invalid {
            key: missing.0,
            line: None,
            reason: format!(
                "needs {} too (--tls-cert and --tls-key go together)",
                missing.1
            ),
        })
    }

    /// The files load (a typo fails the start, not every worker), with the same code the
    /// workers use.
    #[cfg(feature = "tls")]
    pub(super) fn check_tls_files(&self) -> Result<(), ConfigError> {
        let Some((cert, key)) = self.tls_files() else {
            return Ok(());
        };
        crate::worker::TlsConfig::from_pem_files(&cert, &key)
            .map(drop)
            .map_err(|e| ConfigError::Invalid {
                key: "tls_cert",
                line: None,
                reason: e.to_string(),
            })
    }

    /// Without the `tls` feature, certificate files are refused rather than ignored.
    #[cfg(not(feature = "tls"))]
    pub(super) fn check_tls_files(&self) -> Result<(), ConfigError> {
        if self.tls_cert.is_none() && self.tls_key.is_none() {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            key: "tls_cert",
            line: None,
            reason: "this flora-cluster was built without the `tls` feature (cargo install flora-cluster --features tls)".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_files_go_together_and_become_absolute() {
        let c = Config::from_toml_str("tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n").unwrap();
        let (cert, key) = c.tls_files().unwrap();
        assert!(cert.is_absolute() && cert.ends_with("c.pem"), "{cert:?}");
        assert!(key.is_absolute() && key.ends_with("k.pem"), "{key:?}");
        assert_eq!(Config::default().tls_files(), None);
        for (text, set, missing) in [
            ("workers = 1\ntls_key = \"k.pem\"\n", "tls_key", "tls_cert"),
            ("workers = 1\ntls_cert = \"c.pem\"\n", "tls_cert", "tls_key"),
        ] {
            let msg = Config::from_toml_str(text).unwrap_err().to_string();
            assert!(
                msg.contains(set) && msg.contains("line 2") && msg.contains(missing),
                "{msg}"
            );
        }
    }

    #[test]
    fn tls_files_are_loaded_before_start() {
        let c = Config {
            program: vec!["./w".into()],
            tls_cert: Some("/nonexistent/flora-cert.pem".into()),
            tls_key: Some("/nonexistent/flora-key.pem".into()),
            ..Config::default()
        };
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("tls_cert"), "{msg}");
        // With the feature, the loader names the file; without it, the missing feature.
        let expected = if cfg!(feature = "tls") {
            "flora-cert.pem"
        } else {
            "without the `tls` feature"
        };
        assert!(msg.contains(expected), "{msg}");
    }
}
