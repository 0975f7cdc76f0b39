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
