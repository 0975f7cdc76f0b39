//! The master's end of the control socket: accepts clients, reads one JSON request per line,
//! hands it to the event loop and writes the reply. Bounded: line length, idle time and the
//! number of clients at once; garbage gets an error reply, never a crash.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::control::{Reply, Request, MAX_LINE};

/// Clients served at once; more wait in the socket's backlog.
const MAX_CLIENTS: usize = 32;
/// A client that sends nothing for this long is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A request for the event loop and where its reply goes.
#[derive(Debug)]
pub struct Command {
    /// The request.
    pub req: Request,
    /// The reply channel.
    pub reply: oneshot::Sender<Reply>,
}

/// Binds the socket at `path` (replacing a stale one), mode 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use nix::sys::stat::{umask, Mode};
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(e);
        }
    }
    // Created 0600 from the start: no window where others could connect.
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    umask(old);
    let listener = bound?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(listener)
}

/// Serves clients until the task is dropped.
pub async fn serve(listener: UnixListener, commands: mpsc::UnboundedSender<Command>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::debug!("control socket accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let commands = commands.clone();
        tokio::spawn(async move {
            if let Err(e) = client(stream, commands).await {
                tracing::debug!("control client: {e}");
            }
            drop(permit);
        });
    }
}

async fn client(
    stream: UnixStream,
    commands: mpsc::UnboundedSender<Command>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let n = tokio::time::timeout(
            IDLE_TIMEOUT,
            (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line),
        )
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle client"))??;
        if n == 0 {
            return Ok(());
        }
        let (reply, last) = if line.len() > MAX_LINE || !line.ends_with(b"\n") {
            (Reply::error(format!("request too long or unterminated (limit {MAX_LINE} bytes, one JSON object per line)")), true)
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(req) => (dispatch(req, &commands).await, false),
                Err(e) => (Reply::error(format!("bad request: {e}")), false),
            }
        };
        let mut out = serde_json::to_vec(&reply).unwrap_or_else(|_| br#"{"ok":false}"#.to_vec());
        out.push(b'\n');
        write.write_all(&out).await?;
        if last {
            return Ok(());
        }
    }
}

async fn dispatch(req: Request, commands: &mpsc::UnboundedSender<Command>) -> Reply {
    let (tx, rx) = oneshot::channel();
    if commands.send(Command { req, reply: tx }).is_err() {
        return Reply::error("the master is shutting down");
    }
    rx.await
        .unwrap_or_else(|_| Reply::error("the master is shutting down"))
}
