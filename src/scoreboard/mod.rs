//! The shared-memory scoreboard: one segment per instance, one slot per worker.
//!
//! The master creates the segment as a file (mode 0600) in the instance's runtime directory,
//! normally on tmpfs, and every worker inherits its open descriptor. Workers write only their
//! own slot, with lock-free atomics; anyone can read every slot and build a [`Snapshot`].
//!
//! # Protocol
//! - **Counters** (connections, requests, bytes, status classes, histogram) only grow for the
//!   whole life of a slot: a respawned worker continues them, so sums never go down.
//! - **Gauges** (connections open, requests in flight, the connection table) belong to the
//!   current worker; the master resets them when that worker is gone.
//! - **Connection entries** and the **last request** are written under a per-entry seqlock;
//!   readers retry a few times and skip an entry they cannot read consistently. A full table
//!   is counted in `conn_overflow`; such connections are still counted everywhere else.
//! - The header (magic, version, sizes, layout hash) is checked on every attach: a foreign,
//!   truncated or other-version segment is an error, never undefined behaviour.
//!
//! # Example
//! ```
//! use flora_cluster::scoreboard::{Scoreboard, SlotState};
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("demo.scoreboard");
//! let sb = Scoreboard::create(&path, "demo", 4).unwrap();
//! let writer = sb.writer(0).unwrap();
//! writer.set_state(SlotState::Ready);
//! let conn = writer.conn_open("127.0.0.1:4000".parse().unwrap());
//! let req = conn.request_begin("GET", "/hello", 11);
//! req.finish(200, 12);
//! drop(conn);
//!
//! let reader = Scoreboard::open_read_only(&path).unwrap();
//! let snap = reader.snapshot();
//! assert_eq!(snap.totals.counters.requests_total, 1);
//! assert_eq!(snap.slots[0].state, SlotState::Ready);
//! ```

mod canary;
mod clock;
pub mod history;
mod history_sampling;
pub mod names;
pub(crate) mod raw;
mod records;
mod registry;
mod routes;
mod segment;
mod seqlock;
mod snapshot;
pub mod status;
mod strings;
mod upgrade;
mod writer;

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use history::{History, HistorySample, HistorySeries, Reading};
pub use raw::layout::{
    CONN_ENTRIES, CUSTOM_CELLS, HISTOGRAM_BOUNDS, INFO_COUNT, INFO_KEY_BYTES, INFO_VALUE_BYTES,
    LISTENER_NAME_BYTES, MAX_BUCKETS, MAX_LISTENERS, MAX_SERIES, METHOD_BYTES, METRIC_HELP_BYTES,
    METRIC_LABELS_BYTES, METRIC_NAME_BYTES, PATH_BYTES, ROUTE_BYTES,
};
pub use registry::{Aggregation, MetricError, MetricKind, MetricSpec, Registered, MAX_LABELS};
pub use routes::{RouteSnapshot, DEFAULT_ROUTE_LIMIT, MAX_ROUTES, OVERFLOW_ROUTE};
pub use segment::{Carried, QueueSample, SegmentLayout, MAX_KILL_RECORDS};
pub use snapshot::families;
pub use snapshot::ScaleCounts;
pub use snapshot::{
    ClientAddr, ConnSnapshot, Counters, CustomHistogram, CustomMetricSnapshot, GuardEvent,
    GuardKind, GuardsReport, GuardsSnapshot, HistogramSnapshot, KillCounts, KillRecord,
    KilledRequest, LastReloadSnapshot, LastRequestSnapshot, ListenQueueSnapshot, RecycleCounts,
    RequestSnapshot, SlotGuards, SlotSnapshot, Snapshot, StatusCounts, ThreadSnapshot, Totals,
    WorkerValue,
};
pub use upgrade::{
    MasterInfo, UpgradeCounts, UpgradeOutcomeKind, UpgradeRecord, MASTER_STATUS_KEYS,
};
pub use writer::{ConnGuard, RequestGuard, SlotWriter};

