//! Mapping the segment and every pointer-to-reference cast into it: [`Mapping`] checks the
//! bounds and alignment first, then hands out `&Header`, `&Slot` and `&Registry` tied to
//! itself, so no reference outlives the mapping.

use std::fs::File;

use memmap2::{MmapOptions, MmapRaw};

use super::layout::{
    registry_offset, route_cells_offset, route_table_offset, segment_size, Header, Registry,
    RouteCells, RouteName, ShmSafe, Slot, LANES,
};

/// A mapped segment. Owns the mapping; `header()` and `slot()` hand out references tied to it.
pub struct Mapping {
    map: MmapRaw,
    slots: usize,
    routes: usize,
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("len", &self.map.len())
            .field("slots", &self.slots)
            .field("routes", &self.routes)
            .finish()
    }
}

impl Mapping {
    /// Maps `file` (shared). `len` must be the file's size, checked by the caller to be at
    /// least `segment_size(slots, routes)`; `read_only` maps it without write access.
    ///
    /// # Errors
    /// The `mmap` error, or `InvalidInput` when `len` is too small for `slots` and `routes`.
    pub fn map(
        file: &File,
        len: usize,
        (slots, routes): (usize, usize),
        read_only: bool,
    ) -> std::io::Result<Self> {
        if len < segment_size(slots, routes) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "segment smaller than its slots",
            ));
        }
        let mut opts = MmapOptions::new();
        opts.len(segment_size(slots, routes));
        let map = if read_only {
            opts.map_raw_read_only(file)?
        } else {
            opts.map_raw(file)?
        };
        Ok(Self { map, slots, routes })
    }

    /// Maps just the header of `file` (read-only), to validate it before trusting its sizes.
    ///
    /// # Errors
    /// The `mmap` error, or `InvalidInput` when `len` is smaller than a header.
    pub fn map_header(file: &File, len: usize) -> std::io::Result<Self> {
        let header = std::mem::size_of::<Header>();
        if len < header {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "segment smaller than its header",
            ));
        }
        let map = MmapOptions::new().len(header).map_raw_read_only(file)?;
        Ok(Self {
            map,
            slots: 0,
            routes: 0,
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        self.view(0)
            .expect("a mapping always covers its header (checked in `map`)")
    }

    /// Slot `i`, or `None` when out of range.
    pub fn slot(&self, i: usize) -> Option<&Slot> {
        if i >= self.slots {
            return None;
        }
        let offset = std::mem::size_of::<Header>() + i * std::mem::size_of::<Slot>();
        // SAFETY: `Mapping::map` refused mappings shorter than `segment_size(slots, _)`, so for
        // i < slots the slot [offset, offset + size_of::<Slot>()) lies inside the mapping (this
        // is the tracking hot path: no second bounds check); the base is page aligned and the
        // header and slot sizes are multiples of the slot's 64-byte alignment; Slot is
        // ShmSafe (atomics only), so workers writing any bits into it from other processes
        // at the same time leave every value valid; the reference is tied to &self. The length
        // checked is the mapping's, never the header's that any worker can write, and the
        // master's segment is a sealed memfd that no worker can shrink under it.
        Some(unsafe { &*(self.map.as_ptr().add(offset) as *const Slot) })
    }

    /// A `T` at `offset`, when it lies inside the mapping and is aligned.
    fn view<T: ShmSafe>(&self, offset: usize) -> Option<&T> {
        let end = offset.checked_add(std::mem::size_of::<T>())?;
        if end > self.map.len() || offset % std::mem::align_of::<T>() != 0 {
            return None;
        }
        // SAFETY: [offset, end) lies inside the mapping (checked above); the base is page
        // aligned and the offset a multiple of T's alignment, so the pointer is aligned; T is
        // ShmSafe (only atomics, any bit pattern valid, so shared & access from several
        // processes is sound); the reference is tied to &self and so cannot outlive the map.
        Some(unsafe { &*(self.map.as_ptr().add(offset) as *const T) })
    }

    /// The custom-metric registry (`None` for a header-only mapping).
    pub fn registry(&self) -> Option<&Registry> {
        if self.slots == 0 {
            return None;
        }
        self.view(registry_offset(self.slots))
    }

    /// Entry `i` of the route table (`None` past the route limit).
    pub fn route_name(&self, i: usize) -> Option<&RouteName> {
        if i >= self.routes || self.slots == 0 {
            return None;
        }
        self.view(route_table_offset(self.slots) + i * std::mem::size_of::<RouteName>())
    }

    /// The cells of route `route` (`routes` = the overflow route) in `lane` of `slot`.
    pub fn route_cells(&self, slot: usize, lane: usize, route: usize) -> Option<&RouteCells> {
        if slot >= self.slots || lane >= LANES || route > self.routes || self.routes == 0 {
            return None;
        }
        let index = (slot * LANES + lane) * (self.routes + 1) + route;
        let offset =
            route_cells_offset(self.slots, self.routes) + index * std::mem::size_of::<RouteCells>();
        self.view(offset)
    }

    /// Routes the mapping has room for (0 = per-route metrics off).
    pub fn route_limit(&self) -> usize {
        self.routes
    }

    /// Number of slots mapped.
    pub fn slot_count(&self) -> usize {
        self.slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(len: usize) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("seg"))
            .expect("create");
        file.set_len(len as u64).expect("set_len");
        (dir, file)
    }

    #[test]
    fn short_files_are_refused_and_slots_are_bounded() {
        let (_dir, file) = file_of(segment_size(2, 3));
        assert!(Mapping::map(&file, segment_size(2, 3) - 1, (2, 3), false).is_err());
        assert!(Mapping::map_header(&file, std::mem::size_of::<Header>() - 1).is_err());
        let map = Mapping::map(&file, segment_size(2, 3), (2, 3), true).expect("map");
        assert!(map.route_name(2).is_some() && map.route_name(3).is_none());
        assert!(map.route_cells(1, 1, 3).is_some(), "the last cells fit");
        assert!(map.route_cells(2, 0, 0).is_none() && map.route_cells(0, 0, 4).is_none());
        assert!(map.slot(1).is_some());
        assert!(map.slot(2).is_none());
        assert!(map.registry().is_some());
        let head = Mapping::map_header(&file, segment_size(2, 3)).expect("header");
        assert!(head.registry().is_none());
        assert_eq!((head.slot_count(), head.slot(0).is_none()), (0, true));
    }
}
