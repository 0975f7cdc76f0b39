//! [`Listener::with_tls`]: the seam between a listener and its TLS configuration.

use super::TlsConfig;
use crate::worker::Listener;

impl Listener {
    /// Serves HTTPS on this listener with `tls` (see [`TlsConfig`]): every accepted connection does a TLS handshake first, in its own task.
    ///
    /// ```no_run
    /// use flora_cluster::worker::{TlsConfig, Worker};
    /// # async fn app(worker: Worker) -> Result<(), flora_cluster::Error> {
    /// let tls = TlsConfig::from_pem_files("cert.pem", "key.pem")?;
    /// let listener = worker.listen("127.0.0.1:8443").await?.with_tls(tls);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Whether this listener serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}
