//! Which metric names the OTLP push uses (`otlp_names`, `--otlp-names`).

use serde::{Deserialize, Serialize};

/// Names of the metrics in the OTLP push.
///
/// ```
/// use flora_cluster::config::OtlpNames;
/// assert_eq!("otel".parse::<OtlpNames>(), Ok(OtlpNames::Otel));
/// assert!("otlp".parse::<OtlpNames>().unwrap_err().contains("prometheus, otel"));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OtlpNames {
    /// The Prometheus names and labels only (`flora_request_duration_seconds`, ...).
    #[default]
    Prometheus,
    /// Also the OpenTelemetry HTTP semantic conventions: `http.server.request.duration`,
    /// `http.server.active_requests`, and the conventional resource attributes.
    Otel,
}

impl std::str::FromStr for OtlpNames {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "prometheus" => Ok(Self::Prometheus),
            "otel" => Ok(Self::Otel),
            _ => Err(format!("{s:?}: use one of prometheus, otel")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OtlpNames;
    use crate::Config;

    #[test]
    fn the_key_takes_the_two_names_only() {
        assert_eq!(Config::default().otlp_names, OtlpNames::Prometheus);
        let cfg = Config::from_toml_str("otlp_names = \"otel\"").expect("otel");
        assert_eq!(cfg.otlp_names, OtlpNames::Otel);
        let err = Config::from_toml_str("otlp_names = \"semconv\"")
            .expect_err("a bad value")
            .to_string();
        assert!(
            err.contains("otlp_names") || err.contains("line 1"),
            "names the key or line: {err}"
        );
        assert!(err.contains("prometheus") && err.contains("otel"), "{err}");
    }
}
