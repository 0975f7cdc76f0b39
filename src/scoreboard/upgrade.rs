//! The master's record of master upgrades (`flora-cluster upgrade`), in its own memory
//! (never the segment header, so the layout does not change) and shown by its snapshots: the
//! count by outcome and the last upgrade. A reader in another process gets them from the
//! master's control socket ([`Snapshot::master_status_fields`], [`Snapshot::apply_master`]).
//!
//! ```
//! use flora_cluster::scoreboard::{MasterInfo, UpgradeOutcomeKind, UpgradeRecord};
//! let rec = UpgradeRecord {
//!     outcome: UpgradeOutcomeKind::Rollback,
//!     from_pid: 4121,
//!     to_pid: Some(4188),
//!     from_version: "0.9.0".into(),
//!     to_version: None,
//!     duration_ms: 10_000,
//!     reason: Some("no hello within 10 s".into()),
//!     finished_unix_ms: 1_700_000_000_000,
//! };
//! let json = serde_json::to_value(&rec).unwrap();
//! assert_eq!(json["outcome"], "rollback");
//! let back: UpgradeRecord = serde_json::from_value(json).unwrap();
//! assert_eq!(back, rec);
//! // An older master's record without the newer fields still reads.
//! let old: UpgradeRecord = serde_json::from_str(r#"{"outcome":"success"}"#).unwrap();
//! assert_eq!((old.from_pid, old.to_pid), (0, None));
//! assert_eq!(MasterInfo::this_process(Default::default()).version, env!("CARGO_PKG_VERSION"));
//! ```

use serde::{Deserialize, Serialize};

use super::{Scoreboard, Snapshot};

/// How a master upgrade ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpgradeOutcomeKind {
    /// The new master took over; the old one drained and exited.
    Success,
    /// The new master failed; the old one kept serving.
    Rollback,
}

impl UpgradeOutcomeKind {
    /// `success` or `rollback` (the metric label and the JSON value).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Rollback => "rollback",
        }
    }
}

/// One master upgrade as the master recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpgradeRecord {
    /// Success or rollback.
    pub outcome: UpgradeOutcomeKind,
    /// The master that started the upgrade.
    #[serde(default)]
    pub from_pid: u32,
    /// The new master, once it was spawned.
    #[serde(default)]
    pub to_pid: Option<u32>,
    /// The old master's version.
    #[serde(default)]
    pub from_version: String,
    /// The new master's version, once it said hello.
    #[serde(default)]
    pub to_version: Option<String>,
    /// From the request to the outcome, ms.
    #[serde(default)]
    pub duration_ms: u64,
    /// Why it was rolled back (none on success).
    #[serde(default)]
    pub reason: Option<String>,
    /// When it ended, ms since the epoch.
    #[serde(default)]
    pub finished_unix_ms: u64,
}

/// Master upgrades by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeCounts {
    /// Upgrades where the new master took over.
    #[serde(default)]
    pub success: u64,
    /// Upgrades rolled back.
    #[serde(default)]
    pub rollback: u64,
}

impl UpgradeCounts {
    /// `(outcome label, count)`, both always.
    pub fn by_outcome(&self) -> [(&'static str, u64); 2] {
        [("success", self.success), ("rollback", self.rollback)]
    }
}

/// The master that answers: its pid, its version and its upgrade counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterInfo {
    /// Its pid.
    pub pid: u32,
    /// Its version (`CARGO_PKG_VERSION` of its build).
    pub version: String,
    /// Master upgrades by outcome (carried over upgrades).
    #[serde(default)]
    pub upgrades: UpgradeCounts,
}

impl MasterInfo {
    /// This process as the master, with `upgrades`.
    pub fn this_process(upgrades: UpgradeCounts) -> Self {
        Self {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            upgrades,
        }
    }
}

impl Scoreboard {
    /// Counts a master upgrade by its outcome and keeps it as the last one (master; a no-op
    /// in a process that did not create the segment).
    pub(crate) fn record_upgrade(&self, rec: UpgradeRecord) {
        self.update_header(|t| {
            match rec.outcome {
                UpgradeOutcomeKind::Success => t.upgrades_success += 1,
                UpgradeOutcomeKind::Rollback => t.upgrades_rollback += 1,
            }
            t.last_upgrade = Some(rec);
        });
    }
}