use raw::layout::{Header, Registry, Slot};
pub(crate) use segment::{load_acquire, Segment};

pub use crate::limits::MAX_SLOTS;

/// Lifecycle state of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SlotState {
    /// Never used.
    Empty,
    /// Worker spawned, not ready yet.
    Starting,
    /// Worker serving.
    Ready,
    /// Worker finishing its requests before it exits.
    Draining,
    /// Worker gone (waiting for a respawn, or retired).
    Dead,
}

impl SlotState {
    pub(crate) fn to_raw(self) -> u64 {
        match self {
            Self::Empty => 0,
            Self::Starting => 1,
            Self::Ready => 2,
            Self::Draining => 3,
            Self::Dead => 4,
        }
    }

    /// Decodes a raw value; anything unknown reads as `Dead` (a corrupt slot is not serving).
    pub(crate) fn from_raw(v: u64) -> Self {
        match v {
            0 => Self::Empty,
            1 => Self::Starting,
            2 => Self::Ready,
            3 => Self::Draining,
            _ => Self::Dead,
        }
    }

    /// Lowercase name, as used in metrics labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Draining => "draining",
            Self::Dead => "dead",
        }
    }
}

/// Errors of the scoreboard segment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScoreboardError {
    /// Creating, opening or mapping the segment file failed.
    #[error("scoreboard {path}: {source}")]
    Io {
        /// The segment file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is smaller than the header or than the slots its header announces.
    #[error("scoreboard is truncated or too small: {len} bytes, need {need}")]
    TooSmall {
        /// File size.
        len: u64,
        /// Size needed.
        need: u64,
    },
    /// The file does not start with the scoreboard magic: not a flora-cluster segment.
    #[error("not a flora-cluster scoreboard (bad magic {0:#018x})")]
    BadMagic(u64),
    /// The segment was written by a build with another layout version.
    #[error(
        "scoreboard layout version {found} is not supported (this build reads version {expected})"
    )]
    Version {
        /// Version in the file.
        found: u64,
        /// Version of this build.
        expected: u64,
    },
    /// Version matches but sizes or layout hash do not: a corrupt header or a foreign build.
    #[error("scoreboard header is corrupt or from another build: {0}")]
    Layout(String),
    /// The file system or memory cannot hold the whole segment.
    #[error("not enough space for the scoreboard in {place}: {need} bytes needed ({source}); give it a larger tmpfs or fewer --slots")]
    NoSpace {
        /// The directory (or `<memfd>` for the master's anonymous segment).
        place: PathBuf,
        /// Bytes the segment needs.
        need: u64,
        /// The cause (`ENOSPC`, `ENOMEM`).
        #[source]
        source: io::Error,
    },
    /// Slot count out of range.
    #[error("invalid slot count {0} (1..={MAX_SLOTS})")]
    SlotCount(usize),
    /// Slot index out of range.
    #[error("slot {index} does not exist (the segment has {count} slots)")]
    NoSuchSlot {
        /// Index asked for.
        index: usize,
        /// Slots in the segment.
        count: usize,
    },
    /// A segment handed over by another master cannot be adopted (a master upgrade).
    #[error("cannot adopt the handed-over scoreboard: {0}")]
    NotAdoptable(String),
}

type Result<T, E = ScoreboardError> = std::result::Result<T, E>;

/// A mapped scoreboard segment, read-write. Cheap to clone (shared mapping).
///
/// The process that created it (the master, or a standalone worker) keeps the truth of the
/// header, the registry and the master-written slot fields in its own memory and never
/// reads them back from the segment; its [`Scoreboard::snapshot`] shows that truth.
#[derive(Debug, Clone)]
pub struct Scoreboard {
    inner: Arc<Segment>,
}

/// A mapped scoreboard segment, read-only: it can take snapshots and nothing else (no writer,
/// no registration). Cheap to clone.
#[derive(Debug, Clone)]
pub struct ScoreboardReader {
    inner: Arc<Segment>,
}

