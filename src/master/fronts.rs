//! The master's fronts: the control socket, the status server and the OTLP push. They can
//! stop and start again on the same sockets: a master upgrade stops them in the old master
//! (connections then wait in the sockets' queues) and starts them in the new one, which got
//! the same sockets; a rollback starts them again in the old one.

use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixListener;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::control_server;
use crate::control::Command;
use crate::exporter::actions::HttpControl;
use crate::exporter::otlp::OtlpConfig;
use crate::scoreboard::Scoreboard;
use crate::unix_socket::SocketFile;

/// The status server's socket and what it serves with.
#[derive(Debug)]
pub(super) struct StatusFront {
    pub listener: TcpListener,
    pub control: Option<HttpControl>,
    pub hosts: Vec<String>,
}

/// The fronts and their tasks while they run.
#[derive(Debug)]
pub(super) struct Fronts {
    control: UnixListener,
    /// The control socket's file (removed at exit unless handed over).
    control_file: SocketFile,
    commands: mpsc::UnboundedSender<Command>,
    status: Option<StatusFront>,
    otlp: Option<OtlpConfig>,
    sb: Scoreboard,
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    control: JoinHandle<()>,
    status: Option<(JoinHandle<()>, watch::Sender<bool>)>,
    otlp: Option<JoinHandle<()>>,
}

impl Fronts {
    pub(super) fn new(
        (control, control_file): (UnixListener, SocketFile),
        commands: mpsc::UnboundedSender<Command>,
        status: Option<StatusFront>,
        otlp: Option<OtlpConfig>,
        sb: Scoreboard,
    ) -> Self {
        Self {
            control,
            control_file,
            commands,
            status,
            otlp,
            sb,
            running: None,
        }
    }

    /// Accepts on both sockets and pushes OTLP (again).
    ///
    /// # Errors
    /// When a socket cannot be registered with the runtime.
    pub(super) fn start(&mut self) -> std::io::Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        let control = tokio::net::UnixListener::from_std(self.control.try_clone()?)?;
        let control = tokio::spawn(control_server::serve(control, self.commands.clone()));
        let status = match &self.status {
            Some(s) => {
                let listener = tokio::net::TcpListener::from_std(s.listener.try_clone()?)?;
                let (tx, rx) = watch::channel(false);
                let task = tokio::spawn(crate::exporter::serve_until(
                    listener,
                    self.sb.clone(),
                    s.control.clone(),
                    s.hosts.clone(),
                    rx,
                ));
                Some((task, tx))
            }
            None => None,
        };
        let otlp = self
            .otlp
            .clone()
            .map(|o| tokio::spawn(crate::exporter::otlp::run(o, self.sb.clone())));
        self.running = Some(Running {
            control,
            status,
            otlp,
        });
        Ok(())
    }

    /// Accepts no more: control clients being served get their replies; status connections
    /// finish the request in progress and close.
    pub(super) fn stop(&mut self) {
        let Some(r) = self.running.take() else { return };
        r.control.abort();
        if let Some((_task, tx)) = r.status {
            let _ = tx.send(true);
        }
        if let Some(t) = r.otlp {
            t.abort();
        }
    }

    /// The control socket's path.
    pub(super) fn control_path(&self) -> &std::path::Path {
        self.control_file.path()
    }

    /// Device and inode of the control socket's file.
    pub(super) fn control_file_id(&self) -> Option<(u64, u64)> {
        Some(self.control_file.id())
    }

    /// Leaves the control socket's file to a successor.
    pub(super) fn disarm(&mut self) {
        self.control_file.disarm();
    }

    /// Removes the control socket's file at exit (a new master, once it took over).
    pub(super) fn arm(&mut self) {
        self.control_file.arm();
    }

    /// The control socket's listener.
    pub(super) fn control_fd(&self) -> BorrowedFd<'_> {
        self.control.as_fd()
    }

    /// The status server's listener and its address.
    pub(super) fn status_fd(&self) -> Option<(BorrowedFd<'_>, std::net::SocketAddr)> {
        let s = self.status.as_ref()?;
        Some((s.listener.as_fd(), s.listener.local_addr().ok()?))
    }
}

impl Drop for Fronts {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.control.abort();
            if let Some((task, _)) = r.status {
                task.abort();
            }
            if let Some(t) = r.otlp {
                t.abort();
            }
        }
    }
}
