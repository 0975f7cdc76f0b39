//! Worker requests the shell answers without the core: listeners (resolved off the loop;
//! `unix:` paths are never resolved) and custom metric registration.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use super::{Shell, TaskEvent};
use crate::ipc::ToWorker;
use crate::scoreboard::MetricSpec;

/// How long a host name in a worker's `listen()` may take to resolve; the loop never waits.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

impl Shell {
    /// Registers a custom metric for a live worker and answers it.
    pub(super) fn on_register(&self, slot: usize, pid: u32, id: Option<u64>, spec: &MetricSpec) {
        let Some(p) = self.proc(slot, pid) else {
            return;
        };
        let reply = match self.sb.register(spec) {
            Ok(at) => ToWorker::Registered { id, at },
            Err(error) => {
                tracing::warn!(slot, "metric registration refused: {error}");
                ToWorker::RegisterFailed { id, error }
            }
        };
        let channel = p.channel.clone();
        tokio::spawn(async move {
            let _ = channel.send(&reply, None).await;
        });
    }

    /// A worker asks for a listener: answered at once when the address is a `unix:` path,
    /// known or an IP literal; a host name is resolved off the loop with a timeout
    /// ([`TaskEvent::Resolved`]).
    pub(super) fn on_listen(&mut self, slot: usize, pid: u32, id: Option<u64>, addr: String) {
        if self.proc(slot, pid).is_none() {
            return;
        }
        if let Some(Err(e)) = crate::unix_socket::unix_path(&addr) {
            return self.reply_listen(slot, pid, id, addr, Err(e.to_string()));
        }
        if self.credentials.is_some() && !self.listeners.declared(&addr) {
            let error = format!(
                "workers running as another user get only the addresses the master was given \
                 (--listen or socket activation); {addr} is not one of them"
            );
            return self.reply_listen(slot, pid, id, addr, Err(error));
        }
        if let Some(Ok(path)) = crate::unix_socket::unix_path(&addr) {
            let bound = self
                .listeners
                .get_or_bind_unix(path)
                .and_then(|(local, fd)| Ok((local, fd.try_clone_to_owned()?)))
                .map_err(|e| e.to_string());
            return self.reply_listen(slot, pid, id, addr, bound);
        }
        if let Some(resolved) = self.listeners.known(&addr) {
            return self.on_resolved(slot, pid, id, &addr, Ok(resolved));
        }
        let tasks = self.tasks.clone();
        tokio::spawn(async move {
            let result = resolve(addr.clone()).await;
            let _ = tasks.send(TaskEvent::Resolved {
                slot,
                pid,
                id,
                addr,
                result,
            });
        });
    }

    pub(super) fn on_resolved(
        &mut self,
        slot: usize,
        pid: u32,
        id: Option<u64>,
        addr: &str,
        result: Result<SocketAddr, String>,
    ) {
        let bound = result.and_then(|resolved| {
            let (local, fd) = self
                .listeners
                .bind_resolved(addr, resolved)
                .map_err(|e| e.to_string())?;
            let fd = fd.try_clone_to_owned().map_err(|e| e.to_string())?;
            Ok((local.to_string(), fd))
        });
        self.reply_listen(slot, pid, id, addr.to_string(), bound);
    }

    fn reply_listen(
        &self,
        slot: usize,
        pid: u32,
        id: Option<u64>,
        addr: String,
        bound: Result<(String, OwnedFd), String>,
    ) {
        let Some(p) = self.proc(slot, pid) else {
            return;
        };
        let channel = p.channel.clone();
        let (msg, fd) = match bound {
            Ok((local, fd)) => (ToWorker::Listening { id, addr, local }, Some(fd)),
            Err(error) => {
                tracing::error!(slot, "cannot listen on {addr}: {error}");
                (ToWorker::ListenFailed { id, addr, error }, None)
            }
        };
        tokio::spawn(async move {
            let _ = channel.send(&msg, fd.as_ref().map(AsFd::as_fd)).await;
        });
    }
}

/// Resolves `addr` on a blocking thread, bounded by [`RESOLVE_TIMEOUT`].
async fn resolve(addr: String) -> Result<SocketAddr, String> {
    let job = tokio::task::spawn_blocking(move || {
        std::net::ToSocketAddrs::to_socket_addrs(&addr)
            .map_err(|e| e.to_string())?
            .next()
            .ok_or_else(|| "address resolves to nothing".to_string())
    });
    match tokio::time::timeout(RESOLVE_TIMEOUT, job).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("resolver failed: {e}")),
        Err(_) => Err(format!(
            "name resolution took longer than {RESOLVE_TIMEOUT:?}"
        )),
    }
}
