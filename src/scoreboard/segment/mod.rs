//! The segment behind a [`super::Scoreboard`]: creating it fully backed, attaching to it,
//! the header, and the creator's own copy of everything a worker must not be trusted with.
//!
//! The master's segment is a sealed `memfd`: its size is fixed (`F_SEAL_SHRINK|F_SEAL_GROW`)
//! and every page is allocated at creation (`fallocate`), so no worker can truncate it under
//! the master (a SIGBUS) and no full tmpfs can fail a first write later. What the master
//! decides from — the slot count, header values, the registry and cell allocation — lives
//! in [`Truth`], in the creator's own memory; the header in the segment is a copy for other
//! readers that the master rewrites ([`Segment::restamp`]) and never reads back.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use nix::fcntl::{FallocateFlags, FcntlArg, SealFlag};

use super::raw::layout::{self, Header, Slot};
use super::raw::map::Mapping;
use super::registry::EntryView;
use super::{strings, unix_ms, Result, ScoreboardError, SlotState, MAX_SLOTS};

mod carry;
mod check;
mod dims;
mod guards;
mod queues;
mod scale;
pub use carry::Carried;
use check::refuse_resizable_by_others;
pub(crate) use check::validate_header;
pub use dims::SegmentLayout;
use dims::{check_routes, check_slots};
use guards::GuardTruth;
pub use guards::MAX_KILL_RECORDS;
pub use queues::QueueSample;
pub(crate) use queues::QueueTruth;

/// A load that publishes like `Acquire`, done as a `Relaxed` load and an `Acquire` fence: the
/// form readers use on every mapping, including read-only ones.
pub(crate) fn load_acquire(a: &AtomicU64) -> u64 {
    let v = a.load(Ordering::Relaxed);
    fence(Ordering::Acquire);
    v
}

/// Header values as the master last set them (the segment's header is a copy of these).
/// Serialized whole into a [`Carried`] (every field defaults: a newer master reads an older one).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub(crate) struct HeaderTruth {
    pub name: String,
    /// Each master's own: never carried.
    #[serde(skip)]
    pub master_pid: u64,
    pub created_unix_ms: u64,
    pub generation: u64,
    pub target_workers: u64,
    pub reloads_success: u64,
    pub reloads_rollback: u64,
    /// (outcome 1 success / 2 rollback, generation, unix ms, reason)
    pub last_reload: Option<(u64, u64, u64, String)>,
    /// The last canary reload's comparison (the master's memory only, never the segment).
    pub last_canary: Option<crate::canary::CanaryReport>,
    /// Canary reloads by verdict (the master's memory only).
    pub canary_counts: crate::canary::CanaryCounts,
    /// Master upgrades by outcome and the last one (the master's memory only).
    pub upgrades_success: u64,
    pub upgrades_rollback: u64,
    pub last_upgrade: Option<crate::scoreboard::UpgradeRecord>,
    pub status_addr: String,
    pub otlp_ok: u64,
    pub otlp_failed: u64,
}

/// The creator's registry: series and the next free cell.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub(crate) struct LocalRegistry {
    pub entries: Vec<EntryView>,
    pub next_cell: usize,
}

/// The master-written fields of one slot.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub(crate) struct SlotTruth {
    pub pid: u32,
    pub generation: u64,
    pub started_unix_ms: u64,
    pub restarts: u64,
    /// Empty, Starting (alive: the worker reports Ready/Draining itself) or Dead.
    pub state: SlotState,
    /// Another master writes this slot's fields (a master upgrade): this one leaves them alone.
    #[serde(skip)]
    pub foreign: bool,
}

impl Default for SlotTruth {
    fn default() -> Self {
        Self {
            pid: 0,
            generation: 0,
            started_unix_ms: 0,
            restarts: 0,
            state: SlotState::Empty,
            foreign: false,
        }
    }
}

/// What the segment's creator knows without reading the segment.
#[derive(Debug, Default)]
pub(crate) struct Truth {
    header: Mutex<HeaderTruth>,
    registry: Mutex<LocalRegistry>,
    slots: Mutex<Vec<SlotTruth>>,
    /// What the worker guards did (counts, last events, lag, kill records).
    guards: Mutex<GuardTruth>,
    /// The listeners' accept queues.
    queues: Mutex<QueueTruth>,
    /// A canary reload's counters at the start of its observation.
    canary: Mutex<Option<super::canary::CanaryBaseline>>,
    /// One sample a second for the status page's charts (`super::history`).
    history: Mutex<super::history::History>,
    /// While set, `restamp` writes no header field (a master upgrade, `carry.rs`).
    header_frozen: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Truth {
    pub(crate) fn slots(&self) -> MutexGuard<'_, Vec<SlotTruth>> {
        lock(&self.slots)
    }

    pub(crate) fn header(&self) -> MutexGuard<'_, HeaderTruth> {
        lock(&self.header)
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, LocalRegistry> {
        lock(&self.registry)
    }

