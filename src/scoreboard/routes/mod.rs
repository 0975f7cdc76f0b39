//! Per-route metrics: a cluster-wide table of route names in the segment, claimed by any
//! worker with a CAS, and per-slot cells indexed by route.
//!
//! - Writers resolve a route name to an id once per process: the [`Cache`] answers
//!   repeated names without touching the table; a miss searches the table and claims a free
//!   entry. When the table is full the cache is filled with every published name, and any
//!   other name counts as the overflow route (`route="other"`) without searching again.
//! - Readers trust nothing in the table: a name must be published, UTF-8 and not empty;
//!   entries with the same name (two workers that claimed one at once) are merged, and
//!   every label is escaped by its encoder.
//!
//! Route ids in a [`super::RequestGuard`]: 0 = none (nothing counted per route), `i + 1` =
//! table entry `i`, `limit + 1` = the overflow route.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::Mutex;

use serde::Serialize;

use super::raw::layout::{RouteCells, HISTOGRAM_BUCKETS, LANES, ROUTE_BYTES, STATUS_COUNTERS};
use super::segment::{load_acquire, Segment};
use super::snapshot::{HistogramSnapshot, StatusCounts};
use super::{strings, Result, Scoreboard};

/// Label of the overflow route.
pub const OVERFLOW_ROUTE: &str = "other";
/// Default route limit of the master (`--route-limit`).
pub const DEFAULT_ROUTE_LIMIT: usize = 64;
pub use super::raw::layout::MAX_ROUTES;

/// Entry states (see [`super::raw::layout::RouteName`]).
const FREE: u64 = 0;
const WRITING: u64 = 1;
const PUBLISHED: u64 = 2;
/// Spins on an entry another worker is writing before passing it by.
const SPINS: usize = 1000;

/// Route ids this process resolved (per segment).
#[derive(Debug, Default)]
pub(crate) struct Cache(Mutex<CacheInner>);

#[derive(Debug, Default)]
struct CacheInner {
    ids: HashMap<Box<str>, u32>,
    /// The table had no free entry: it can no longer change, and `ids` holds all of it.
    full: bool,
}

/// The route id of `name` in `seg` (0 when route metrics are off or `name` is empty).
pub(crate) fn id(seg: &Segment, name: &str) -> u32 {
    let limit = seg.map.route_limit();
    let name = strings::truncate_at_char(name, ROUTE_BYTES);
    if limit == 0 || name.is_empty() {
        return 0;
    }
    let mut cache = seg
        .routes
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(&id) = cache.ids.get(name) {
        return id;
    }
    let overflow = limit as u32 + 1;
    if cache.full {
        return overflow;
    }
    match find_or_claim(seg, name) {
        Some(i) => {
            let id = i as u32 + 1;
            cache.ids.insert(name.into(), id);
            id
        }
        None => {
            cache.full = true;
            for (i, n) in published(seg) {
                cache.ids.entry(n.into()).or_insert(i as u32 + 1);
            }
            cache.ids.get(name).copied().unwrap_or(overflow)
        }
    }
}

/// The entry holding `name`, or a free one claimed for it; `None` when the table is full.
fn find_or_claim(seg: &Segment, name: &str) -> Option<usize> {
    for i in 0..seg.map.route_limit() {
        let e = seg.map.route_name(i)?;
        let mut state = load_acquire(&e.state);
        if state == FREE {
            match e.state.compare_exchange(FREE, WRITING, Acquire, Acquire) {
                Ok(_) => {
                    strings::write(&e.name, name);
                    e.state.store(PUBLISHED, Release);
                    return Some(i);
                }
                Err(now) => state = now,
            }
        }
        // Another worker is writing it: wait a little, it may be the same name.
        for _ in 0..SPINS {
            if state != WRITING {
                break;
            }
            std::hint::spin_loop();
            state = load_acquire(&e.state);
        }
        if state == PUBLISHED && strings::equals(&e.name, name) {
            return Some(i);
        }
    }
    None
}

/// Published entries with a valid name: `(entry, name)`.
fn published(seg: &Segment) -> Vec<(usize, String)> {
    (0..seg.map.route_limit())
        .filter_map(|i| {
            let e = seg.map.route_name(i)?;
            if load_acquire(&e.state) != PUBLISHED {
                return None;
            }
            strings::read_strict(&e.name)
                .filter(|n| !n.is_empty())
                .map(|n| (i, n))
        })
        .collect()
}

/// One route's requests, summed over every slot (counters of dead and retired workers
/// included, so they never go down).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteSnapshot {
    /// The route template, or [`OVERFLOW_ROUTE`].
    pub route: String,
    /// Finished requests by status.
    pub codes: StatusCounts,
    /// Request durations.
    pub histogram: HistogramSnapshot,
}

