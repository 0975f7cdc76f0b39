//! Carrying the master's own memory ([`super::Truth`]) across a master upgrade
//! (docs/design/master-upgrade.md §4): the old master describes it as a [`Carried`], the new
//! master adopts the handed-over segment with it and later takes the old master's final one.
//!
//! While both masters live, each writes only the slots it owns: a slot marked foreign is
//! neither restamped nor written by this process's master-side writes, and snapshots show it
//! as the segment does. A frozen header is not restamped at all.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nix::fcntl::{FcntlArg, SealFlag};
use serde::{Deserialize, Serialize};

use super::guards::CarriedGuards;
use super::queues::CarriedQueue;
use super::{
    io_err, layout, validate_header, HeaderTruth, LocalRegistry, Mapping, Segment, SlotTruth, Truth,
};
use crate::scoreboard::{Result, Scoreboard, ScoreboardError, SlotState};

/// The master's own state, as one master hands it to the next in an upgrade: header values
/// (name, creation time, generation, target, reload and canary outcomes, OTLP counts, the
/// status address), the master-written fields of every slot, the guards' records, the
/// listen queues' drop totals with the kernel's last counts, and the custom-metric registry.
/// Not carried: the master's pid, a canary's baseline, heartbeat instants.
///
/// Serialize it with serde (JSON); every field has a default, so a newer master reads the
/// state of an older one. Get it with [`Scoreboard::carried`], use it with
/// [`Scoreboard::adopt`] and [`Scoreboard::import_final`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Carried {
    pub(crate) header: HeaderTruth,
    /// The segment's route limit (checked against the header when present).
    pub(crate) route_limit: Option<usize>,
    pub(crate) slots: Vec<SlotTruth>,
    pub(crate) guards: CarriedGuards,
    pub(crate) queues: Vec<CarriedQueue>,
    pub(crate) registry: LocalRegistry,
}

impl Carried {
    /// The number of slots it describes.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The generation the old master was serving.
    pub fn generation(&self) -> u64 {
        self.header.generation
    }
}

impl Truth {
    pub(crate) fn header_frozen(&self) -> bool {
        self.header_frozen.load(Ordering::Acquire)
    }
}

fn refuse(why: impl Into<String>) -> ScoreboardError {
    ScoreboardError::NotAdoptable(why.into())
}

/// A live worker of the old master runs in the slot (its master still writes it).
fn alive(t: &SlotTruth) -> bool {
    t.state == SlotState::Starting || t.pid != 0
}

impl Segment {
    /// Attaches read-write to a segment another master created and becomes its creator,
    /// without writing anything into it.
    fn adopt(file: File, carried: Carried) -> Result<Self> {
        let place = Path::new("<handed-over fd>");
        let seals = nix::fcntl::fcntl(&file, FcntlArg::F_GET_SEALS)
            .map_err(|e| refuse(format!("not a sealed memfd (F_GET_SEALS: {e})")))?;
        let need = (SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW).bits();
        if seals & need != need {
            return Err(refuse(
                "a memfd whose size is not sealed (F_SEAL_SHRINK and F_SEAL_GROW are missing)",
            ));
        }
        let len = file.metadata().map_err(io_err(place))?.len();
        let header_size = std::mem::size_of::<layout::Header>() as u64;
        if len < header_size {
            return Err(ScoreboardError::TooSmall {
                len,
                need: header_size,
            });
        }
        let (slots, routes) = {
            let head = Mapping::map_header(&file, len as usize).map_err(io_err(place))?;
            validate_header(head.header(), len)?
        };
        let size = layout::segment_size(slots, routes) as u64;
        if len != size {
            return Err(refuse(format!(
                "{len} bytes, its header's layout ({slots} slots, {routes} routes) needs {size}"
            )));
        }
        if carried.slots.len() != slots {
            return Err(refuse(format!(
                "the segment has {slots} slots, the old master's state {}",
                carried.slots.len()
            )));
        }
        if let Some(r) = carried.route_limit.filter(|&r| r != routes) {
            return Err(refuse(format!(
                "the segment has a route limit of {routes}, the old master's state {r}"
            )));
        }
        let map =
            Mapping::map(&file, len as usize, (slots, routes), false).map_err(io_err(place))?;
        let truth = Truth::default();
        truth.header_frozen.store(true, Ordering::Release);
        *truth.header() = HeaderTruth {
            master_pid: u64::from(std::process::id()),
            ..carried.header
        };
        *truth.slots() = carried
            .slots
            .into_iter()
            .map(|t| SlotTruth {
                foreign: alive(&t),
                ..t
            })
            .collect();
        truth.guards().adopt(carried.guards);
        truth.queues().import(carried.queues);
        *truth.registry() = carried.registry;
        Ok(Self {
            map,
            file,
            truth: Some(truth),
            routes: crate::scoreboard::routes::Cache::default(),
        })
    }
}

