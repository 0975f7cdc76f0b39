//! The master's management HTTP server: Prometheus metrics, the HTML status page, JSON and
//! Apache-compatible `?auto`, all rendered from one scoreboard snapshot per request.
//!
//! | path | output |
//! |---|---|
//! | `GET /metrics` | Prometheus text 0.0.4, or OpenMetrics 1.0 when `Accept` asks for it |
//! | `GET /server-status` | HTML page; `?refresh=N` reloads it every N seconds |
//! | `GET /server-status?auto` | Apache `mod_status` machine-readable text |
//! | `GET /server-status.json`, `/server-status?json` | the [`StatusDoc`] as JSON (`schema_version` 1) |
//!
//! Only `GET` and `HEAD`; anything else is 405, unknown paths 404. Bounded: at most
//! [`MAX_CONNECTIONS`] clients at once (when full, the client idle longest makes room for a
//! new one, so slowloris clients cannot lock a scraper out), [`HEADER_READ_TIMEOUT`] to send
//! the headers, [`MAX_REQUEST_BYTES`] of request head. On a loopback address, `Host` must be an
//! IP literal, `localhost` or a configured name (421 otherwise; see [`host`]). Rendering reads shared memory and `/proc` only: it
//! never talks to a worker and never blocks the master.
//!
//! ```
//! use flora_cluster::exporter::{self, Format, StatusDoc};
//! use flora_cluster::scoreboard::Scoreboard;
//! let dir = tempfile::tempdir().unwrap();
//! let sb = Scoreboard::create(&dir.path().join("s"), "web", 2).unwrap();
//! let doc = StatusDoc::build(sb.snapshot());
//! let text = exporter::prometheus::render(&doc, Format::Text);
//! assert!(text.contains("# TYPE flora_http_requests_total counter"));
//! ```

pub mod actions;
pub mod apache;
mod conns;
pub mod family;
pub mod host;
pub mod html;
pub mod model;
pub mod otlp;
pub mod procfs;
pub mod prometheus;
pub mod terminal;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::task::Poll;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};

pub use model::StatusDoc;
pub use prometheus::Format;

use crate::scoreboard::Scoreboard;

/// Default address of the management server: loopback only.
pub use crate::config::DEFAULT_STATUS_ADDR as DEFAULT_ADDR;
/// Clients held at once. When full, a new client takes the place of the one idle longest
/// (still sending its request head, or between requests), so stalled clients cannot keep
/// Prometheus out (see `conns.rs`).
pub const MAX_CONNECTIONS: usize = 256;
/// Connections the kernel queues until they are accepted (capped by `net.core.somaxconn`).
/// Deeper than the usual 128, so that clients churning through the table overflow neither it
/// nor the SYN queue: an overflow drops a scraper's SYN, which costs it a 1 s retransmit.
pub const LISTEN_BACKLOG: u32 = 1024;
/// Time a client has to send its request headers (half Prometheus' default scrape timeout).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head accepted (larger ones get 431 or a closed connection).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Idle keep-alive connections are closed after this long.
const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(30);

const HTML_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

/// Binds the management server's listener with a [`LISTEN_BACKLOG`]-deep accept queue.
///
/// # Errors
/// The socket, bind or listen error.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves the management endpoints on `listener` until the task is dropped. While it listens
/// on a loopback address, requests must name an IP literal, `localhost` or one of
/// `allowed_hosts` in `Host` (see [`host`]).
pub async fn serve(
    listener: TcpListener,
    sb: Scoreboard,
    control: Option<actions::HttpControl>,
    allowed_hosts: Vec<String>,
) {
    let (_keep, stop) = tokio::sync::watch::channel(false);
    serve_until(listener, sb, control, allowed_hosts, stop).await;
}

