//! Unit tests of the route table: claiming, the cap, and garbage in the table.
use std::sync::atomic::Ordering::Relaxed;

use super::*;
use crate::scoreboard::raw::layout::ROUTE_CELLS;

fn segment(slots: usize, routes: usize) -> (tempfile::TempDir, Scoreboard) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sb =
        Scoreboard::create_with_routes(&dir.path().join("s"), "t", slots, routes).expect("segment");
    (dir, sb)
}

/// Finishes one request on slot `slot` with `route` and `status`.
fn serve(sb: &Scoreboard, slot: usize, route: &str, status: u16) {
    let conn = sb
        .writer(slot)
        .expect("writer")
        .conn_open(([127, 0, 0, 1], 1).into());
    let mut req = conn.request_begin("GET", "/raw/path", 11);
    req.set_route(route);
    req.finish(status, 0);
}

fn counts(sb: &Scoreboard) -> Vec<(String, u64)> {
    sb.snapshot()
        .routes
        .iter()
        .map(|r| (r.route.clone(), r.codes.total()))
        .collect()
}

fn pairs(want: &[(&str, u64)]) -> Vec<(String, u64)> {
    want.iter().map(|(r, n)| (r.to_string(), *n)).collect()
}

#[test]
fn routes_are_claimed_once_and_counted_across_workers() {
    let (_dir, sb) = segment(2, 4);
    serve(&sb, 0, "/users/{id}", 200);
    serve(&sb, 1, "/users/{id}", 404);
    serve(&sb, 0, "/health", 200);
    // Another process's cache: a second handle on the same file finds the entry claimed.
    let other = Scoreboard::wrap(
        Segment::attach_by_layout(
            std::fs::File::from(sb.fd().try_clone_to_owned().expect("dup")),
            sb.layout(),
        )
        .expect("attach"),
    );
    serve(&other, 1, "/users/{id}", 200);
    assert_eq!(counts(&sb), pairs(&[("/health", 1), ("/users/{id}", 3)]));
    let snap = sb.snapshot();
    let users = &snap.routes[1];
    assert_eq!(
        users.codes.seen().collect::<Vec<_>>(),
        [("200", 2), ("404", 1)]
    );
    assert_eq!(users.histogram.count(), 3);
    let table = &sb.inner.map;
    let names: Vec<_> = (0..4)
        .map(|i| table.route_name(i).expect("entry").state.load(Relaxed))
        .collect();
    assert_eq!(
        names,
        [PUBLISHED, PUBLISHED, FREE, FREE],
        "one entry per name"
    );
    assert_eq!(snap.totals.counters.route_overflow, 0);
}

#[test]
fn a_full_table_counts_new_routes_as_other() {
    let (_dir, sb) = segment(1, 2);
    for i in 0..50 {
        serve(&sb, 0, &format!("/scan/{i}"), 404);
    }
    // The two routes that fit keep counting; every other one is "other".
    serve(&sb, 0, "/scan/1", 200);
    assert_eq!(
        counts(&sb),
        pairs(&[("/scan/0", 1), ("/scan/1", 2), (OVERFLOW_ROUTE, 48)])
    );
    let snap = sb.snapshot();
    assert_eq!(snap.totals.counters.route_overflow, 48);
    assert_eq!(snap.route_limit, 2);
}

#[test]
fn no_route_or_routes_off_count_nothing_per_route() {
    let (_dir, sb) = segment(1, 0);
    serve(&sb, 0, "/users/{id}", 200);
    let snap = sb.snapshot();
    assert!(snap.routes.is_empty());
    // Still shown with the last request.
    let last = snap.slots[0].last_request.as_ref().expect("last");
    assert_eq!(last.route, "/users/{id}");
    let (_dir, sb) = segment(1, 3);
    serve(&sb, 0, "", 200);
    assert!(counts(&sb).is_empty(), "an empty route is no route");
}

#[test]
fn garbage_in_the_table_is_validated_merged_and_bounded() {
    let (_dir, sb) = segment(1, 6);
    serve(&sb, 0, "/a", 200);
    let map = &sb.inner.map;
    let scribble = |i: usize, state: u64, len: u64, word: u64| {
        let e = map.route_name(i).expect("entry");
        e.name.len.store(len, Relaxed);
        e.name.words[0].store(word, Relaxed);
        e.state.store(state, Relaxed);
    };
    // A duplicate of "/a" (merged), invalid UTF-8 (dropped), a huge length (clamped, and
    // then invalid: dropped), a half-written entry (skipped), an empty name (dropped).
    scribble(1, PUBLISHED, 2, u64::from_le_bytes(*b"/a\0\0\0\0\0\0"));
    scribble(2, PUBLISHED, 2, 0xffff);
    scribble(3, PUBLISHED, u64::MAX, 0xff);
    scribble(4, WRITING, 2, u64::from_le_bytes(*b"/b\0\0\0\0\0\0"));
    scribble(5, PUBLISHED, 0, 0);
    for (r, n) in [(1, 5), (2, 7), (3, 9)] {
        let cells = map.route_cells(0, 0, r).expect("cells");
        cells.cells[0].store(n, Relaxed);
    }
    assert_eq!(counts(&sb), pairs(&[("/a", 1 + 5)]));
    // A worker with a fresh cache finds the published "/a" and does not claim the garbage.
    let fresh = Segment::attach_by_layout(
        std::fs::File::from(sb.fd().try_clone_to_owned().expect("dup")),
        sb.layout(),
    )
    .expect("attach");
    assert_eq!(id(&fresh, "/a"), 1);
    assert_eq!(
        id(&fresh, "/c"),
        7,
        "table full of garbage: the overflow route"
    );
    assert_eq!(
        ROUTE_CELLS,
        crate::scoreboard::raw::layout::STATUS_COUNTERS + 18
    );
}

#[test]
fn long_names_are_truncated_at_a_character() {
    let (_dir, sb) = segment(1, 2);
    let long = "é".repeat(40);
    serve(&sb, 0, &long, 200);
    let snap = sb.snapshot();
    assert_eq!(snap.routes[0].route, "é".repeat(32));
    serve(&sb, 0, &format!("{long}x"), 200);
    assert_eq!(counts(&sb), pairs(&[(&"é".repeat(32), 2)]));
}
