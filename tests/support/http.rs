//! A tiny blocking HTTP/1.1 client over `std::net::TcpStream`: keep-alive, Content-Length
//! and chunked bodies, a read and write timeout on every socket so a stuck server fails a
//! test instead of hanging it. Only 127.0.0.1.

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use super::wait_until;

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

fn bad_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// `GET path` on a new connection, closed afterwards.
pub fn get(port: u16, path: &str) -> io::Result<Response> {
    let mut c = Http::connect(port)?;
    let r = c.get(path)?;
    c.close();
    Ok(r)
}

/// Opens `n` connections at once, then sends `GET /pid` on each and reads every answer while
/// all are still open. Returns the pid that answered on each connection. Holding them all
/// open makes every worker that spreads load take some of them.
pub fn pid_burst(port: u16, n: usize) -> io::Result<Vec<u32>> {
    let mut conns = (0..n)
        .map(|_| Http::connect(port))
        .collect::<io::Result<Vec<_>>>()?;
    for c in &mut conns {
        c.send_get("/pid")?;
    }
    let mut pids = Vec::with_capacity(n);
    for c in &mut conns {
        let r = c.read_response()?;
        if r.status != 200 {
            return Err(bad_data(format!("/pid answered {}", r.status)));
        }
        pids.push(r.pid());
    }
    for c in conns {
        c.close();
    }
    Ok(pids)
}

/// Sends bursts of `/pid` requests until every pid of `want` has answered at least once
/// (panics after `timeout`). Returns how many requests it sent.
pub fn wait_pids_answer(port: u16, want: &[u32], timeout: Duration) -> usize {
    let mut seen = BTreeSet::new();
    let mut sent = 0;
    wait_until(timeout, &format!("pids {want:?} to answer /pid"), || {
        let pids = pid_burst(port, 8).expect("/pid burst");
        sent += pids.len();
        seen.extend(pids);
        want.iter().all(|p| seen.contains(p))
    });
    sent
}