    pub(crate) fn guards(&self) -> MutexGuard<'_, GuardTruth> {
        lock(&self.guards)
    }

    pub(crate) fn queues(&self) -> MutexGuard<'_, QueueTruth> {
        lock(&self.queues)
    }

    pub(crate) fn canary(&self) -> MutexGuard<'_, Option<super::canary::CanaryBaseline>> {
        lock(&self.canary)
    }

    pub(crate) fn history(&self) -> MutexGuard<'_, super::history::History> {
        lock(&self.history)
    }
}

/// A mapped segment; `truth` only in the process that created it.
#[derive(Debug)]
pub(crate) struct Segment {
    pub map: Mapping,
    pub file: File,
    pub truth: Option<Truth>,
    /// This process's cache of route ids (`super::routes`).
    pub routes: super::routes::Cache,
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> ScoreboardError + '_ {
    move |source| ScoreboardError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Allocates every page of the file now: a tmpfs or memory limit that is too small is an
/// error here, never a SIGBUS at a first write later.
fn back_fully(file: &File, size: usize, place: &Path) -> Result<()> {
    match nix::fcntl::fallocate(file.as_fd(), FallocateFlags::empty(), 0, size as i64) {
        Ok(()) => Ok(()),
        Err(e @ (nix::errno::Errno::ENOSPC | nix::errno::Errno::ENOMEM)) => {
            Err(ScoreboardError::NoSpace {
                place: place.to_owned(),
                need: size as u64,
                source: e.into(),
            })
        }
        Err(e) => Err(io_err(place)(e.into())),
    }
}

impl Segment {
    /// A sealed, fully backed anonymous segment (the master's).
    pub(crate) fn create_sealed(name: &str, slots: usize, routes: usize) -> Result<Self> {
        check_slots(slots)?;
        check_routes(routes)?;
        let place = Path::new("<memfd>");
        let flags =
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC | nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING;
        let fd: OwnedFd = nix::sys::memfd::memfd_create(c"flora-scoreboard", flags)
            .map_err(|e| io_err(place)(e.into()))?;
        let file = File::from(fd);
        // A memfd starts at 0777; readers reach it through /proc: owner only, like a file.
        nix::sys::stat::fchmod(&file, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| io_err(place)(e.into()))?;
        let size = layout::segment_size(slots, routes);
        back_fully(&file, size, place)?;
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        nix::fcntl::fcntl(&file, FcntlArg::F_ADD_SEALS(seals))
            .map_err(|e| io_err(place)(e.into()))?;
        Self::init(file, name, (slots, routes), place)
    }

