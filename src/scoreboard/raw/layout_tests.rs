//! The layout pinned: sizes and offsets other builds and readers rely on.
use super::*;
use std::mem::{offset_of, size_of};

#[test]
fn layout_is_pinned() {
    assert_eq!(size_of::<Header>(), 2560);
    assert_eq!(offset_of!(Header, listen_queues), 512);
    assert_eq!(offset_of!(ListenQueueEntry, name), 48);
    assert_eq!(offset_of!(Header, magic), 0);
    assert_eq!(offset_of!(Header, version), 8);
    assert_eq!(offset_of!(Header, slot_count), 40);
    assert_eq!(offset_of!(Header, name), 88);
    assert_eq!(size_of::<ConnEntry>(), 640);
    assert_eq!(offset_of!(ConnEntry, method), 88);
    assert_eq!(offset_of!(ConnEntry, path), 112);
    assert_eq!(offset_of!(ConnEntry, route), 248);
    assert_eq!(offset_of!(ConnEntry, infos), 320);
    assert_eq!(offset_of!(Header, route_limit), 496);
    assert_eq!(offset_of!(Slot, conn_bitmap), 56);
    assert_eq!(offset_of!(Slot, counters), 64);
    assert_eq!(offset_of!(Slot, last), 64 + 2 * 512);
    assert_eq!(offset_of!(Slot, conns), 64 + 2 * 512 + 2 * 320);
    assert_eq!(offset_of!(Slot, custom), 1728 + 64 * 640);
    assert_eq!(size_of::<Slot>(), 1728 + 64 * 640 + 1024 * 8);
    assert_eq!(offset_of!(SlotCounters, status), 56);
    assert_eq!(offset_of!(SlotCounters, histogram), 56 + 33 * 8);
    assert_eq!(offset_of!(SlotCounters, tls_handshake_failures), 464);
    assert_eq!(offset_of!(SlotCounters, route_overflow), 472);
    assert_eq!(offset_of!(SlotCounters, owner), 504);
    assert_eq!(segment_size(2, 0), route_table_offset(2));
    assert_eq!(
        segment_size(2, 10),
        route_table_offset(2) + 10 * 80 + 2 * 2 * 11 * ROUTE_CELLS * 8
    );
}

#[test]
fn magic_spells_floras() {
    assert_eq!(&MAGIC.to_le_bytes(), b"FLORASB\0");
    assert_ne!(layout_hash(), 0);
}
