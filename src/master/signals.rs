//! Signals become domain events here, at one edge; the master loop never sees signal numbers.

use tokio::signal::unix::{signal, Signal, SignalKind};

pub use super::core::SignalEvent;

/// A source of [`SignalEvent`]s (a trait so tests can feed events).
pub trait SignalSource {
    /// The next event.
    fn next(&mut self) -> impl std::future::Future<Output = SignalEvent> + Send;
}

/// The process's real signals.
#[derive(Debug)]
pub struct UnixSignals {
    term: Signal,
    int: Signal,
    quit: Signal,
    hup: Signal,
    usr2: Signal,
}

impl UnixSignals {
    /// Installs the handlers (from then on the default actions no longer run).
    ///
    /// # Errors
    /// When a handler cannot be installed.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }
}

impl SignalSource for UnixSignals {
    async fn next(&mut self) -> SignalEvent {
        tokio::select! {
            _ = self.term.recv() => SignalEvent::Stop,
            _ = self.int.recv() => SignalEvent::Stop,
            _ = self.quit.recv() => SignalEvent::Stop,
            _ = self.hup.recv() => SignalEvent::Reload,
            _ = self.usr2.recv() => SignalEvent::Upgrade,
        }
    }
}
