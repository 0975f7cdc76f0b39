//! Apache `mod_status` machine-readable output (`/server-status?auto`), with Apache's exact
//! keys, so existing Apache tooling (Prometheus `apache_exporter`, Datadog, collectd) can read a
//! flora-cluster.
//!
//! Mapping (Apache → flora-cluster):
//!
//! | key | value |
//! |---|---|
//! | `Total Accesses` | finished requests, all workers, all generations |
//! | `Total kBytes` | bytes sent / 1024 |
//! | `Total Duration` | sum of request durations, ms |
//! | `Uptime`, `ServerUptimeSeconds` | seconds since the master started |
//! | `ReqPerSec`, `BytesPerSec`, `BytesPerReq`, `DurationPerReq` | lifetime averages |
//! | `CPUUser`, `CPUSystem`, `CPULoad` | CPU seconds of the master and workers (user+system reported as `CPUUser`), and their share of the uptime |
//! | `BusyWorkers` | ready or draining workers with a request in flight |
//! | `IdleWorkers` | ready workers without a request in flight |
//! | `GracefulWorkers` | draining workers |
//! | `Processes` | live worker processes |
//! | `ConnsTotal` | connections open now |
//! | `Scoreboard` | one character per slot: `W` busy, `_` idle, `S` starting, `G` draining, `.` dead or unused |
//! | `ParentServerConfigGeneration` | flora generation |
//! | `MasterUpgrades`, `MasterUpgradeRollbacks` | flora's own: master upgrades that succeeded, rolled back (when the master's records are known) |

use std::collections::HashSet;
use std::fmt::Write;
use std::hash::{BuildHasherDefault, Hasher};

use super::family::{Families, Family, Fnv, Value};
use super::model::StatusDoc;
use super::prometheus::push_labels;
use crate::scoreboard::{SlotSnapshot, SlotState};

/// Scoreboard character of a slot.
pub fn slot_char(s: &SlotSnapshot) -> char {
    match s.state {
        SlotState::Ready if s.counters.requests_active > 0 => 'W',
        SlotState::Ready => '_',
        SlotState::Starting => 'S',
        SlotState::Draining => 'G',
        _ => '.',
    }
}

/// Apache prints fractions without a leading zero in places; plain decimals parse everywhere.
fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.6}")
    } else {
        "0".into()
    }
}

/// Every key Apache's `mod_status` writes in `?auto` (2.2 and 2.4, with `mod_ssl`): a custom
/// line never uses one, whatever its case, so no Apache tool reads an app's number as Apache's.
pub const APACHE_KEYS: [&str; 54] = [
    "ServerVersion",
    "ServerMPM",
    "Server Built",
    "CurrentTime",
    "RestartTime",
    "ParentServerConfigGeneration",
    "ParentServerMPMGeneration",
    "ServerUptimeSeconds",
    "ServerUptime",
    "Load1",
    "Load5",
    "Load15",
    "Total Accesses",
    "Total kBytes",
    "Total Duration",
    "CPUUser",
    "CPUSystem",
    "CPUChildrenUser",
    "CPUChildrenSystem",
    "CPULoad",
    "Uptime",
    "ReqPerSec",
    "BytesPerSec",
    "BytesPerReq",
    "DurationPerReq",
    "BusyWorkers",
    "GracefulWorkers",
    "IdleWorkers",
    "BusyServers",
    "IdleServers",
    "Processes",
    "Stopping",
    "ConnsTotal",
    "ConnsAsyncWriting",
    "ConnsAsyncKeepAlive",
    "ConnsAsyncClosing",
    "Scoreboard",
    "TLSSessionCacheStatus",
    "CacheType",
    "CacheSharedMemory",
    "CacheCurrentEntries",
    "CacheSubcaches",
    "CacheIndexesPerSubcaches",
    "CacheTimeLeftOldestAvg",
    "CacheTimeLeftOldestMin",
    "CacheTimeLeftOldestMax",
    "CacheIndexUsage",
    "CacheUsage",
    "CacheStoreCount",
    "CacheReplaceCount",
    "CacheExpireCount",
    "CacheDiscardCount",
    "CacheRetrieveHitCount",
    "CacheRetrieveMissCount",
];

/// Keys this page adds to Apache's (the listeners' accept queues, summed; the master
/// upgrades by outcome): reserved like [`APACHE_KEYS`].
pub const FLORA_KEYS: [&str; 6] = [
    "ListenQueue",
    "ListenQueuePeak",
    "ListenQueueLimit",
    "ListenDrops",
    "MasterUpgrades",
    "MasterUpgradeRollbacks",
];

/// The key a `?auto` reader sees in `line`: the text before its first `:`, trimmed.
pub fn key_of(line: &str) -> &str {
    let end = line.bytes().position(|b| b == b':').unwrap_or(line.len());
    line.get(..end).unwrap_or(line).trim()
}

