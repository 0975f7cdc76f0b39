//! The guards' records across a master upgrade: the new master starts from the old one's
//! records and, at the commit, takes the old one's final records plus what its own guards
//! did since it adopted them (so neither master's kills or recycles are lost).

use std::collections::VecDeque;

use super::super::super::snapshot::{GuardEvent, GuardsSnapshot, KillRecord};
use super::super::super::{KillCounts, RecycleCounts, ScaleCounts};
use super::{GuardTruth, MAX_KILL_RECORDS};

/// The guards' records as they cross a master upgrade ([`super::super::Carried`]):
/// heartbeats are instants of the old master's clock and stay behind.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub(crate) struct CarriedGuards {
    /// Counts (recycles, kills, scale events) and kill records.
    pub shown: GuardsSnapshot,
    /// Each slot's last guard event.
    pub last: Vec<Option<GuardEvent>>,
}

/// The counts this master adopted, and its first record id after them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Adopted {
    recycles: RecycleCounts,
    kills: KillCounts,
    scale: ScaleCounts,
    first_id: u64,
}

impl GuardTruth {
    /// The records to carry to the next master.
    pub(crate) fn carry(&self) -> CarriedGuards {
        CarriedGuards {
            shown: self.shown.clone(),
            last: self.slots.iter().map(|s| s.last.clone()).collect(),
        }
    }

    /// Starts from another master's records (a new master adopting the segment).
    pub(crate) fn adopt(&mut self, carried: CarriedGuards) {
        let shown = &carried.shown;
        let (recycles, kills, scale) = (shown.recycles, shown.kills, shown.scale_events);
        self.import_final(carried, |_| true);
        self.adopted = Some(Adopted {
            recycles,
            kills,
            scale,
            first_id: self.next_id,
        });
    }

    /// Takes the old master's final records: its counts plus what this master counted since
    /// it adopted, its kill records and this master's newer ones (oldest first, at most
    /// [`MAX_KILL_RECORDS`]), and the last event of each slot `take(slot)` says (the others
    /// keep this master's). Heartbeats stay.
    pub(crate) fn import_final(&mut self, carried: CarriedGuards, take: impl Fn(usize) -> bool) {
        let base = self.adopted.take().unwrap_or(Adopted {
            recycles: self.shown.recycles,
            kills: self.shown.kills,
            scale: self.shown.scale_events,
            first_id: self.next_id,
        });
        let mut shown = carried.shown;
        let own = &self.shown;
        for ((r, n), (_, b)) in own
            .recycles
            .by_reason()
            .into_iter()
            .zip(base.recycles.by_reason())
        {
            if let Some(c) = shown.recycles.get_mut(r) {
                *c = c.saturating_add(n.saturating_sub(b));
            }
        }
        for ((r, n), (_, b)) in own
            .kills
            .by_reason()
            .into_iter()
            .zip(base.kills.by_reason())
        {
            if let Some(c) = shown.kills.get_mut(r) {
                *c = c.saturating_add(n.saturating_sub(b));
            }
        }
        let pairs = own
            .scale_events
            .by_label()
            .into_iter()
            .zip(base.scale.by_label());
        for ((d, r, n), (_, _, b)) in pairs {
            if let Some(c) = shown.scale_events.get_mut(d, r) {
                *c = c.saturating_add(n.saturating_sub(b));
            }
        }
        // Their records get fresh ids; this master's own keep theirs (threads may follow).
        let theirs = std::mem::take(&mut shown.kill_records);
        let n = theirs.len() as u64;
        let mut records: Vec<(u64, KillRecord)> =
            (self.next_id..self.next_id + n).zip(theirs).collect();
        self.next_id += n;
        let mine = std::mem::take(&mut self.shown.kill_records);
        let ids = std::mem::take(&mut self.ids);
        records.extend(
            ids.into_iter()
                .zip(mine)
                .filter(|(id, _)| *id >= base.first_id),
        );
        records.sort_by_key(|(_, r)| r.unix_ms);
        let extra = records.len().saturating_sub(MAX_KILL_RECORDS);
        let (ids, kept): (VecDeque<u64>, Vec<KillRecord>) = records.into_iter().skip(extra).unzip();
        shown.kill_records = kept;
        self.shown = shown;
        self.ids = ids;
        for (i, last) in carried.last.into_iter().enumerate() {
            if take(i) {
                self.slot(i).last = last;
            }
        }
    }
}
