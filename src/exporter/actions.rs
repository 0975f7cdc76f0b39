//! State-changing HTTP endpoints, off unless a token is configured (`--status-token-file`):
//! `POST /-/reload` (a canary reload with `?canary=K&canary_secs=S`, optionally
//! `&canary_max_error_ratio=R&canary_max_p99_ratio=P&canary_min_requests=N`),
//! `POST /-/stop`, `POST /-/scale?workers=N`, each with
//! `Authorization: Bearer TOKEN` (compared in constant time). Everything else that changes
//! state goes through the 0600 control socket.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::{mpsc, oneshot};

use crate::control::{Command, Outcome, Reply, Request as ControlRequest};

/// What the status server needs to forward actions to the master.
#[derive(Debug, Clone)]
pub struct HttpControl {
    token: String,
    commands: mpsc::UnboundedSender<Command>,
}

impl HttpControl {
    /// Actions authorized by `token`, sent to the master's event loop.
    pub(crate) fn new(token: String, commands: mpsc::UnboundedSender<Command>) -> Self {
        Self { token, commands }
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a guess matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json(status: StatusCode, reply: &Reply) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(reply).unwrap_or_else(|_| br#"{"ok":false}"#.to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn authorized<B>(req: &Request<B>, token: &str) -> bool {
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
}

fn parse_action<B>(req: &Request<B>) -> Result<ControlRequest, String> {
    match req.uri().path() {
        "/-/reload" => reload_request(req.uri().query().unwrap_or("")),
        "/-/stop" => Ok(ControlRequest::Stop),
        "/-/scale" => req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|p| p.strip_prefix("workers="))
            .and_then(|n| n.parse().ok())
            .map(|workers| ControlRequest::Scale { workers })
            .ok_or_else(|| "give ?workers=N".to_string()),
        other => Err(format!("unknown action {other}")),
    }
}

/// `/-/reload`'s request: a plain reload, or a canary with its parameters (checked as the
/// CLI flags are; the master checks the rest).
fn reload_request(query: &str) -> Result<ControlRequest, String> {
    use crate::canary::{parse_error_ratio, parse_p99_ratio, parse_workers};
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
    };
    let bad = |name: &'static str| move |e: String| format!("{name}: {e}");
    let (Some(k), Some(secs)) = (param("canary"), param("canary_secs")) else {
        if param("canary").is_some() || param("canary_secs").is_some() {
            return Err("a canary reload needs both ?canary=K&canary_secs=S".into());
        }
        return Ok(ControlRequest::Reload);
    };
    let opt = |name: &'static str, parse: fn(&str) -> Result<f64, String>| {
        param(name).map(parse).transpose().map_err(bad(name))
    };
    let min_requests = param("canary_min_requests")
        .map(|n| n.parse().map_err(|_| format!("{n:?} is not a count")))
        .transpose()
        .map_err(bad("canary_min_requests"))?;
    Ok(ControlRequest::Canary {
        workers: parse_workers(k).map_err(bad("canary"))?,
        secs: crate::config::parse_seconds(secs).map_err(bad("canary_secs"))?,
        max_error_ratio: opt("canary_max_error_ratio", parse_error_ratio)?,
        max_p99_ratio: opt("canary_max_p99_ratio", parse_p99_ratio)?,
        min_requests,
    })
}

/// Answers a request for `/-/…`.
pub async fn handle<B>(req: &Request<B>, control: Option<&HttpControl>) -> Response<Full<Bytes>> {
    let Some(control) = control else {
        return json(
            StatusCode::NOT_FOUND,
            &Reply::error("HTTP actions are off: start the master with --status-token-file, or use the control socket"),
        );
    };
    if req.method() != Method::POST {
        let mut resp = json(
            StatusCode::METHOD_NOT_ALLOWED,
            &Reply::error("actions need POST"),
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    if !authorized(req, &control.token) {
        let mut resp = json(
            StatusCode::UNAUTHORIZED,
            &Reply::error("missing or wrong bearer token"),
        );
        resp.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"flora-cluster\""),
        );
        return resp;
    }
    let action = match parse_action(req) {
        Ok(a) => a,
        Err(e) => return json(StatusCode::BAD_REQUEST, &Reply::error(e)),
    };
    let (tx, rx) = oneshot::channel();
    if control
        .commands
        .send(Command {
            req: action,
            reply: tx,
        })
        .is_err()
    {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &Reply::error("the master is shutting down"),
        );
    }
    match rx.await {
        Ok(reply) if !reply.ok => json(StatusCode::CONFLICT, &reply),
        Ok(reply)
            if reply
                .reload
                .as_ref()
                .is_some_and(|r| r.outcome == Outcome::Rollback) =>
        {
            json(StatusCode::CONFLICT, &reply)
        }
        Ok(reply) => json(StatusCode::OK, &reply),
        Err(_) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &Reply::error("the master is shutting down"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison_and_parsing() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret!"));
        let req = |uri: &str, auth: Option<&str>| {
            let mut b = Request::builder().method("POST").uri(uri);
            if let Some(a) = auth {
                b = b.header(AUTHORIZATION, a);
            }
            b.body(()).unwrap()
        };
        assert!(authorized(&req("/-/reload", Some("Bearer tok")), "tok"));
        assert!(!authorized(&req("/-/reload", Some("Basic tok")), "tok"));
        assert!(!authorized(&req("/-/reload", None), "tok"));
        assert_eq!(
            parse_action(&req("/-/scale?workers=3", None)),
            Ok(ControlRequest::Scale { workers: 3 })
        );
        assert!(parse_action(&req("/-/scale?workers=x", None)).is_err());
        assert_eq!(
            parse_action(&req("/-/reload", None)),
            Ok(ControlRequest::Reload)
        );
        let canary = "/-/reload?canary=1&canary_secs=30&canary_max_error_ratio=0.05";
        assert_eq!(
            parse_action(&req(canary, None)),
            Ok(ControlRequest::Canary {
                workers: 1,
                secs: 30.0,
                max_error_ratio: Some(0.05),
                max_p99_ratio: None,
                min_requests: None,
            })
        );
        for (bad, says) in [
            ("/-/reload?canary=1", "both"),
            ("/-/reload?canary=0&canary_secs=1", "canary: "),
            ("/-/reload?canary=1&canary_secs=nan", "canary_secs: "),
            (
                "/-/reload?canary=1&canary_secs=1&canary_max_p99_ratio=0",
                "canary_max_p99_ratio: ",
            ),
            (
                "/-/reload?canary=1&canary_secs=1&canary_min_requests=x",
                "canary_min_requests: ",
            ),
        ] {
            let e = parse_action(&req(bad, None)).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(parse_action(&req("/-/explode", None)).is_err());
    }
}
