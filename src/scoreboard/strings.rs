//! Strings stored in atomic words: truncation at a char boundary on write, clamped and
//! lossy decoding on read (a slot may hold any bytes).

use std::sync::atomic::Ordering::Relaxed;

use super::raw::layout::AtomicStr;

const TRUNCATED: u64 = 1 << 63;

/// Longest prefix of `s` that fits in `max` bytes without splitting a character.
pub(crate) fn truncate_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Writes `s` (truncated to fit) into `dst`. Relaxed: callers publish through a seqlock or
/// before the magic.
pub(crate) fn write<const W: usize>(dst: &AtomicStr<W>, s: &str) {
    let kept = truncate_at_char(s, W * 8);
    let mut chunks = kept.as_bytes().chunks_exact(8);
    let mut words = dst.words.iter();
    for (chunk, word) in (&mut chunks).zip(&mut words) {
        word.store(
            u64::from_le_bytes(chunk.try_into().unwrap_or_default()),
            Relaxed,
        );
    }
    // The tail (most methods and many paths are shorter than a word): shifts, no copy call.
    let tail = chunks.remainder();
    if let (false, Some(word)) = (tail.is_empty(), words.next()) {
        let packed = tail
            .iter()
            .rev()
            .fold(0u64, |w, &b| (w << 8) | u64::from(b));
        word.store(packed, Relaxed);
    }
    let flag = if kept.len() < s.len() { TRUNCATED } else { 0 };
    dst.len.store(kept.len() as u64 | flag, Relaxed);
}

/// Whether `cell` holds exactly `s` (not truncated), without allocating.
pub(crate) fn equals<const W: usize>(cell: &AtomicStr<W>, s: &str) -> bool {
    let bytes = s.as_bytes();
    if cell.len.load(Relaxed) != bytes.len() as u64 || bytes.len() > W * 8 {
        return false;
    }
    bytes.chunks(8).zip(&cell.words).all(|(chunk, word)| {
        let mut buf = [0u8; 8];
        buf[..chunk.len()].copy_from_slice(chunk);
        let stored = word.load(Relaxed).to_le_bytes();
        stored[..chunk.len()] == buf[..chunk.len()]
    })
}

/// Reads a string back: `(text, truncated)`. Lengths are clamped and invalid UTF-8 replaced.
pub(crate) fn read<const W: usize>(src: &AtomicStr<W>) -> (String, bool) {
    let raw_len = src.len.load(Relaxed);
    let truncated = raw_len & TRUNCATED != 0;
    let len = ((raw_len & !TRUNCATED) as usize).min(W * 8);
    let mut bytes = Vec::with_capacity(len);
    for word in &src.words {
        if bytes.len() >= len {
            break;
        }
        bytes.extend_from_slice(&word.load(Relaxed).to_le_bytes());
    }
    bytes.truncate(len);
    (String::from_utf8_lossy(&bytes).into_owned(), truncated)
}

/// Reads a stored string strictly: `None` when its bytes are not UTF-8 (a value other
/// processes may have scribbled and that must not be shown altered). The length is clamped.
pub(crate) fn read_strict<const W: usize>(src: &AtomicStr<W>) -> Option<String> {
    let len = ((src.len.load(Relaxed) & !TRUNCATED) as usize).min(W * 8);
    let mut bytes: Vec<u8> = src
        .words
        .iter()
        .flat_map(|w| w.load(Relaxed).to_le_bytes())
        .collect();
    bytes.truncate(len);
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::AtomicU64;

    fn cell<const W: usize>() -> AtomicStr<W> {
        AtomicStr {
            len: AtomicU64::new(0),
            words: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    #[test]
    fn table() {
        let c = cell::<2>();
        for (input, want, trunc) in [
            ("", "", false),
            ("GET", "GET", false),
            ("0123456789abcdef", "0123456789abcdef", false),
            ("0123456789abcdefX", "0123456789abcdef", true),
            ("ééééééééé", "éééééééé", true),
            ("0123456789abcdeé", "0123456789abcde", true),
        ] {
            write(&c, input);
            assert_eq!(read(&c), (want.to_string(), trunc), "input {input:?}");
        }
    }

    #[test]
    fn equality_without_allocation() {
        let c = cell::<2>();
        write(&c, "user");
        assert!(equals(&c, "user"));
        assert!(!equals(&c, "use"));
        assert!(!equals(&c, "users"));
        write(&c, "0123456789abcdefXYZ"); // truncated: equal to nothing of its own length
        assert!(!equals(&c, "0123456789abcdefXYZ"));
        assert!(!equals(&c, "0123456789abcdef"));
    }

    #[test]
    fn garbage_reads_safely() {
        let c = cell::<2>();
        c.len.store(u64::MAX, Relaxed);
        c.words[0].store(u64::MAX, Relaxed);
        let (s, t) = read(&c);
        assert!(t);
        assert!(s.chars().count() <= 16);
    }

    proptest! {
        #[test]
        fn roundtrip_is_a_prefix(s in ".{0,40}") {
            let c = cell::<3>();
            write(&c, &s);
            let (back, truncated) = read(&c);
            prop_assert!(s.starts_with(&back));
            prop_assert!(back.len() <= 24);
            prop_assert_eq!(truncated, back.len() < s.len());
        }
    }
}
