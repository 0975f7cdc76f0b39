//! A tiny blocking HTTP/1.1 client over `std::net::TcpStream`: keep-alive, Content-Length
//! and chunked bodies, a read and write timeout on every socket so a stuck server fails a
//! test instead of hanging it. Only 127.0.0.1. Also one-shot raw requests (any method, extra
//! headers, `Connection: close`) and their parser.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// Read/write timeout of every test socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One parsed HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header fields, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as a pid (for `/pid`).
    pub fn pid(&self) -> u32 {
        self.text()
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("/pid body is not a pid: {:?}", self.text()))
    }
}

/// A blocking HTTP/1.1 client connection (keep-alive; timeouts on every read and write).
#[derive(Debug)]
pub struct Http {
    reader: BufReader<TcpStream>,
}

impl Http {
    /// Connects to 127.0.0.1:`port`.
    pub fn connect(port: u16) -> io::Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(stream),
        })
    }

    /// Writes a `GET path` request (keep-alive) without reading the answer.
    pub fn send_get(&mut self, path: &str) -> io::Result<()> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        self.reader.get_mut().write_all(req.as_bytes())
    }

    /// Reads one response.
    pub fn read_response(&mut self) -> io::Result<Response> {
        let status = self.read_status_line()?;
        let mut headers = Vec::new();
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                break;
            }
            let (n, v) = line
                .split_once(':')
                .ok_or_else(|| bad_data(format!("bad header {line:?}")))?;
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
        };
        resp.body = self.read_body(&resp)?;
        Ok(resp)
    }

    /// Reads `HTTP/1.x CODE REASON` and returns the code.
    fn read_status_line(&mut self) -> io::Result<u16> {
        let line = self.read_line()?;
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status = parts.next().and_then(|s| s.parse().ok());
        match status {
            Some(code) if version.starts_with("HTTP/1.") => Ok(code),
            _ => Err(bad_data(format!("bad status line {line:?}"))),
        }
    }

    /// Reads the body that the head of `resp` announces.
    fn read_body(&mut self, resp: &Response) -> io::Result<Vec<u8>> {
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if chunked {
            return self.read_chunked();
        }
        let mut body = Vec::new();
        if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| bad_data(format!("bad content-length {len:?}")))?;
            body.resize(len, 0);
            self.reader.read_exact(&mut body)?;
        } else if !(resp.status < 200 || resp.status == 204 || resp.status == 304) {
            // No length: the body runs to the end of the connection.
            self.reader.read_to_end(&mut body)?;
        }
        Ok(body)
    }

    /// Sends `GET path` and reads the response.
    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        self.send_get(path)?;
        self.read_response()
    }

    /// Closes both directions.
    pub fn close(self) {
        let _ = self.reader.get_ref().shutdown(Shutdown::Both);
    }

    fn read_line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a full response",
            ));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }

    fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let size_line = self.read_line()?;
            let size_hex = size_line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| bad_data(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                // Trailers, then the empty line.
                while !self.read_line()?.is_empty() {}
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size, 0);
            self.reader.read_exact(&mut body[start..])?;
            let crlf = self.read_line()?;
            if !crlf.is_empty() {
                return Err(bad_data("missing CRLF after chunk".into()));
            }
        }
    }
}

pub(super) fn bad_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// `GET path` on a new connection, closed afterwards.
pub fn get(port: u16, path: &str) -> io::Result<Response> {
    let mut c = Http::connect(port)?;
    let r = c.get(path)?;
    c.close();
    Ok(r)
}

/// Sends one `method target` request with `headers` and `Connection: close` to
/// 127.0.0.1:`port`, reads to EOF and parses the answer. The body is de-chunked; for HEAD it
/// is whatever bytes followed the head (there should be none).
pub fn request(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> io::Result<Response> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if method != "GET" && method != "HEAD" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    let raw = raw_exchange(port, req.as_bytes())?;
    parse_response(&raw, method == "HEAD")
}

/// `GET target` with `headers`; panics unless it gets a response (any status).
pub fn get_with(port: u16, target: &str, headers: &[(&str, &str)]) -> Response {
    request(port, "GET", target, headers)
        .unwrap_or_else(|e| panic!("GET {target} on 127.0.0.1:{port}: {e}"))
}

/// Connects with the test timeouts set.
pub fn connect(port: u16) -> io::Result<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// Writes `bytes`, half-closes, reads everything until EOF.
pub fn raw_exchange(port: u16, bytes: &[u8]) -> io::Result<Vec<u8>> {
    let mut s = connect(port)?;
    s.write_all(bytes)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// Parses a full HTTP/1.1 response read up to EOF.
pub fn parse_response(raw: &[u8], head_only: bool) -> io::Result<Response> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| {
        bad(format!(
            "no end of head in {:?}",
            String::from_utf8_lossy(raw)
        ))
    })?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut resp = Response {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    };
    if head_only {
        return Ok(resp);
    }
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    if chunked {
        resp.body = dechunk(&resp.body).map_err(bad)?;
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| bad(format!("content-length {len:?}")))?;
        if resp.body.len() < len {
            return Err(bad(format!(
                "body {} < content-length {len}",
                resp.body.len()
            )));
        }
        resp.body.truncate(len);
    }
    Ok(resp)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = find(data, b"\r\n").ok_or("chunk size line without CRLF")?;
        let line = String::from_utf8_lossy(&data[..eol]).into_owned();
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {line:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Percent-encodes `s` for a URL query value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GETs `target` and parses the body as JSON; panics unless 200 and JSON.
pub fn get_json(port: u16, target: &str) -> serde_json::Value {
    let resp = get_with(port, target, &[]);
    assert_eq!(resp.status, 200, "GET {target}: {}", resp.text());
    serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("GET {target} is not JSON ({e}):\n{}", resp.text()))
}

/// Closes the write side of `s` (a half-close), ignoring errors.
pub fn half_close(s: &TcpStream) {
    let _ = s.shutdown(Shutdown::Write);
}