/// The keys of the control socket's `status` reply that carry [`Snapshot::master`] and
/// [`Snapshot::last_upgrade`] to readers in other processes.
pub const MASTER_STATUS_KEYS: [&str; 2] = ["master", "last_upgrade"];

impl Snapshot {
    /// `master` and `last_upgrade` for the control socket's `status` reply (the master's own
    /// records; nothing when this snapshot does not have them).
    pub fn master_status_fields(&self) -> Vec<(&'static str, serde_json::Value)> {
        let Some(master) = &self.master else {
            return Vec::new();
        };
        let [m, last] = MASTER_STATUS_KEYS;
        let master = serde_json::to_value(master).unwrap_or_default();
        let last_upgrade = serde_json::to_value(&self.last_upgrade).unwrap_or_default();
        vec![(m, master), (last, last_upgrade)]
    }

    /// Takes the master's records from its `status` reply (a reader in another process), when
    /// they come from this snapshot's master. Returns whether it did.
    pub fn apply_master(&mut self, master: MasterInfo, last: Option<UpgradeRecord>) -> bool {
        if master.pid != self.master_pid || self.master_pid == 0 {
            return false;
        }
        self.master = Some(master);
        self.last_upgrade = last;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(outcome: UpgradeOutcomeKind) -> UpgradeRecord {
        UpgradeRecord {
            outcome,
            from_pid: 10,
            to_pid: Some(11),
            from_version: "0.9.0".into(),
            to_version: Some("0.9.1".into()),
            duration_ms: 640,
            reason: None,
            finished_unix_ms: 5,
        }
    }

    #[test]
    fn counts_by_outcome_and_keeps_the_last() {
        let sb = Scoreboard::create_sealed("upgrade-rec", 1).expect("create");
        let m = sb.snapshot().master.expect("the creator's records");
        assert_eq!(
            (m.pid, m.upgrades),
            (std::process::id(), Default::default())
        );
        assert_eq!(m.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(sb.snapshot().last_upgrade, None);
        sb.record_upgrade(rec(UpgradeOutcomeKind::Success));
        sb.record_upgrade(rec(UpgradeOutcomeKind::Rollback));
        sb.record_upgrade(rec(UpgradeOutcomeKind::Success));
        let snap = sb.snapshot();
        let counts = snap.master.as_ref().expect("master").upgrades;
        assert_eq!(counts.by_outcome(), [("success", 2), ("rollback", 1)]);
        assert_eq!(snap.last_upgrade, Some(rec(UpgradeOutcomeKind::Success)));
    }

    #[test]
    fn a_reader_elsewhere_has_none_until_the_master_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        let sb = Scoreboard::create(&path, "upgrade-reader", 1).expect("create");
        sb.record_upgrade(rec(UpgradeOutcomeKind::Rollback));
        let reader = Scoreboard::open_read_only(&path).expect("open");
        let mut snap = reader.snapshot();
        assert_eq!(
            (snap.master.as_ref(), snap.last_upgrade.as_ref()),
            (None, None)
        );
        assert!(snap.master_status_fields().is_empty());
        // The reply's JSON, as the control socket carries it.
        let reply: serde_json::Map<_, _> = sb
            .snapshot()
            .master_status_fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let text = serde_json::to_string(&reply).expect("json");
        let mut reply: serde_json::Value = serde_json::from_str(&text).expect("parse");
        let master: MasterInfo = serde_json::from_value(reply["master"].take()).expect("master");
        let last = serde_json::from_value(reply["last_upgrade"].take()).expect("last");
        let mut other = master.clone();
        other.pid += 1;
        assert!(!snap.apply_master(other, None), "another master's records");
        assert!(snap.apply_master(master, last));
        assert_eq!(snap.master.expect("master").upgrades.rollback, 1);
        assert_eq!(snap.last_upgrade, Some(rec(UpgradeOutcomeKind::Rollback)));
    }
}
