//! Loading errors and real handshakes (a rustls client over an in-memory duplex pipe).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::handshake::Protocol;
use super::*;

/// A self-signed certificate for `localhost` and its key, as PEM.
fn self_signed() -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

struct Files {
    dir: tempfile::TempDir,
    cert_pem: String,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        Self {
            dir,
            cert_pem: cert,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn config(&self) -> TlsConfig {
        TlsConfig::from_pem_files(self.path("cert.pem"), self.path("key.pem")).unwrap()
    }
}

fn load_err(cert: &Path, key: &Path) -> TlsError {
    TlsConfig::from_pem_files(cert, key).unwrap_err()
}

#[test]
fn loads_a_certificate_and_offers_h2_and_http1() {
    let f = Files::new();
    let tls = f.config();
    let alpn = &tls.rustls_config().alpn_protocols;
    assert_eq!(alpn, &vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    assert_eq!(tls.handshake_timeout(), DEFAULT_HANDSHAKE_TIMEOUT);
}

#[test]
fn loading_errors_say_what_is_wrong_with_which_file() {
    let f = Files::new();
    let (cert, key) = (f.path("cert.pem"), f.path("key.pem"));
    let (other_cert, other_key) = self_signed();
    let other_key = f.write("other-key.pem", &other_key);
    let cert_only = f.write("other-cert.pem", &other_cert);
    let encrypted = f.write(
        "enc.pem",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let unterminated = f.write("broken.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
    let not_a_key = f.write(
        "junk-key.pem",
        "-----BEGIN PRIVATE KEY-----\nAAECAwQFBgcICQ==\n-----END PRIVATE KEY-----\n",
    );
    let missing = f.path("nope.pem");

    let e = load_err(&missing, &key);
    assert!(
        matches!(&e, TlsError::Read { path, .. } if path == &missing),
        "{e}"
    );
    assert!(e.to_string().contains("nope.pem"), "{e}");
    let e = load_err(&cert, &missing);
    assert!(
        matches!(&e, TlsError::Read { path, .. } if path == &missing),
        "{e}"
    );

    let e = load_err(&key, &key);
    assert!(
        matches!(&e, TlsError::NoCertificate { path } if path == &key),
        "{e}"
    );
    assert!(e.to_string().contains("no certificate"), "{e}");

    let e = load_err(&cert, &cert_only);
    assert!(
        matches!(&e, TlsError::NoKey { path } if path == &cert_only),
        "{e}"
    );
    let e = load_err(&cert, &encrypted);
    assert!(matches!(e, TlsError::NoKey { .. }), "{e}");
    assert!(e.to_string().contains("unencrypted"), "{e}");

    let e = load_err(&unterminated, &key);
    assert!(matches!(e, TlsError::Pem { .. }), "{e}");

    let e = load_err(&cert, &not_a_key);
    assert!(matches!(e, TlsError::UnsupportedKey { .. }), "{e}");

    let e = load_err(&cert, &other_key);
    assert!(
        matches!(&e, TlsError::KeyMismatch { cert: c, key: k } if c == &cert && k == &other_key),
        "{e}"
    );
    assert!(e.to_string().contains("does not match"), "{e}");
}

#[test]
fn an_apps_own_alpn_list_is_kept() {
    let f = Files::new();
    let mut config = (*f.config().rustls_config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = TlsConfig::from_rustls(Arc::new(config));
    assert_eq!(
        tls.rustls_config().alpn_protocols,
        vec![b"http/1.1".to_vec()]
    );
}

fn client(cert_pem: &str, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A handshake between `tls` and a client offering `alpn`; the server's view, and the bytes
/// the client read after sending `ping`.
async fn handshake_with(f: &Files, alpn: &[&[u8]]) -> Protocol {
    let tls = f.config();
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let connector = client(&f.cert_pem, alpn);
    let client = tokio::spawn(async move {
        let name = ServerName::try_from("localhost").unwrap();
        let mut s = connector.connect(name, client_io).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        s.flush().await.unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back).await.unwrap();
        back
    });
    let (mut stream, protocol) = tls.handshake(server_io).await.unwrap();
    let mut got = [0u8; 4];
    stream.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
    stream.write_all(b"pong").await.unwrap();
    stream.flush().await.unwrap();
    assert_eq!(&client.await.unwrap(), b"pong");
    protocol
}

#[tokio::test]
async fn alpn_picks_the_http_version() {
    let f = Files::new();
    assert_eq!(
        handshake_with(&f, &[b"h2", b"http/1.1"]).await,
        Protocol::Http2
    );
    assert_eq!(handshake_with(&f, &[b"http/1.1"]).await, Protocol::Http1);
    assert_eq!(handshake_with(&f, &[]).await, Protocol::Detect);
}

#[tokio::test]
async fn plain_http_and_garbage_fail_the_handshake() {
    let f = Files::new();
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff][..],
    ] {
        let (server_io, mut client_io) = tokio::io::duplex(4096);
        client_io.write_all(junk).await.unwrap();
        let e = f.config().handshake(server_io).await.unwrap_err();
        assert!(matches!(e, TlsError::Handshake(_)), "{e}");
    }
}

#[tokio::test]
async fn a_silent_client_times_out() {
    let f = Files::new();
    let tls = f.config().with_handshake_timeout(Duration::from_millis(50));
    let (server_io, _client_io) = tokio::io::duplex(4096);
    let e = tls.handshake(server_io).await.unwrap_err();
    assert!(
        matches!(e, TlsError::HandshakeTimeout(d) if d == Duration::from_millis(50)),
        "{e}"
    );
}
