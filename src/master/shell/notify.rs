//! What systemd is told: READY/RELOADING around starts, reloads and upgrades, and the
//! STATUS line.

use super::Shell;
use crate::master::core::Notify;
use crate::master::systemd;

impl Shell {
    pub(super) fn notify(&self, n: Notify) {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return;
        }
        let msg = match n {
            Notify::Ready => format!("READY=1\nSTATUS={}", self.status_line()),
            Notify::Reloading { generation } => format!(
                "{}\nSTATUS=reloading to generation {generation}",
                systemd::reloading_message()
            ),
            Notify::Upgrading => format!(
                "{}\nSTATUS=upgrading the master",
                systemd::reloading_message()
            ),
            Notify::UpgradeRolledBack => format!(
                "MAINPID={}\nREADY=1\nSTATUS=upgrade rolled back; {}",
                std::process::id(),
                self.status_line()
            ),
        };
        systemd::notify(&msg);
    }

    /// One line for systemd's status: workers, generation, requests.
    pub(super) fn status_line(&self) -> String {
        let snap = self.sb.snapshot();
        let t = &snap.totals;
        format!(
            "{}/{} workers ready, generation {}, {} requests, {} in flight, {} connections",
            t.workers_ready,
            self.core.target(),
            self.core.generation(),
            t.counters.requests_total,
            t.counters.requests_active,
            t.counters.conns_open
        )
    }
}