/// Handing the master's state to the next master (docs/design/master-upgrade.md).
impl Scoreboard {
    /// This master's own state, to hand to the next master; `None` in a process that did not
    /// create (or adopt) the segment.
    ///
    /// ```
    /// use flora_cluster::scoreboard::Scoreboard;
    /// let sb = Scoreboard::create_sealed("web", 2).unwrap();
    /// let state = serde_json::to_string(&sb.carried().unwrap()).unwrap();
    /// assert!(state.contains("web"));
    /// let reader = Scoreboard::from_fd(sb.fd().try_clone_to_owned().unwrap()).unwrap();
    /// assert!(reader.carried().is_none(), "only the creator has a state");
    /// ```
    pub fn carried(&self) -> Option<Carried> {
        let seg = self.segment();
        let t = seg.truth.as_ref()?;
        let mut header = t.header().clone();
        header.master_pid = 0;
        let slots = t
            .slots()
            .iter()
            .map(|s| SlotTruth {
                foreign: false,
                ..*s
            })
            .collect();
        let guards = t.guards().carry();
        let queues = t.queues().carry();
        let registry = t.registry().clone();
        Some(Carried {
            header,
            route_limit: Some(seg.map.route_limit()),
            slots,
            guards,
            queues,
            registry,
        })
    }