impl ScoreboardReader {
    /// Number of slots.
    pub fn slot_count(&self) -> usize {
        self.inner.slot_count()
    }

    /// Instance name stored in the header.
    pub fn name(&self) -> String {
        strings::read(&self.inner.header().name).0
    }

    /// Reads every slot into an owned, consistent-per-entry [`Snapshot`].
    pub fn snapshot(&self) -> Snapshot {
        snapshot::take(&self.inner)
    }
}

impl Scoreboard {
    /// Creates a new segment file at `path` (mode 0600, must not exist, not followed through a
    /// symlink) with `slots` slots, every page allocated now.
    ///
    /// # Errors
    /// [`ScoreboardError::SlotCount`] for 0 or more than [`MAX_SLOTS`] slots,
    /// [`ScoreboardError::NoSpace`] when the file system cannot hold it, [`ScoreboardError::Io`]
    /// when the file exists or cannot be created and mapped.
    pub fn create(path: &Path, name: &str, slots: usize) -> Result<Self> {
        Ok(Self::wrap(Segment::create_file(path, name, slots, 0)?))
    }

    /// Creates an anonymous segment (a `memfd`) with `slots` slots, every page allocated now
    /// and its size sealed: whoever holds its descriptor can write into it but never shrink or
    /// grow it. The master's segment; readers reach it through `/proc/<pid>/fd/<n>`.
    ///
    /// ```
    /// use flora_cluster::scoreboard::Scoreboard;
    /// let sb = Scoreboard::create_sealed("web", 2).unwrap();
    /// assert_eq!(sb.snapshot().slots.len(), 2);
    /// ```
    ///
    /// # Errors
    /// As [`Scoreboard::create`].
    pub fn create_sealed(name: &str, slots: usize) -> Result<Self> {
        Ok(Self::wrap(Segment::create_sealed(name, slots, 0)?))
    }

    fn wrap(seg: Segment) -> Self {
        Self {
            inner: Arc::new(seg),
        }
    }

    /// Attaches read-write to a segment whose descriptor this process inherited, validating
    /// its header.
    ///
    /// # Errors
    /// Any [`ScoreboardError`] of validation: the descriptor must be a valid segment.
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        Segment::attach_by_header(File::from(fd), Path::new("<inherited fd>"), false)
            .map(Self::wrap)
    }

    /// Attaches read-write to an inherited segment by the layout its master announced
    /// (workers): the header, which any worker could scribble, is not consulted.
    ///
    /// # Errors
    /// [`ScoreboardError::Layout`] when the master was built with another layout,
    /// [`ScoreboardError::TooSmall`] or [`ScoreboardError::Io`] for a descriptor that is not it.
    pub fn from_fd_with_layout(fd: OwnedFd, layout: SegmentLayout) -> Result<Self> {
        Segment::attach_by_layout(File::from(fd), layout).map(Self::wrap)
    }

    /// Opens an existing segment read-only by path (CLI tools, tests, other readers). Never
    /// blocks: a FIFO or another special file is an error.
    ///
    /// # Errors
    /// [`ScoreboardError::Io`] when the file cannot be opened or is not a regular file;
    /// validation errors when it is not a valid segment of this layout.
    pub fn open_read_only(path: &Path) -> Result<ScoreboardReader> {
        Ok(ScoreboardReader {
            inner: Arc::new(Segment::open_read_only(path)?),
        })
    }

    /// A read-only handle on the same mapping.
    pub fn reader(&self) -> ScoreboardReader {
        ScoreboardReader {
            inner: self.inner.clone(),
        }
    }

    /// Number of slots.
    pub fn slot_count(&self) -> usize {
        self.inner.slot_count()
    }

    /// The segment's file descriptor (the master hands it to workers).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inner.file.as_fd()
    }

    /// The layout workers attach by ([`Scoreboard::from_fd_with_layout`]).
    pub fn layout(&self) -> SegmentLayout {
        self.inner.layout()
    }

    /// Instance name: the creator's, or the one stored in the header.
    pub fn name(&self) -> String {
        match &self.inner.truth {
            Some(t) => t.header().name.clone(),
            None => strings::read(&self.header().name).0,
        }
    }

    /// A writer for slot `index` (a worker writes only its own slot).
    ///
    /// # Errors
    /// [`ScoreboardError::NoSuchSlot`] when `index` is out of range.
    pub fn writer(&self, index: usize) -> Result<SlotWriter> {
        if index >= self.slot_count() {
            return Err(ScoreboardError::NoSuchSlot {
                index,
                count: self.slot_count(),
            });
        }
        Ok(SlotWriter::new(self.clone(), index))
    }

    /// Reads every slot into an owned, consistent-per-entry [`Snapshot`].
    pub fn snapshot(&self) -> Snapshot {
        snapshot::take(&self.inner)
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.inner
    }

    pub(crate) fn header(&self) -> &Header {
        self.inner.header()
    }

    pub(crate) fn slot(&self, index: usize) -> Option<&Slot> {
        self.inner.slot(index)
    }

    pub(crate) fn registry(&self) -> Option<&Registry> {
        self.inner.map.registry()
    }

    /// Rewrites the header from the creator's truth (master; see [`Segment::restamp`]).
    pub(crate) fn restamp(&self) {
        self.inner.restamp();
    }
}