    /// A fully backed segment file at `path` (mode 0600, must not exist).
    pub(crate) fn create_file(
        path: &Path,
        name: &str,
        slots: usize,
        routes: usize,
    ) -> Result<Self> {
        check_slots(slots)?;
        check_routes(routes)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .map_err(io_err(path))?;
        let size = layout::segment_size(slots, routes);
        if let Err(e) = back_fully(&file, size, path.parent().unwrap_or(path)) {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Self::init(file, name, (slots, routes), path)
    }

    fn init(file: File, name: &str, (slots, routes): (usize, usize), place: &Path) -> Result<Self> {
        let size = layout::segment_size(slots, routes);
        let map = Mapping::map(&file, size, (slots, routes), false).map_err(io_err(place))?;
        let truth = Truth::default();
        *truth.header() = HeaderTruth {
            name: name.to_string(),
            master_pid: u64::from(std::process::id()),
            created_unix_ms: unix_ms(),
            ..HeaderTruth::default()
        };
        *truth.slots() = vec![SlotTruth::default(); slots];
        let seg = Self {
            map,
            file,
            truth: Some(truth),
            routes: super::routes::Cache::default(),
        };
        seg.restamp();
        Ok(seg)
    }

    /// Opens a segment by path for reading: never blocks (a FIFO is refused, not opened for
    /// good), and the file must be a regular file (a memfd reached through `/proc` is one).
    pub(crate) fn open_read_only(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
            .open(path)
            .map_err(io_err(path))?;
        let kind = file.metadata().map_err(io_err(path))?.file_type();
        if !kind.is_file() {
            let what = if kind.is_fifo() {
                "a FIFO"
            } else if kind.is_dir() {
                "a directory"
            } else if kind.is_socket() {
                "a socket"
            } else {
                "not a regular file"
            };
            return Err(ScoreboardError::Io {
                path: path.to_owned(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{what}, not a scoreboard segment"),
                ),
            });
        }
        refuse_resizable_by_others(&file, path)?;
        Self::attach_by_header(file, path, true)
    }

    /// Attaches to `file`, trusting its header for the slot count (after validation).
    pub(crate) fn attach_by_header(file: File, path: &Path, read_only: bool) -> Result<Self> {
        let len = file.metadata().map_err(io_err(path))?.len();
        let header_size = std::mem::size_of::<Header>() as u64;
        if len < header_size {
            return Err(ScoreboardError::TooSmall {
                len,
                need: header_size,
            });
        }
        let dims = {
            let head = Mapping::map_header(&file, len as usize).map_err(io_err(path))?;
            validate_header(head.header(), len)?
        };
        let map = Mapping::map(&file, len as usize, dims, read_only).map_err(io_err(path))?;
        Ok(Self {
            map,
            file,
            truth: None,
            routes: super::routes::Cache::default(),
        })
    }

    /// Attaches read-write by the layout the master announced (workers): the header is not
    /// consulted, so a header scribbled by another worker cannot keep this one from starting.
    pub(crate) fn attach_by_layout(file: File, layout: SegmentLayout) -> Result<Self> {
        let path = Path::new("<inherited fd>");
        check_slots(layout.slots)?;
        check_routes(layout.routes)?;
        if layout.hash != layout::layout_hash() {
            return Err(ScoreboardError::Layout(format!(
                "the master's layout hash is {:x}, this build's {:x}: worker and master are different flora-cluster versions",
                layout.hash,
                layout::layout_hash()
            )));
        }
        let len = file.metadata().map_err(io_err(path))?.len();
        let need = layout::segment_size(layout.slots, layout.routes) as u64;
        if len < need {
            return Err(ScoreboardError::TooSmall { len, need });
        }
        let dims = (layout.slots, layout.routes);
        let map = Mapping::map(&file, len as usize, dims, false).map_err(io_err(path))?;
        Ok(Self {
            map,
            file,
            truth: None,
            routes: super::routes::Cache::default(),
        })
    }

    pub(crate) fn header(&self) -> &Header {
        self.map.header()
    }

    pub(crate) fn slot(&self, index: usize) -> Option<&Slot> {
        self.map.slot(index)
    }

    pub(crate) fn slot_count(&self) -> usize {
        self.map.slot_count()
    }

    /// The layout workers attach by.
    pub(crate) fn layout(&self) -> SegmentLayout {
        SegmentLayout {
            slots: self.slot_count(),
            hash: layout::layout_hash(),
            routes: self.map.route_limit(),
        }
    }

    /// Rewrites the whole header from the creator's truth (a no-op for others). The master
    /// calls it before every spawn and periodically, so a header a worker scribbled heals.
    pub(crate) fn restamp(&self) {
        let Some(truth) = &self.truth else { return };
        if truth.header_frozen() {
            self.restamp_slots(truth);
            return;
        }
        let t = truth.header().clone();
        let h = self.header();
        let slots = self.slot_count();
        let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        set(&h.version, layout::VERSION);
        set(&h.layout_hash, layout::layout_hash());
        set(&h.header_size, std::mem::size_of::<Header>() as u64);
        set(&h.slot_size, std::mem::size_of::<Slot>() as u64);
        set(&h.slot_count, slots as u64);
        let routes = self.map.route_limit();
        set(&h.route_limit, routes as u64);
        set(&h.total_size, layout::segment_size(slots, routes) as u64);
        set(&h.master_pid, t.master_pid);
        set(&h.created_unix_ms, t.created_unix_ms);
        strings::write(&h.name, &t.name);
        set(&h.target_workers, t.target_workers);
        set(&h.reloads_success, t.reloads_success);
        set(&h.reloads_rollback, t.reloads_rollback);
        set(&h.otlp_exports_ok, t.otlp_ok);
        set(&h.otlp_exports_failed, t.otlp_failed);
        strings::write(&h.status_addr, &t.status_addr);
        if let Some((outcome, generation, ms, reason)) = &t.last_reload {
            super::seqlock::force_write(&h.last_reload_seq, || {
                set(&h.last_reload_outcome, *outcome);
                set(&h.last_reload_generation, *generation);
                set(&h.last_reload_unix_ms, *ms);
                strings::write(&h.last_reload_reason, reason);
            });
        }
        truth.queues().stamp(&h.listen_queues);
        h.generation.store(t.generation, Ordering::Release);
        // Publish: readers check the magic first.
        h.magic.store(layout::MAGIC, Ordering::Release);
        self.restamp_slots(truth);
    }

    /// Rewrites the master-written fields of every slot from the truth; a live worker's own
    /// state (Starting/Ready/Draining) is kept unless it is not one of those.
    fn restamp_slots(&self, truth: &Truth) {
        for (i, t) in truth.slots().iter().enumerate() {
            let Some(s) = self.slot(i) else { break };
            if t.foreign {
                continue; // the other master writes it
            }
            let set = |a: &AtomicU64, v: u64| {
                if a.load(Ordering::Relaxed) != v {
                    a.store(v, Ordering::Relaxed);
                }
            };
            set(&s.pid, u64::from(t.pid));
            set(&s.generation, t.generation);
            set(&s.started_unix_ms, t.started_unix_ms);
            set(&s.restarts, t.restarts);
            let shown = SlotState::from_raw(s.state.load(Ordering::Relaxed));
            let alive = matches!(
                shown,
                SlotState::Starting | SlotState::Ready | SlotState::Draining
            );
            if t.state != SlotState::Starting || !alive {
                s.state.store(t.state.to_raw(), Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
mod tests;
