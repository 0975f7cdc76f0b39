//! HTTPS in tests: certificates made with `rcgen` (no fixtures on disk), and `curl` as the
//! real client (`--http2`, `--http1.1`, `-v` to see the served certificate).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{kill_and_reap, wait_child, MasterCommand, TestDir};

/// Longest a single curl run may take (its own `--max-time` is shorter).
const CURL_DEADLINE: Duration = Duration::from_secs(20);

/// A certificate for `localhost` and `127.0.0.1` with its key, as PEM files.
#[derive(Debug, Clone)]
pub struct TestCert {
    /// The certificate file.
    pub cert: PathBuf,
    /// The private key file.
    pub key: PathBuf,
}

/// Writes a self-signed certificate with subject `CN=common_name` to `cert` and its key to
/// `key`, each replaced atomically (as a renewal tool would).
pub fn write_cert(common_name: &str, cert: &Path, key: &Path) -> TestCert {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("certificate params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let key_pair = rcgen::KeyPair::generate().expect("key pair");
    let issued = params
        .self_signed(&key_pair)
        .expect("self-signed certificate");
    replace(cert, &issued.pem());
    replace(key, &key_pair.serialize_pem());
    TestCert {
        cert: cert.to_owned(),
        key: key.to_owned(),
    }
}

/// [`write_cert`] into `dir`'s scratch files `cert.pem` and `key.pem`.
pub fn scratch_cert(dir: &TestDir, common_name: &str) -> TestCert {
    write_cert(
        common_name,
        &dir.scratch("cert.pem"),
        &dir.scratch("key.pem"),
    )
}

impl MasterCommand<'_> {
    /// Serves HTTPS with `cert`: `--tls-cert` and `--tls-key`.
    pub fn tls(self, cert: &TestCert) -> Self {
        let flag = std::ffi::OsStr::new;
        self.args(&[
            flag("--tls-cert"),
            cert.cert.as_os_str(),
            flag("--tls-key"),
            cert.key.as_os_str(),
        ])
    }
}

fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write pem");
    std::fs::rename(&tmp, path).expect("install pem");
}

/// What one curl run saw.
#[derive(Debug)]
pub struct Curl {
    /// Whether curl exited 0.
    pub ok: bool,
    /// The response body.
    pub body: String,
    /// `%{http_version}`: `2` or `1.1`.
    pub http_version: String,
    /// curl's stderr (with `-v`: the handshake and the server certificate).
    pub stderr: String,
}

/// Marks the end of the body in curl's output, before the write-out variables.
const WRITE_OUT_MARK: &str = "\n--flora-write-out--";

/// `curl -sS -v --cacert CA [extra…] https://127.0.0.1:PORT/PATH`, bounded in time.
pub fn curl(port: u16, ca: &Path, extra: &[&str], path: &str) -> Curl {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-v", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(extra)
        .args(["-w", &format!("{WRITE_OUT_MARK}%{{http_version}}")])
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn curl (Debian package curl)");
    if wait_child(&mut child, CURL_DEADLINE).is_none() {
        kill_and_reap(&mut child);
        panic!("curl {extra:?} still running after {CURL_DEADLINE:?}");
    }
    let out = child.wait_with_output().expect("curl output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, version) = stdout.rsplit_once(WRITE_OUT_MARK).unwrap_or((&stdout, ""));
    Curl {
        ok: out.status.success(),
        body: body.to_string(),
        http_version: version.trim().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The subject line of the server certificate in curl's `-v` output (`CN=…`).
pub fn served_subject(c: &Curl) -> Option<String> {
    c.stderr
        .lines()
        .find_map(|l| l.trim_start_matches(['*', ' ']).strip_prefix("subject: "))
        .map(str::to_string)
}
