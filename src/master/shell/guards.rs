//! The shell's part of the worker guards: it feeds heartbeats and memory samples to the core
//! and carries out the core's `RecordRecycle` and `RecordKill` (counts, the slot's last guard
//! event, the kill record, the log). The decisions are the core's.

use std::fmt::Write;
use std::time::Duration;

use super::{procfs, Shell};
use crate::master::core::{Event, KillReason, RecycleReason};
use crate::scoreboard::KilledRequest;

/// How often the master samples each worker's resident memory (with `--max-memory`).
pub(super) const MEMORY_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How long the loop waits for a kill record's threads before it goes on (the signal that
/// follows may end the process): `/proc` reads take microseconds, but a thread of the worker
/// in the middle of an `exec` holds the lock `syscall` needs. Short, as it holds the loop;
/// a read that takes longer still fills the record when it ends.
const THREADS_READ_WAIT: Duration = Duration::from_millis(20);
/// Longest answer of the control socket's `status` (its line limit is 64 KiB, less a margin):
/// the oldest kill records are left out beyond it, and the guards entirely if even that is
/// not enough (many workers).
pub(super) const GUARDS_REPLY_BYTES: usize = crate::control::MAX_LINE - 4 * 1024;
/// Requests named in a kill's log line.
const LOGGED_REQUESTS: usize = 8;

impl Shell {
    /// A heartbeat arrived on the control channel of `pid` in `slot`.
    pub(super) fn on_heartbeat(&mut self, slot: usize, pid: u32, lag_us: u64, requests: u64) {
        let lag = Duration::from_micros(lag_us);
        self.sb
            .record_heartbeat(slot, pid, lag, self.heartbeat_interval);
        self.feed(Event::Heartbeat {
            slot,
            pid,
            lag,
            requests,
        });
    }

    /// Samples the resident memory of every live worker (a gone one is skipped).
    pub(super) fn sample_memory(&mut self) {
        let samples: Vec<(usize, u32, u64)> = self
            .procs
            .iter()
            .filter_map(|(&slot, p)| Some((slot, p.pid, procfs::rss(p.pid)?)))
            .collect();
        for (slot, pid, rss) in samples {
            self.feed(Event::MemorySample { slot, pid, rss });
        }
    }

    /// A recycle of `pid` in `slot` begins.
    pub(super) fn record_recycle(
        &self,
        slot: usize,
        pid: u32,
        reason: RecycleReason,
        detail: &str,
    ) {
        self.sb.record_recycle(slot, reason.as_str());
        tracing::info!(
            slot,
            pid,
            "recycling worker {pid} in slot {slot} ({}): {detail}",
            reason.as_str()
        );
    }

    /// `pid` in `slot` is about to be killed: counts it, saves the kill record (requests in
    /// flight from the scoreboard now, threads from `/proc` off the loop, waited for a
    /// moment) and logs one warning line.
    pub(super) fn record_kill(&self, slot: usize, pid: u32, reason: KillReason, detail: &str) {
        let Some((id, record)) = self.sb.record_kill(slot, pid, reason.as_str(), detail) else {
            return;
        };
        tracing::warn!(
            slot,
            pid,
            "killing worker {pid} in slot {slot} ({}): {detail}; {}",
            reason.as_str(),
            describe(&record.requests)
        );
        let sb = self.sb.clone();
        let (done, wait) = std::sync::mpsc::channel();
        drop(tokio::task::spawn_blocking(move || {
            sb.set_kill_threads(id, procfs::threads(pid));
            let _ = done.send(());
        }));
        let _ = wait.recv_timeout(THREADS_READ_WAIT);
    }

    /// The `status` answer of the control socket with the guards' records added, so that
    /// `flora-cluster status` in another process shows them too.
    pub(super) fn with_guards(&self, mut reply: crate::control::Reply) -> crate::control::Reply {
        let Some(serde_json::Value::Object(doc)) = &mut reply.status else {
            return reply;
        };
        let snap = self.sb.snapshot();
        for (key, value) in snap.master_status_fields() {
            doc.insert(key.into(), value);
        }
        let Some(report) = snap.guards_report() else {
            return reply;
        };
        let rest = serde_json::to_vec(&*doc).map_or(usize::MAX, |v| v.len());
        let budget = GUARDS_REPLY_BYTES.saturating_sub(rest);
        let report = report.fit(budget);
        let fits = serde_json::to_vec(&report).is_ok_and(|v| v.len() <= budget);
        if let (true, Ok(value)) = (fits, serde_json::to_value(report)) {
            doc.insert("guards".into(), value);
        }
        reply
    }
}

/// `in flight: GET /a [/a] 2.1s from 127.0.0.1:5000 {user=42}; …` or `no request in flight`.
fn describe(requests: &[KilledRequest]) -> String {
    if requests.is_empty() {
        return "no request in flight".into();
    }
    let mut out = format!("{} in flight:", requests.len());
    for r in requests.iter().take(LOGGED_REQUESTS) {
        let q = &r.request;
        let _ = write!(
            out,
            " {} {}",
            q.method.escape_debug(),
            q.path.escape_debug()
        );
        if !q.route.is_empty() {
            let _ = write!(out, " [{}]", q.route.escape_debug());
        }
        let _ = write!(out, " {:.1}s from {}", q.age_seconds, r.client);
        if !q.infos.is_empty() {
            let infos: Vec<String> = q
                .infos
                .iter()
                .map(|(k, v)| format!("{}={}", k.escape_debug(), v.escape_debug()))
                .collect();
            let _ = write!(out, " {{{}}}", infos.join(", "));
        }
        out.push(';');
    }
    if requests.len() > LOGGED_REQUESTS {
        let _ = write!(out, " and {} more", requests.len() - LOGGED_REQUESTS);
    }
    out.trim_end_matches(';').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoreboard::{ClientAddr, KillCounts, RecycleCounts, RequestSnapshot};

    #[test]
    fn the_core_reasons_are_the_scoreboard_labels() {
        let kills: Vec<&str> = KillReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(kills, KillCounts::REASONS);
        let recycles: Vec<&str> = RecycleReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(recycles, RecycleCounts::REASONS);
    }

    #[test]
    fn a_kill_log_line_names_the_requests_on_one_line() {
        assert_eq!(describe(&[]), "no request in flight");
        let request = RequestSnapshot {
            method: "GET".into(),
            path: "/block\n/x".into(),
            path_truncated: false,
            route: "/block/{x}".into(),
            version: "HTTP/1.1".into(),
            age_seconds: 2.25,
            in_flight: 1,
            infos: vec![("job".into(), "42".into())],
        };
        let one = KilledRequest {
            request,
            client: ClientAddr::Unix,
        };
        let line = describe(std::slice::from_ref(&one));
        assert_eq!(
            line,
            "1 in flight: GET /block\\n/x [/block/{x}] 2.2s from unix {job=42}"
        );
        let many = describe(&vec![one; LOGGED_REQUESTS + 2]);
        assert!(
            many.ends_with("and 2 more") && !many.contains('\n'),
            "{many}"
        );
    }
}