    /// Adopts the segment a master handed over (`fd`) with its state: this process becomes
    /// its creator, with its own pid as the master's. Nothing in the segment is written: the
    /// old master's workers keep writing their slots, which start foreign (every slot with a
    /// live worker in `carried`), and the header starts frozen until
    /// [`Scoreboard::set_header_frozen`]`(false)`.
    ///
    /// ```
    /// use flora_cluster::scoreboard::Scoreboard;
    /// let old = Scoreboard::create_sealed("web", 2).unwrap();
    /// let json = serde_json::to_string(&old.carried().unwrap()).unwrap();
    /// let fd = old.fd().try_clone_to_owned().unwrap();
    /// let new = Scoreboard::adopt(fd, serde_json::from_str(&json).unwrap()).unwrap();
    /// assert_eq!(new.name(), "web");
    /// assert_eq!(new.snapshot().master_pid, std::process::id());
    /// ```
    ///
    /// # Errors
    /// [`ScoreboardError::NotAdoptable`] when `fd` is not a memfd sealed against shrinking and
    /// growing, its size is not its header's layout's, or `carried` describes another slot
    /// count or route limit; the header's own errors ([`ScoreboardError::BadMagic`],
    /// [`ScoreboardError::Version`], [`ScoreboardError::Layout`], [`ScoreboardError::TooSmall`])
    /// when it does not validate against this build's layout; [`ScoreboardError::Io`] when it
    /// cannot be mapped.
    pub fn adopt(fd: OwnedFd, carried: Carried) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(Segment::adopt(File::from(fd), carried)?),
        })
    }

    /// Marks slot `slot` as written by another master (`true`) or by this one (`false`):
    /// while foreign, this process never writes its fields (restamps, spawns, exits,
    /// restarts) and its snapshots show it as the segment does. Unmarking keeps this
    /// process's record of the slot; record the slot's next exit or spawn after it. A no-op
    /// in a process that did not create the segment.
    ///
    /// ```
    /// use flora_cluster::scoreboard::Scoreboard;
    /// let sb = Scoreboard::create_sealed("web", 2).unwrap();
    /// sb.set_slot_foreign(1, true).unwrap();
    /// assert!(sb.set_slot_foreign(2, true).is_err());
    /// ```
    ///
    /// # Errors
    /// [`ScoreboardError::NoSuchSlot`] when `slot` is out of range.
    pub fn set_slot_foreign(&self, slot: usize, foreign: bool) -> Result<()> {
        let count = self.slot_count();
        if slot >= count {
            return Err(ScoreboardError::NoSuchSlot { index: slot, count });
        }
        if let Some(t) = &self.segment().truth {
            if let Some(s) = t.slots().get_mut(slot) {
                s.foreign = foreign;
            }
        }
        Ok(())
    }

    /// Whether slot `index` is written by another master (see
    /// [`Scoreboard::set_slot_foreign`]).
    pub(crate) fn slot_foreign(&self, index: usize) -> bool {
        self.segment()
            .truth
            .as_ref()
            .is_some_and(|t| t.slots().get(index).is_some_and(|s| s.foreign))
    }

    /// Freezes the header (`true`): this process stops writing any header field (the old
    /// master once it handed over, the new one until it takes over); its own record still
    /// changes and its snapshots show it. Unfreezing writes the whole header at once. A no-op
    /// in a process that did not create the segment.
    ///
    /// ```
    /// use flora_cluster::scoreboard::Scoreboard;
    /// let sb = Scoreboard::create_sealed("web", 2).unwrap();
    /// sb.set_header_frozen(true);
    /// sb.set_header_frozen(false);
    /// ```
    pub fn set_header_frozen(&self, frozen: bool) {
        if let Some(t) = &self.segment().truth {
            t.header_frozen.store(frozen, Ordering::Release);
            if !frozen {
                self.restamp();
            }
        }
    }

    /// Takes the old master's final state at the upgrade's commit: the header values (but
    /// this master's own pid, generation and target, which its core decides), the guards'
    /// records (plus what this master's guards did since it adopted), the listen queues (drop totals with the kernel's last counts), the registry
    /// (this master's own when it extends the old one) and the record of every foreign slot
    /// (its own slots keep its own record). A no-op in a process that did not create the
    /// segment.
    ///
    /// ```
    /// use flora_cluster::scoreboard::Scoreboard;
    /// let old = Scoreboard::create_sealed("web", 2).unwrap();
    /// let fd = old.fd().try_clone_to_owned().unwrap();
    /// let new = Scoreboard::adopt(fd, old.carried().unwrap()).unwrap();
    /// new.import_final(old.carried().unwrap()).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`ScoreboardError::NotAdoptable`] when `carried` describes another slot count.
    pub fn import_final(&self, carried: Carried) -> Result<()> {
        let Some(t) = &self.segment().truth else {
            return Ok(());
        };
        if carried.slots.len() != self.slot_count() {
            return Err(refuse(format!(
                "the segment has {} slots, the old master's final state {}",
                self.slot_count(),
                carried.slots.len()
            )));
        }
        let foreign: Vec<bool> = {
            let mut slots = t.slots();
            for (own, theirs) in slots.iter_mut().zip(carried.slots) {
                if own.foreign {
                    *own = SlotTruth {
                        foreign: true,
                        ..theirs
                    };
                }
            }
            slots.iter().map(|s| s.foreign).collect()
        };
        {
            let mut h = t.header();
            *h = HeaderTruth {
                master_pid: h.master_pid,
                generation: h.generation,
                target_workers: h.target_workers,
                ..carried.header
            };
        }
        t.guards()
            .import_final(carried.guards, |i| foreign.get(i).copied().unwrap_or(false));
        t.queues().import(carried.queues);
        {
            let mut reg = t.registry();
            let theirs = carried.registry;
            let n = theirs.entries.len();
            if reg.entries.get(..n) == Some(&theirs.entries[..]) {
                reg.next_cell = reg.next_cell.max(theirs.next_cell);
            } else {
                *reg = theirs;
            }
        }
        self.restamp();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
