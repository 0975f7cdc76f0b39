//! Byte sizes as flags and config values take them: `4096`, `512M`, `1G`, `100MiB`, `1.5GiB`.
//! `K`, `M`, `G`, `T` (and `KB` … `TB`) count in thousands; `KiB` … `TiB` in 1024s.

use serde::{de, Deserializer};

/// The unit suffixes and what each multiplies by (case-insensitive; no suffix or `B` = bytes).
const UNITS: [(&str, u64); 14] = [
    ("", 1),
    ("b", 1),
    ("k", 1_000),
    ("kb", 1_000),
    ("m", 1_000_000),
    ("mb", 1_000_000),
    ("g", 1_000_000_000),
    ("gb", 1_000_000_000),
    ("t", 1_000_000_000_000),
    ("tb", 1_000_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
];

/// Parses a size in bytes with an optional unit: `K`/`M`/`G`/`T` or `KB`/`MB`/`GB`/`TB`
/// count in powers of 1000, `KiB`/`MiB`/`GiB`/`TiB` in powers of 1024 (case-insensitive).
/// A fraction is allowed with a unit (`1.5GiB`); the result must be at least one byte.
///
/// ```
/// use flora_cluster::config::parse_size;
/// assert_eq!(parse_size("100MiB"), Ok(100 << 20));
/// assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
/// assert_eq!(parse_size("512M"), Ok(512_000_000));
/// assert_eq!(parse_size("4096"), Ok(4096));
/// for bad in ["", "0", "-1", "nan", "inf", "1.5", "12XB", "1e9", "99999999999TiB"] {
///     assert!(parse_size(bad).is_err(), "{bad}");
/// }
/// ```
///
/// # Errors
/// A short reason naming the text: not a number, an unknown unit, zero, a fraction of a
/// byte, or more than `u64::MAX` bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let usage = || {
        format!(
            "{text:?} is not a size: use bytes with an optional unit, e.g. 4096, 512M, 1G \
             (powers of 1000) or 100MiB, 1.5GiB (powers of 1024)"
        )
    };
    let unit = unit.trim().to_ascii_lowercase();
    let Some(&(_, scale)) = UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(usage());
    };
    if number.is_empty() || number.matches('.').count() > 1 || number == "." {
        return Err(usage());
    }
    let bytes = if number.contains('.') {
        if scale == 1 {
            return Err(format!(
                "{text:?}: a fraction of a byte (add a unit: 1.5MiB)"
            ));
        }
        let v = number.parse::<f64>().map_err(|_| usage())? * scale as f64;
        // 2^64 is the first value that does not fit (NaN cannot come from digits and a dot).
        if v >= 18_446_744_073_709_551_616.0 {
            return Err(format!("{text:?}: more than {} bytes", u64::MAX));
        }
        v.round() as u64
    } else {
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{text:?}: more than {} bytes", u64::MAX))?;
        n.checked_mul(scale)
            .ok_or_else(|| format!("{text:?}: more than {} bytes", u64::MAX))?
    };
    if bytes == 0 {
        return Err(format!("{text:?}: must be at least 1 byte"));
    }
    Ok(bytes)
}

/// Deserializes an optional size given as a whole number of bytes or as text ([`parse_size`]).
pub(super) fn de_opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Size;
    impl de::Visitor<'_> for Size {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a size in bytes: a number, or text such as \"100MiB\" or \"1G\"")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            match v {
                0 => Err(E::custom("must be at least 1 byte")),
                v => Ok(Some(v)),
            }
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::custom(format!("{v}: must be at least 1 byte"))),
            }
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(E::custom(format!(
                "{v}: give a whole number of bytes, or text such as \"1.5GiB\""
            )))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            parse_size(v).map(Some).map_err(E::custom)
        }
    }
    d.deserialize_any(Size)
}