/// Monotonic clock in ns (CLOCK_MONOTONIC: system-wide, so comparable across processes).
/// A vDSO call, no syscall.
pub(crate) fn mono_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => (ts.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec() as u64),
        Err(_) => 0,
    }
}

/// The clock of the tracking hot path: `CLOCK_MONOTONIC` nanoseconds, read from the CPU's
/// time-stamp counter once the reads have calibrated it (where the kernel uses the TSC as its
/// clocksource; `clock_gettime` otherwise, or with `FLORA_CLOCK=monotonic`). Request start and
/// end times and connection times in the segment are on this clock.
///
/// ```
/// let t0 = flora_cluster::scoreboard::now_ns();
/// let t1 = flora_cluster::scoreboard::now_ns();
/// assert!(t1 + 1_000_000 >= t0);
/// ```
pub fn now_ns() -> u64 {
    clock::fast_ns()
}

/// Wall clock in ms since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad");
        std::fs::write(&bad, vec![0xabu8; 4096]).unwrap();
        assert!(matches!(
            Scoreboard::open_read_only(&bad),
            Err(ScoreboardError::BadMagic(_))
        ));
        std::fs::write(&bad, b"short").unwrap();
        assert!(matches!(
            Scoreboard::open_read_only(&bad),
            Err(ScoreboardError::TooSmall { .. })
        ));
        let good = dir.path().join("good");
        let sb = Scoreboard::create(&good, "t", 3).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        std::fs::write(&bad, &bytes[..bytes.len() - 100]).unwrap();
        assert!(matches!(
            Scoreboard::open_read_only(&bad),
            Err(ScoreboardError::TooSmall { .. })
        ));
        let mut other = bytes.clone();
        other[8] = 99;
        std::fs::write(&bad, &other).unwrap();
        assert!(matches!(
            Scoreboard::open_read_only(&bad),
            Err(ScoreboardError::Version { found: 99, .. })
        ));
        let mut huge = bytes.clone();
        huge[40..48].copy_from_slice(&1_000_000u64.to_le_bytes());
        std::fs::write(&bad, &huge).unwrap();
        assert!(matches!(
            Scoreboard::open_read_only(&bad),
            Err(ScoreboardError::Layout(_))
        ));
        assert_eq!(Scoreboard::open_read_only(&good).unwrap().slot_count(), 3);
        assert_eq!(sb.name(), "t");
    }

    #[test]
    fn segment_is_private_and_exclusive() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let _sb = Scoreboard::create(&p, "t", 1).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(Scoreboard::create(&p, "t", 1).is_err());
        assert!(matches!(
            Scoreboard::create(&dir.path().join("z"), "t", 0),
            Err(ScoreboardError::SlotCount(0))
        ));
    }
}
