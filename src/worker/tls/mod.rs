//! HTTPS in the worker (cargo feature `tls`): rustls with the `ring` provider.
//!
//! A [`TlsConfig`] comes from PEM files ([`TlsConfig::from_pem_files`], or the files the master
//! was given: [`Worker::tls_from_config`]) or from an app's own rustls config
//! ([`TlsConfig::from_rustls`]); [`Listener::with_tls`](crate::worker::Listener::with_tls) makes a listener serve HTTPS with it.
//!
//! Each connection's handshake runs in that connection's task, never in the accept loop, and
//! is bounded by a timeout ([`DEFAULT_HANDSHAKE_TIMEOUT`]): a client that sends nothing or
//! garbage costs one task until then and never delays another connection. The ALPN protocol
//! the client picked (`h2` or `http/1.1`) decides how the connection is served; without ALPN
//! the HTTP version is detected from the first bytes. Bytes are counted on the wire, under
//! TLS.
//!
//! Each worker loads the files when it starts, so a reload (a new generation) serves renewed
//! certificates with no restart of the master.

mod handshake;
pub(crate) use handshake::Protocol;
mod listener;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::Worker;
use crate::ipc;

/// How long a client may take to finish the TLS handshake before its connection is closed.
/// Long enough for a slow mobile link, short enough that idle sockets do not pile up.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The ALPN protocols offered when the app's config names none, in order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Errors of TLS set-up and handshakes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file cannot be read.
    #[error("read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid PEM.
    #[error("{path}: bad PEM: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// The certificate file holds no certificate.
    #[error("{path}: no certificate in the file (expected a PEM `BEGIN CERTIFICATE` block)")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The first certificate of the file cannot be parsed.
    #[error("{path}: unusable certificate: {source}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
    /// The key file holds no private key rustls can use.
    #[error(
        "{path}: no private key in the file (expected an unencrypted PKCS#8, PKCS#1 or SEC1 PEM block)"
    )]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is of a type the `ring` provider does not support.
    #[error("{path}: unsupported private key (use RSA, ECDSA P-256/P-384 or Ed25519): {source}")]
    UnsupportedKey {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
    /// The key does not belong to the certificate.
    #[error("the private key in {key} does not match the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Config(#[source] rustls::Error),
    /// Only one of the certificate and key variables is set.
    #[error("{set} is set but {missing} is not: give both a certificate and a key, or neither")]
    Incomplete {
        /// The variable that is set.
        set: &'static str,
        /// The one that is missing.
        missing: &'static str,
    },
    /// A handshake failed (a plain-HTTP client, garbage, an unsupported client).
    #[error("tls handshake: {0}")]
    Handshake(#[source] std::io::Error),
    /// A client did not finish its handshake in time.
    #[error("tls handshake timed out after {0:?}")]
    HandshakeTimeout(Duration),
}

/// A server TLS configuration for [`Listener::with_tls`](crate::worker::Listener::with_tls). Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Loads a certificate chain (leaf first) and its private key from PEM files, with the
    /// `ring` provider, TLS 1.2 and 1.3, and ALPN `h2` and `http/1.1`.
    ///
    /// ```no_run
    /// use flora_cluster::worker::TlsConfig;
    /// let tls = TlsConfig::from_pem_files("/etc/app/fullchain.pem", "/etc/app/key.pem")?;
    /// # Ok::<(), flora_cluster::worker::TlsError>(())
    /// ```
    ///
    /// # Errors
    /// [`TlsError::Read`] for a missing or unreadable file, [`TlsError::Pem`] for broken PEM,
    /// [`TlsError::NoCertificate`], [`TlsError::NoKey`] (also for encrypted keys),
    /// [`TlsError::UnsupportedKey`], [`TlsError::KeyMismatch`] when the key is not the
    /// certificate's.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let (cert_path, key_path) = (cert_chain.as_ref(), key.as_ref());
        let certs = read_certs(cert_path)?;
        let key = read_key(key_path)?;
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(TlsError::Config)?
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                        cert: cert_path.to_owned(),
                        key: key_path.to_owned(),
                    },
                    bad @ rustls::Error::InvalidCertificate(_) => TlsError::BadCertificate {
                        path: cert_path.to_owned(),
                        source: bad,
                    },
                    other => TlsError::UnsupportedKey {
                        path: key_path.to_owned(),
                        source: other,
                    },
                })?;
        Ok(Self::from_rustls(Arc::new(config)))
    }

    /// Uses an app's own rustls configuration (client certificates, SNI, a custom resolver).
    /// When it names no ALPN protocols, `h2` and `http/1.1` are offered; a list it sets is
    /// kept as it is.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use flora_cluster::worker::TlsConfig;
    /// # fn app(certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// #        key: rustls::pki_types::PrivateKeyDer<'static>) -> Result<(), rustls::Error> {
    /// let config = rustls::ServerConfig::builder_with_provider(Arc::new(
    ///     rustls::crypto::ring::default_provider(),
    /// ))
    /// .with_safe_default_protocol_versions()?
    /// .with_no_client_auth()
    /// .with_single_cert(certs, key)?;
    /// let tls = TlsConfig::from_rustls(Arc::new(config));
    /// # Ok(()) }
    /// ```
    pub fn from_rustls(config: Arc<ServerConfig>) -> Self {
        let config = if config.alpn_protocols.is_empty() {
            let mut with_alpn = (*config).clone();
            with_alpn.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
            Arc::new(with_alpn)
        } else {
            config
        };
        Self {
            acceptor: TlsAcceptor::from(config),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Sets how long a client may take to finish its handshake. Defaults to
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`] (10 s).
    #[must_use]
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The rustls configuration in use.
    pub fn rustls_config(&self) -> Arc<ServerConfig> {
        self.acceptor.config().clone()
    }
}

impl Worker {
    /// The TLS configuration from the files the master was given (`--tls-cert PATH --tls-key
    /// PATH`, or `tls_cert`/`tls_key` in its config file), or `None` when it was given none.
    /// Standalone, the same environment variables ([`ipc::ENV_TLS_CERT`],
    /// [`ipc::ENV_TLS_KEY`]) work.
    ///
    /// The files are read now: call it at start-up, and each new generation of a reload
    /// picks up renewed files.
    ///
    /// ```no_run
    /// # async fn app(worker: flora_cluster::Worker) -> Result<(), flora_cluster::Error> {
    /// let mut listener = worker.listen("127.0.0.1:8443").await?;
    /// if let Some(tls) = worker.tls_from_config()? {
    ///     listener = listener.with_tls(tls);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`TlsError::Incomplete`] when only one of the two is set, else as
    /// [`TlsConfig::from_pem_files`].
    pub fn tls_from_config(&self) -> Result<Option<TlsConfig>, crate::Error> {
        let cert = std::env::var_os(ipc::ENV_TLS_CERT).filter(|v| !v.is_empty());
        let key = std::env::var_os(ipc::ENV_TLS_KEY).filter(|v| !v.is_empty());
        match (cert, key) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(incomplete(ipc::ENV_TLS_CERT, ipc::ENV_TLS_KEY)),
            (None, Some(_)) => Err(incomplete(ipc::ENV_TLS_KEY, ipc::ENV_TLS_CERT)),
            (Some(cert), Some(key)) => Ok(Some(TlsConfig::from_pem_files(cert, key)?)),
        }
    }
}

fn incomplete(set: &'static str, missing: &'static str) -> crate::Error {
    TlsError::Incomplete { set, missing }.into()
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn bad_pem(path: &Path, e: &rustls_pki_types::pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// The certificates of a PEM file, in file order (other blocks, e.g. a key, are skipped).
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(path, &e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        other => bad_pem(path, &other),
    })
}