/// [`serve`] until `stop` turns true: then it accepts no more, answers the requests in
/// progress with `Connection: close` and closes idle keep-alive connections, so clients
/// retry on a fresh connection (to whoever accepts on the socket next: a master upgrade).
pub async fn serve_until(
    listener: TcpListener,
    sb: Scoreboard,
    control: Option<actions::HttpControl>,
    allowed_hosts: Vec<String>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let hosts = match listener.local_addr() {
        Ok(local) => host::HostCheck::new(local, &allowed_hosts),
        Err(e) => {
            tracing::error!("status server: no local address ({e}); not serving");
            return;
        }
    };
    let table = conns::Table::new(MAX_CONNECTIONS);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!("status server accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = until_true(&mut stop) => return,
        };
        let place = table.admit().await;
        tokio::spawn(connection(
            stream,
            place,
            sb.clone(),
            control.clone(),
            hosts.clone(),
            stop.clone(),
        ));
    }
}

/// Resolves once `stop` is true (never, if its sender is gone while false).
async fn until_true(stop: &mut tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Serves one client until it closes, times out, or is evicted for a newer client.
async fn connection(
    stream: tokio::net::TcpStream,
    mut place: conns::Place,
    sb: Scoreboard,
    control: Option<actions::HttpControl>,
    hosts: host::HostCheck,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_BYTES);
    let state = place.state.clone();
    let svc = hyper::service::service_fn(move |req| {
        let (sb, control, hosts) = (sb.clone(), control.clone(), hosts.clone());
        let busy = state.busy();
        async move {
            let resp = if let Err((status, why)) = hosts.check(&req) {
                respond(status, "text/plain; charset=utf-8", why)
            } else if req.uri().path().starts_with("/-/") {
                actions::handle(&req, control.as_ref()).await
            } else {
                handle(&req, &sb)
            };
            drop(busy);
            Ok::<_, Infallible>(resp)
        }
    });
    let mut conn = std::pin::pin!(builder.serve_connection(TokioIo::new(stream), svc));
    // One poll reads what came with the connect: a whole request head is answered (busy)
    // before the connection can be evicted.
    let first = std::future::poll_fn(|cx| Poll::Ready(conn.as_mut().poll(cx))).await;
    place.state.settle();
    if first.is_ready() {
        return;
    }
    // Bound the whole connection too: an idle keep-alive client cannot hold a place forever.
    let lifetime = tokio::time::sleep(KEEP_ALIVE_IDLE * 4);
    tokio::pin!(lifetime);
    let stopping = until_true(&mut stop);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = &mut lifetime => return,
        _ = &mut place.evicted => return,
        () = stopping => {}
    }
    // Stopping: finish the request in progress (Connection: close), drop an idle one.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(KEEP_ALIVE_IDLE, conn).await;
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// Which view of `/server-status` a query string asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusView {
    /// The HTML page, optionally refreshing.
    Html {
        /// `?refresh=N`.
        refresh: Option<u32>,
    },
    /// `?auto`.
    Auto,
    /// `?json`.
    Json,
}

/// Parses the query of `/server-status` (`auto`, `json`, `refresh=N`; unknown keys ignored).
///
/// # Errors
/// A message for a `refresh` that is not a number in 1..=3600.
pub fn parse_status_query(query: Option<&str>) -> Result<StatusView, String> {
    let mut view = StatusView::Html { refresh: None };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "auto" => view = StatusView::Auto,
            "json" => view = StatusView::Json,
            "refresh" => {
                let n: u32 = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=3600).contains(n))
                    .ok_or_else(|| format!("refresh must be seconds in 1..=3600, not {v:?}"))?;
                if let StatusView::Html { refresh } = &mut view {
                    *refresh = Some(n);
                }
            }
            _ => {}
        }
    }
    Ok(view)
}

