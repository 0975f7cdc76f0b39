//! Mapping the segment and every pointer-to-reference cast into it: [`Mapping`] checks the
//! bounds and alignment first, then hands out `&Header`, `&Slot` and `&Registry` tied to
//! itself, so no reference outlives the mapping.

use std::fs::File;

use memmap2::{MmapOptions, MmapRaw};

use super::layout::{registry_offset, segment_size, Header, Registry, ShmSafe, Slot};

/// A mapped segment. Owns the mapping; `header()` and `slot()` hand out references tied to it.
pub struct Mapping {
    map: MmapRaw,
    slots: usize,
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("len", &self.map.len())
            .field("slots", &self.slots)
            .finish()
    }
}

impl Mapping {
    /// Maps `file` (shared). `len` must be the file's size, checked by the caller to be at
    /// least `segment_size(slots)`; `read_only` maps it without write access.
    ///
    /// # Errors
    /// The `mmap` error, or `InvalidInput` when `len` is too small for `slots`.
    pub fn map(file: &File, len: usize, slots: usize, read_only: bool) -> std::io::Result<Self> {
        if len < segment_size(slots) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "segment smaller than its slots",
            ));
        }
        let mut opts = MmapOptions::new();
        opts.len(segment_size(slots));
        let map = if read_only {
            opts.map_raw_read_only(file)?
        } else {
            opts.map_raw(file)?
        };
        Ok(Self { map, slots })
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
        Ok(Self { map, slots: 0 })
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
        // SAFETY: `Mapping::map` refused mappings shorter than `segment_size(slots)`, so for
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
        let (_dir, file) = file_of(segment_size(2));
        assert!(Mapping::map(&file, segment_size(2) - 1, 2, false).is_err());
        assert!(Mapping::map_header(&file, std::mem::size_of::<Header>() - 1).is_err());
        let map = Mapping::map(&file, segment_size(2), 2, true).expect("map");
        assert!(map.slot(1).is_some());
        assert!(map.slot(2).is_none());
        assert!(map.registry().is_some());
        let head = Mapping::map_header(&file, segment_size(2)).expect("header");
        assert!(head.registry().is_none());
        assert_eq!((head.slot_count(), head.slot(0).is_none()), (0, true));
    }
}
