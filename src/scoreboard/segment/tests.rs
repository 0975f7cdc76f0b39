//! Unit tests of the segment: seals, restamping, attaching, refusing odd files.
use super::*;

#[test]
fn sealed_segment_cannot_be_resized() {
    let seg = Segment::create_sealed("t", 2, 0).unwrap();
    let len = seg.file.metadata().unwrap().len();
    assert_eq!(len, layout::segment_size(2, 0) as u64);
    assert!(seg.file.set_len(0).is_err(), "shrink must be refused");
    assert!(seg.file.set_len(len * 2).is_err(), "grow must be refused");
    assert_eq!(seg.file.metadata().unwrap().len(), len);
    let seals = nix::fcntl::fcntl(&seg.file, FcntlArg::F_GET_SEALS).unwrap();
    let want = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
    assert_eq!(seals & want.bits(), want.bits());
}

#[test]
fn scribbled_header_is_restamped() {
    let seg = Segment::create_sealed("t", 3, 0).unwrap();
    let h = seg.header();
    h.magic.store(0, Ordering::Relaxed);
    h.slot_count.store(1_000_000, Ordering::Relaxed);
    assert!(validate_header(h, layout::segment_size(3, 0) as u64).is_err());
    seg.restamp();
    assert_eq!(
        validate_header(seg.header(), layout::segment_size(3, 0) as u64).unwrap(),
        (3, 0)
    );
    assert_eq!(strings::read(&seg.header().name).0, "t");
}

#[test]
fn route_limit_is_in_the_layout_and_the_header() {
    let seg = Segment::create_sealed("t", 2, 5).unwrap();
    let len = seg.file.metadata().unwrap().len();
    assert_eq!(len, layout::segment_size(2, 5) as u64);
    assert_eq!(validate_header(seg.header(), len).unwrap(), (2, 5));
    let layout = seg.layout();
    assert_eq!(layout.routes, 5);
    let dup = File::from(seg.file.as_fd().try_clone_to_owned().unwrap());
    assert_eq!(
        Segment::attach_by_layout(dup, layout)
            .unwrap()
            .map
            .route_limit(),
        5
    );
    // A scribbled limit that does not fit the file is refused, then healed.
    seg.header().route_limit.store(1000, Ordering::Relaxed);
    assert!(validate_header(seg.header(), len).is_err());
    seg.restamp();
    assert_eq!(validate_header(seg.header(), len).unwrap(), (2, 5));
    assert!(Segment::create_sealed("t", 1, layout::MAX_ROUTES + 1).is_err());
}

#[test]
fn worker_attaches_by_layout_not_header() {
    let seg = Segment::create_sealed("t", 2, 0).unwrap();
    seg.header().magic.store(7, Ordering::Relaxed);
    let dup = File::from(seg.file.as_fd().try_clone_to_owned().unwrap());
    let layout = seg.layout();
    assert_eq!(SegmentLayout::decode(&layout.encode()), Some(layout));
    let w = Segment::attach_by_layout(dup, layout).unwrap();
    assert_eq!(w.slot_count(), 2);
    assert_eq!(
        SegmentLayout::decode("2:1f"),
        None,
        "the route limit is required"
    );
    assert_eq!(SegmentLayout::decode("2:1f:3:4"), None);
    let dup = File::from(seg.file.as_fd().try_clone_to_owned().unwrap());
    let other = SegmentLayout { hash: 1, ..layout };
    assert!(matches!(
        Segment::attach_by_layout(dup, other),
        Err(ScoreboardError::Layout(_))
    ));
}

#[test]
fn a_segment_file_another_user_can_shrink_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        return; // needs chown
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    drop(Segment::create_file(&p, "t", 1, 0).unwrap());
    Segment::open_read_only(&p).unwrap();
    let nobody = nix::unistd::Uid::from_raw(65534);
    nix::unistd::chown(&p, Some(nobody), None).unwrap();
    let err = Segment::open_read_only(&p).unwrap_err().to_string();
    assert!(err.contains("could shrink it"), "{err}");
    // The master's sealed memfd, reached through /proc, stays readable by anyone allowed.
    let seg = Segment::create_sealed("t", 1, 0).unwrap();
    use std::os::fd::AsRawFd;
    let via = format!("/proc/self/fd/{}", seg.file.as_raw_fd());
    nix::unistd::fchown(&seg.file, Some(nobody), None).unwrap();
    Segment::open_read_only(Path::new(&via)).unwrap();
}

#[test]
fn fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let err = Segment::open_read_only(&p).unwrap_err().to_string();
    assert!(err.contains("FIFO"), "{err}");
}