/// Answers one request (pure apart from reading the scoreboard and `/proc`).
pub fn handle<B>(req: &Request<B>, sb: &Scoreboard) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET and HEAD are allowed here\n",
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let path = req.uri().path();
    match path {
        "/metrics" => {
            let accept = req.headers().get(hyper::header::ACCEPT).and_then(|v| v.to_str().ok());
            let format = Format::negotiate(accept);
            let doc = StatusDoc::build(sb.snapshot());
            if req.method() == Method::GET {
                // `flora_listen_queue_peak` is the peak since the previous scrape.
                sb.listen_queues_scraped();
            }
            respond(StatusCode::OK, format.content_type(), prometheus::render(&doc, format))
        }
        "/server-status.json" => json(sb),
        "/server-status" => match parse_status_query(req.uri().query()) {
            Ok(StatusView::Json) => json(sb),
            Ok(StatusView::Auto) => {
                let snap = sb.snapshot();
                let slots = snap.slots.clone();
                let doc = StatusDoc::build(snap);
                respond(StatusCode::OK, "text/plain; charset=utf-8", apache::render(&doc, &slots))
            }
            Ok(StatusView::Html { refresh }) => {
                let doc = StatusDoc::build(sb.snapshot()).with_history(sb.history());
                let mut resp = respond(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    html::render(&doc, &html::HtmlOptions { refresh }),
                );
                resp.headers_mut()
                    .insert("content-security-policy", HeaderValue::from_static(HTML_CSP));
                resp
            }
            Err(msg) => respond(StatusCode::BAD_REQUEST, "text/plain; charset=utf-8", format!("{msg}\n")),
        },
        "/" => respond(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "flora-cluster management: /metrics /server-status /server-status?auto /server-status.json\n",
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found\n"),
    }
}

fn json(sb: &Scoreboard) -> Response<Full<Bytes>> {
    let doc = StatusDoc::build(sb.snapshot()).with_history(sb.history());
    match serde_json::to_vec_pretty(&doc) {
        Ok(body) => respond(StatusCode::OK, "application/json", body),
        Err(e) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("cannot encode the status: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(sb: &Scoreboard, uri: &str, method: Method) -> Response<Full<Bytes>> {
        let req = Request::builder().method(method).uri(uri).body(()).unwrap();
        handle(&req, sb)
    }

    #[test]
    fn routes_methods_and_queries() {
        let dir = tempfile::tempdir().unwrap();
        let sb = Scoreboard::create(&dir.path().join("s"), "t", 2).unwrap();
        let ct =
            |r: &Response<Full<Bytes>>| r.headers()[CONTENT_TYPE].to_str().unwrap().to_string();
        let r = get(&sb, "/metrics?x=1", Method::GET);
        assert_eq!(
            (r.status(), ct(&r)),
            (StatusCode::OK, prometheus::TEXT_CONTENT_TYPE.to_string())
        );
        assert_eq!(
            get(&sb, "/server-status?auto", Method::GET).status(),
            StatusCode::OK
        );
        assert_eq!(
            ct(&get(&sb, "/server-status?json", Method::GET)),
            "application/json"
        );
        assert_eq!(
            ct(&get(&sb, "/server-status.json", Method::HEAD)),
            "application/json"
        );
        assert_eq!(
            ct(&get(&sb, "/server-status?refresh=5", Method::GET)),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            get(&sb, "/server-status?refresh=0", Method::GET).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            get(&sb, "/nope", Method::GET).status(),
            StatusCode::NOT_FOUND
        );
        let r = get(&sb, "/metrics", Method::POST);
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");
    }

    #[test]
    fn status_queries() {
        assert_eq!(
            parse_status_query(None),
            Ok(StatusView::Html { refresh: None })
        );
        assert_eq!(parse_status_query(Some("auto")), Ok(StatusView::Auto));
        assert_eq!(parse_status_query(Some("json&x=1")), Ok(StatusView::Json));
        assert_eq!(
            parse_status_query(Some("refresh=10")),
            Ok(StatusView::Html { refresh: Some(10) })
        );
        assert!(parse_status_query(Some("refresh=abc")).is_err());
        assert!(parse_status_query(Some("refresh=99999")).is_err());
    }
}