/// Every route with its counts, by name (duplicates merged), the overflow route last if any
/// request was counted there. Empty when route metrics are off.
pub(crate) fn read(seg: &Segment) -> Vec<RouteSnapshot> {
    let limit = seg.map.route_limit();
    if limit == 0 {
        return Vec::new();
    }
    let mut by_name: BTreeMap<String, RouteSnapshot> = BTreeMap::new();
    let mut overflow = empty(OVERFLOW_ROUTE);
    for (i, name) in published(seg) {
        let r = by_name.entry(name.clone()).or_insert_with(|| empty(&name));
        add_cells(seg, i, r);
    }
    add_cells(seg, limit, &mut overflow);
    // An app that named a route "other" shares the overflow route's series.
    if let Some(named) = by_name.remove(OVERFLOW_ROUTE) {
        merge(&mut overflow, &named);
    }
    let mut out: Vec<RouteSnapshot> = by_name.into_values().collect();
    if overflow.codes.total() != 0 {
        out.push(overflow);
    }
    out
}

fn empty(route: &str) -> RouteSnapshot {
    RouteSnapshot {
        route: route.to_string(),
        codes: StatusCounts::default(),
        histogram: HistogramSnapshot::empty(),
    }
}

fn merge(into: &mut RouteSnapshot, from: &RouteSnapshot) {
    for (a, b) in into.codes.0.iter_mut().zip(&from.codes.0) {
        *a = a.wrapping_add(*b);
    }
    into.histogram.add(&from.histogram);
}

/// Adds route `r`'s cells of every slot and lane.
fn add_cells(seg: &Segment, r: usize, into: &mut RouteSnapshot) {
    let mut sum_ns = 0u64;
    for slot in 0..seg.slot_count() {
        for lane in 0..LANES {
            let Some(c) = seg.map.route_cells(slot, lane, r) else {
                continue;
            };
            let (codes, rest) = c.cells.split_at(STATUS_COUNTERS);
            let (buckets, sum) = rest.split_at(HISTOGRAM_BUCKETS);
            let add = |a: &mut u64, cell: &std::sync::atomic::AtomicU64| {
                *a = a.wrapping_add(cell.load(Relaxed));
            };
            into.codes
                .0
                .iter_mut()
                .zip(codes)
                .for_each(|(a, c)| add(a, c));
            let counts = into.histogram.counts.iter_mut();
            counts.zip(buckets).for_each(|(a, c)| add(a, c));
            sum.iter().for_each(|c| add(&mut sum_ns, c));
        }
    }
    into.histogram.sum_seconds += sum_ns as f64 / 1e9;
}

/// Where a request's route counts go: the cells of route id `id` (see the module docs).
pub(crate) fn cells(seg: &Segment, slot: usize, lane: usize, id: u32) -> Option<&RouteCells> {
    let route = (id as usize).checked_sub(1)?;
    seg.map.route_cells(slot, lane, route)
}

/// Whether route id `id` is the overflow route.
pub(crate) fn is_overflow(seg: &Segment, id: u32) -> bool {
    id as usize == seg.map.route_limit() + 1
}

impl Scoreboard {
    /// As [`Scoreboard::create`], with per-route metrics for up to `routes` distinct routes
    /// (0 = off).
    ///
    /// ```
    /// use flora_cluster::scoreboard::Scoreboard;
    /// let dir = tempfile::tempdir().unwrap();
    /// let sb = Scoreboard::create_with_routes(&dir.path().join("s"), "web", 1, 8).unwrap();
    /// let conn = sb.writer(0).unwrap().conn_open(([127, 0, 0, 1], 1).into());
    /// let mut req = conn.request_begin("GET", "/users/42", 11);
    /// req.set_route("/users/{id}");
    /// req.finish(200, 0);
    /// assert_eq!(sb.snapshot().routes[0].route, "/users/{id}");
    /// ```
    ///
    /// # Errors
    /// As [`Scoreboard::create`]; [`super::ScoreboardError::Layout`] above [`MAX_ROUTES`].
    pub fn create_with_routes(
        path: &Path,
        name: &str,
        slots: usize,
        routes: usize,
    ) -> Result<Self> {
        Ok(Self::wrap(Segment::create_file(path, name, slots, routes)?))
    }

    /// As [`Scoreboard::create_sealed`], with per-route metrics for up to `routes` routes.
    ///
    /// # Errors
    /// As [`Scoreboard::create_with_routes`].
    pub fn create_sealed_with_routes(name: &str, slots: usize, routes: usize) -> Result<Self> {
        Ok(Self::wrap(Segment::create_sealed(name, slots, routes)?))
    }

    /// Routes this segment can count (0 = per-route metrics off).
    pub fn route_limit(&self) -> usize {
        self.inner.map.route_limit()
    }
}

#[cfg(test)]
mod tests;
