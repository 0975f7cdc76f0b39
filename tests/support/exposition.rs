//! A parser of the text exposition formats (Prometheus 0.0.4 and OpenMetrics samples):
//! samples, `# TYPE` and `# HELP` lines, and checks for duplicated or scattered series.

use std::collections::{BTreeMap, BTreeSet};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Sample name (with `_bucket`, `_total`, … suffixes).
    pub name: String,
    /// Labels by name.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// `name{a="x",b="y"}` with sorted labels: the series identity.
    pub fn series(&self) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }

    /// Whether every `(name, value)` of `want` is among the labels.
    pub fn has_labels(&self, want: &[(&str, &str)]) -> bool {
        want.iter()
            .all(|(k, v)| self.labels.get(*k).is_some_and(|x| x == v))
    }
}

/// A parsed exposition: samples in order plus the `# TYPE` declarations in order.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// Every sample, in text order.
    pub samples: Vec<Sample>,
    /// `(family, type)` for every `# TYPE` line, in text order.
    pub types: Vec<(String, String)>,
    /// Family names of every `# HELP` line.
    pub helps: Vec<String>,
}

/// Suffixes a sample may add to its family's name.
const SUFFIXES: [&str; 6] = ["_bucket", "_count", "_sum", "_total", "_created", "_info"];

impl Exposition {
    /// Parses the text; `Err` names the first line it cannot read.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut e = Self::default();
        for (n, line) in text.lines().enumerate() {
            let err = |m: &str| format!("line {}: {m}: {line:?}", n + 1);
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, typ) = rest.split_once(' ').ok_or_else(|| err("TYPE"))?;
                e.types.push((name.to_string(), typ.trim().to_string()));
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                e.helps.push(name.to_string());
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                e.samples.push(parse_sample(line).map_err(|m| err(&m))?);
            }
        }
        Ok(e)
    }

    /// The declared type of `family`.
    pub fn type_of(&self, family: &str) -> Option<&str> {
        self.types
            .iter()
            .find(|(n, _)| n == family)
            .map(|(_, t)| t.as_str())
    }

    /// The declared family a sample name belongs to (itself, or itself minus a suffix).
    pub fn family_of(&self, sample: &str) -> String {
        if self.type_of(sample).is_some() {
            return sample.to_string();
        }
        SUFFIXES
            .iter()
            .filter_map(|s| sample.strip_suffix(s))
            .find(|base| self.type_of(base).is_some())
            .unwrap_or(sample)
            .to_string()
    }

    /// Samples named `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// Sum of all samples named `name` (0 when there is none).
    pub fn sum(&self, name: &str) -> f64 {
        self.named(name).map(|s| s.value).sum()
    }

    /// The value of the first sample named `name` that has all labels `want`.
    pub fn value(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.named(name)
            .find(|s| s.has_labels(want))
            .map(|s| s.value)
    }

    /// Series (name + labels) that appear more than once.
    pub fn duplicate_series(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut dups = BTreeSet::new();
        for s in &self.samples {
            let key = s.series();
            if !seen.insert(key.clone()) {
                dups.insert(key);
            }
        }
        dups.into_iter().collect()
    }

    /// Families whose samples are not one contiguous group, or that are declared twice.
    pub fn scattered_families(&self) -> Vec<String> {
        let mut bad = BTreeSet::new();
        let mut declared = BTreeSet::new();
        for (name, _) in &self.types {
            if !declared.insert(name.clone()) {
                bad.insert(format!("{name} (TYPE declared twice)"));
            }
        }
        let mut done = BTreeSet::new();
        let mut current: Option<String> = None;
        for s in &self.samples {
            let fam = self.family_of(&s.name);
            if current.as_deref() != Some(fam.as_str()) {
                if let Some(prev) = current.take() {
                    done.insert(prev);
                }
                if done.contains(&fam) {
                    bad.insert(format!("{fam} (samples in more than one group)"));
                }
                current = Some(fam);
            }
        }
        bad.into_iter().collect()
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or("no value after the metric name")?;
    let name = line[..name_end].to_string();
    if name.is_empty() {
        return Err("empty metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = parse_labels(after)?;
        labels = parsed;
        rest = tail;
    }
    // Value, then an optional timestamp (and in OpenMetrics an optional exemplar).
    let value_text = rest.split_whitespace().next().ok_or("no value")?;
    let value = parse_value(value_text).ok_or_else(|| format!("bad value {value_text:?}"))?;
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Parses `a="x",b="y"}` (after the `{`); returns the labels and the text after `}`.
fn parse_labels(mut s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(tail) = s.strip_prefix('}') {
            return Ok((labels, tail));
        }
        let (key, after) = s.split_once('=').ok_or("label without '='")?;
        let after = after.strip_prefix('"').ok_or("label value without '\"'")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("dangling escape".into()),
                },
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        if labels.insert(key.trim().to_string(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        s = &after[end + 1..];
    }
}

/// Parses a sample value, including `+Inf`, `-Inf` and `NaN`.
pub fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}