/// Appends the app's own metrics as `name{labels}: value` lines (Apache tooling ignores keys
/// it does not know). A line is left out when its key (see [`key_of`]) is an Apache key or
/// the host line, or repeats an earlier line's key, compared without case: a name with a `:`
/// or a label value with one can make such a key. `/metrics` and the JSON still show it.
fn custom_lines(out: &mut String, families: &[Family<'_>], host: &str) {
    let start = out.len();
    let series: usize = families.iter().map(|f| f.samples.len()).sum();
    // Hashes of the keys written; a repeated hash is checked against the lines themselves.
    let mut seen: HashSet<u64, BuildHasherDefault<Prehashed>> =
        HashSet::with_capacity_and_hasher(series * 2, BuildHasherDefault::default());
    let mut line = |k: &str, v: f64| {
        let key = key_of(k);
        // Apache keys are letters, digits and spaces: most custom keys are ruled out at once.
        let apache_like = key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ');
        if key.eq_ignore_ascii_case(host)
            || (apache_like
                && APACHE_KEYS
                    .iter()
                    .chain(&FLORA_KEYS)
                    .any(|a| a.eq_ignore_ascii_case(key)))
        {
            return;
        }
        let hash = folded_hash(key);
        let repeated = !seen.insert(hash)
            && out[start..]
                .lines()
                .any(|l| key_of(l).eq_ignore_ascii_case(key));
        if !repeated {
            let _ = writeln!(out, "{k}: {}", num(v));
        }
    };
    for f in families {
        for s in &f.samples {
            let key = |suffix: &str| {
                let mut key = format!("{}{suffix}", f.name);
                push_labels(&mut key, s.labels.iter());
                key
            };
            match s.value {
                Value::Histogram(h) => {
                    line(&key("_count"), h.count() as f64);
                    line(&key("_sum"), h.sum);
                }
                Value::Int(n) => line(&key(""), n as f64),
                Value::Float(v) => line(&key(""), v),
            }
        }
    }
}

/// A hasher for keys that are hashes already ([`folded_hash`]).
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// FNV-1a of `key` without ASCII case (a few instructions per byte).
fn folded_hash(key: &str) -> u64 {
    let mut h = Fnv::default();
    key.bytes().for_each(|b| h.write_u8(b.to_ascii_lowercase()));
    h.finish()
}

/// Renders the `?auto` text.
pub fn render(doc: &StatusDoc, all_slots: &[SlotSnapshot]) -> String {
    let t = &doc.totals;
    let uptime = doc.uptime_seconds.max(0.0).floor() as u64;
    let busy = doc
        .workers
        .iter()
        .filter(|d| {
            matches!(d.slot.state, SlotState::Ready | SlotState::Draining)
                && d.slot.counters.requests_active > 0
        })
        .count();
    let idle = doc
        .workers
        .iter()
        .filter(|d| d.slot.state == SlotState::Ready && d.slot.counters.requests_active == 0)
        .count();
    let graceful = doc
        .workers
        .iter()
        .filter(|d| d.slot.state == SlotState::Draining)
        .count();
    let processes = doc.workers.iter().filter(|d| d.process.is_some()).count();
    let cpu: f64 = doc
        .workers
        .iter()
        .filter_map(|d| d.process)
        .chain(doc.master_process)
        .map(|p| p.cpu_seconds)
        .sum();
    let duration_ms = t.counters.histogram.sum_seconds * 1000.0;
    let per_req = |v: f64| {
        if t.counters.requests_total > 0 {
            v / t.counters.requests_total as f64
        } else {
            0.0
        }
    };
    let scoreboard: String = all_slots.iter().map(slot_char).collect();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let mut out = String::with_capacity(1024 + scoreboard.len());
    let mut line = |k: &str, v: &dyn std::fmt::Display| {
        let _ = writeln!(out, "{k}: {v}");
    };
    line("ServerVersion", &doc.server_version);
    line("ServerMPM", &"prefork");
    line("ParentServerConfigGeneration", &doc.generation);
    line("ParentServerMPMGeneration", &doc.generation);
    line("ServerUptimeSeconds", &uptime);
    line("Total Accesses", &t.counters.requests_total);
    line("Total kBytes", &(t.counters.bytes_out / 1024));
    line("Total Duration", &(duration_ms.max(0.0).round() as u64));
    line("CPUUser", &num(cpu));
    line("CPUSystem", &num(0.0));
    line("CPUChildrenUser", &num(0.0));
    line("CPUChildrenSystem", &num(0.0));
    line(
        "CPULoad",
        &num(if uptime > 0 {
            cpu / uptime as f64 * 100.0
        } else {
            0.0
        }),
    );
    line("Uptime", &uptime);
    line("ReqPerSec", &num(doc.rates.requests_per_second));
    line("BytesPerSec", &num(doc.rates.bytes_sent_per_second));
    line("BytesPerReq", &num(doc.rates.bytes_per_request));
    line("DurationPerReq", &num(per_req(duration_ms)));
    line("BusyWorkers", &busy);
    line("GracefulWorkers", &graceful);
    line("IdleWorkers", &idle);
    line("Processes", &processes);
    line("Stopping", &0);
    line("ConnsTotal", &t.counters.conns_open);
    line("ConnsAsyncWriting", &0);
    line("ConnsAsyncKeepAlive", &0);
    line("ConnsAsyncClosing", &0);
    if !doc.listen_queues.is_empty() {
        let q = &doc.listen_queues;
        let sum = |f: fn(&crate::scoreboard::ListenQueueSnapshot) -> u64| {
            q.iter().fold(0u64, |a, l| a.saturating_add(f(l)))
        };
        line("ListenQueue", &sum(|l| l.length));
        line("ListenQueuePeak", &sum(|l| l.peak));
        line("ListenQueueLimit", &sum(|l| l.limit));
        line("ListenDrops", &sum(|l| l.drops.unwrap_or(0)));
    }
    if let Some(m) = &doc.master {
        line("MasterUpgrades", &m.upgrades.success);
        line("MasterUpgradeRollbacks", &m.upgrades.rollback);
    }
    line("Scoreboard", &scoreboard);
    custom_lines(&mut out, Families::of_app(doc).custom(), &host);
    format!("{host}\n{out}")
}

#[cfg(test)]
mod tests {
    use super::super::model::StatusDoc;
    use super::*;
    use crate::scoreboard::{Aggregation, MetricSpec, Scoreboard};

    #[test]
    fn keys_and_scoreboard() {
        let dir = tempfile::tempdir().unwrap();
        let sb = Scoreboard::create(&dir.path().join("s"), "t", 4).unwrap();
        let w0 = sb.writer(0).unwrap();
        w0.set_state(SlotState::Ready);
        sb.slot_spawned(0, 10, 1);
        w0.set_state(SlotState::Ready);
        let conn = w0.conn_open("127.0.0.1:1".parse().unwrap());
        for _ in 0..3 {
            conn.request_begin("GET", "/", 11).finish(200, 2048);
        }
        let _busy = conn.request_begin("GET", "/slow", 11);
        sb.slot_spawned(1, 11, 1);
        let snap = sb.snapshot();
        let slots = snap.slots.clone();
        let doc = StatusDoc::build_with(snap, |_| None);
        let text = render(&doc, &slots);
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}: ")))
                .unwrap_or_else(|| panic!("{k} missing in {text}"))
                .to_string()
        };
        assert_eq!(get("Total Accesses"), "3");
        assert_eq!(get("Total kBytes"), "0"); // only body bytes counted here: none on the socket
        assert_eq!(get("Scoreboard"), "WS..");
        assert_eq!(get("BusyWorkers"), "1");
        assert_eq!(get("IdleWorkers"), "0");
        assert_eq!(get("MasterUpgrades"), "0");
        assert_eq!(get("MasterUpgradeRollbacks"), "0");
        assert_eq!(text.lines().count(), 31);
    }

    #[test]
    fn custom_lines_never_repeat_or_shadow_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let sb = Scoreboard::create(&dir.path().join("s"), "t", 2).unwrap();
        let gauge = |n: &str| MetricSpec::gauge(n, "", Aggregation::Max);
        let specs = [
            gauge("Uptime"),
            gauge("busyworkers"),
            gauge("Load1"),
            gauge("masterupgrades"),
            gauge("Scoreboard:x"),
            gauge("app:a"),
            gauge("app:b"),
            gauge("g").label("v", "x:y"),
            gauge("g").label("v", "x:z"),
            gauge("kept"),
        ];
        let w = sb.writer(0).unwrap();
        sb.slot_spawned(0, 10, 1);
        for s in &specs {
            let at = sb.register(s).unwrap();
            crate::metrics::Gauge::new(w.clone(), at, Aggregation::Max).set(7.0);
        }
        let snap = sb.snapshot();
        let slots = snap.slots.clone();
        let text = render(&StatusDoc::build_with(snap, |_| None), &slots);
        let keys: Vec<String> = text
            .lines()
            .map(|l| key_of(l).to_ascii_lowercase())
            .collect();
        let unique: HashSet<&String> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "{text}");
        for line in [
            "kept: 7.000000",
            "app:a: 7.000000",
            "g{v=\"x:y\"}: 7.000000",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?}\n{text}");
        }
        assert_eq!(text.lines().filter(|l| l.starts_with("Uptime:")).count(), 1);
        assert_eq!(text.lines().count(), 31 + 3, "{text}");
    }
}
