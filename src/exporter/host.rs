//! The `Host` check against DNS rebinding: a web page on `evil.example` whose name the
//! attacker re-points at 127.0.0.1 can make a browser send requests to a loopback-only status
//! server, but the browser still sends `Host: evil.example`. So while the server listens on a
//! loopback address it answers only requests whose `Host` (and absolute-form target, if any)
//! is an IP literal, `localhost`, or a name the operator allowed (`--status-host`), any port.
//! A request without `Host` is fine on HTTP/1.0 and a 400 on HTTP/1.1 (RFC 9112 §3.2).
//! On any other address there is no check: Prometheus may scrape it by any host name.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hyper::header::HOST;
use hyper::{Request, StatusCode, Version};

/// Which `Host` values the status server answers.
#[derive(Debug, Clone)]
pub struct HostCheck {
    /// Off when the server listens on a non-loopback address.
    enabled: bool,
    /// Allowed names, lowercase, without a trailing dot.
    names: Arc<[String]>,
}

/// Why a request was refused: the status and a short text body.
pub type Refusal = (StatusCode, &'static str);

impl HostCheck {
    /// The check for a server listening on `local`, allowing `names` besides IP literals and
    /// `localhost`.
    pub fn new(local: SocketAddr, names: &[String]) -> Self {
        Self {
            enabled: local.ip().is_loopback(),
            names: names.iter().map(|n| normalize(n)).collect(),
        }
    }

    /// Whether this check looks at requests at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// `Ok` when `req` may be answered.
    ///
    /// # Errors
    /// 421 for a host name not allowed, 400 for a missing, repeated or malformed `Host`.
    pub fn check<B>(&self, req: &Request<B>) -> Result<(), Refusal> {
        if !self.enabled {
            return Ok(());
        }
        const BAD: Refusal = (StatusCode::BAD_REQUEST, "bad or missing Host header\n");
        const MISDIRECTED: Refusal = (
            StatusCode::MISDIRECTED_REQUEST,
            "this status server answers only IP addresses, localhost and the names given with --status-host\n",
        );
        if let Some(authority) = req.uri().authority() {
            if !self.allows(authority.as_str()).ok_or(BAD)? {
                return Err(MISDIRECTED);
            }
        }
        let mut hosts = req.headers().get_all(HOST).iter();
        match (hosts.next(), hosts.next()) {
            (None, _) if req.version() <= Version::HTTP_10 => Ok(()),
            (Some(h), None) => {
                let h = h.to_str().map_err(|_| BAD)?;
                if self.allows(h).ok_or(BAD)? {
                    Ok(())
                } else {
                    Err(MISDIRECTED)
                }
            }
            _ => Err(BAD),
        }
    }

    /// Whether the `host[:port]` value is allowed; `None` when it is malformed.
    fn allows(&self, value: &str) -> Option<bool> {
        let host = split_port(value)?;
        if host.parse::<IpAddr>().is_ok() {
            return Some(true);
        }
        let host = normalize(host);
        Some(host == "localhost" || self.names.contains(&host))
    }
}

/// The host part of `host[:port]` or `[v6][:port]`; `None` when malformed.
fn split_port(value: &str) -> Option<&str> {
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = value.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<Ipv6Addr>().ok()?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(digits);
        return port_ok.then_some(v6);
    }
    let (host, port) = value.rsplit_once(':').unwrap_or((value, ""));
    (!host.is_empty() && !host.contains(':') && digits(port)).then_some(host)
}

fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate_host_name as validate_name;

    fn req(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().uri(uri).version(version);
        for h in hosts {
            b = b.header(HOST, *h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn loopback_answers_ip_literals_localhost_and_configured_names() {
        let check = HostCheck::new(
            "127.0.0.1:9337".parse().unwrap(),
            &["Metrics.Example.".to_string()],
        );
        let v11 = Version::HTTP_11;
        for host in [
            "127.0.0.1",
            "127.0.0.1:9337",
            "10.1.2.3:80",
            "[::1]:9337",
            "[::1]",
            "localhost",
            "LOCALHOST:1",
            "localhost.",
            "metrics.example:9337",
        ] {
            assert_eq!(
                check.check(&req(v11, "/metrics", &[host])),
                Ok(()),
                "{host}"
            );
        }
        for host in [
            "evil.example",
            "localhost.evil.example:9337",
            "127.0.0.1.nip.io",
        ] {
            let r = check.check(&req(v11, "/metrics", &[host]));
            assert_eq!(
                r.map_err(|e| e.0),
                Err(StatusCode::MISDIRECTED_REQUEST),
                "{host}"
            );
        }
        for hosts in [
            &[][..],
            &["a:b:c"],
            &["[::1"],
            &["localhost:x"],
            &["a", "b"],
        ] {
            let r = check.check(&req(v11, "/metrics", hosts));
            assert_eq!(
                r.map_err(|e| e.0),
                Err(StatusCode::BAD_REQUEST),
                "{hosts:?}"
            );
        }
        assert_eq!(check.check(&req(Version::HTTP_10, "/metrics", &[])), Ok(()));
        let absolute = req(v11, "http://evil.example/metrics", &["localhost"]);
        assert!(check.check(&absolute).is_err());
    }

    #[test]
    fn other_addresses_are_not_checked() {
        for addr in ["0.0.0.0:9337", "192.168.1.5:9337"] {
            let check = HostCheck::new(addr.parse().unwrap(), &[]);
            assert!(!check.enabled());
            let r = req(Version::HTTP_11, "/metrics", &["prometheus-target.example"]);
            assert_eq!(check.check(&r), Ok(()));
        }
        assert!(HostCheck::new("[::1]:1".parse().unwrap(), &[]).enabled());
    }

    #[test]
    fn configured_names() {
        assert!(validate_name("metrics.internal").is_ok());
        for bad in ["", "a:80", "a b", ".a", "-a", "é"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
