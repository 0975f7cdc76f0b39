//! The verdict's edges, validation and the flag parsers.

use super::*;

fn figs(g: u64, requests: u64, errors: u64, p99: Option<f64>) -> GenerationFigures {
    GenerationFigures::new(g, requests, errors, p99)
}

#[test]
fn promote_within_the_limits() {
    let l = CanaryLimits::default();
    let (v, why) = judge(
        &l,
        &figs(1, 100, 1, Some(0.1)),
        &figs(2, 100, 2, Some(0.15)),
    );
    assert_eq!((v, why.as_str()), (Verdict::Promote, "within the limits"));
}

#[test]
fn error_ratio_at_the_limit_passes_and_above_fails() {
    let l = CanaryLimits {
        max_error_ratio: 0.25,
        ..CanaryLimits::default()
    };
    let old = figs(1, 100, 25, None);
    assert_eq!(judge(&l, &old, &figs(2, 100, 50, None)).0, Verdict::Promote);
    let (v, why) = judge(&l, &old, &figs(2, 100, 51, None));
    assert_eq!(v, Verdict::Rollback);
    assert!(why.starts_with("5xx ratio 0.5100 over 0.5000"), "{why}");
}

#[test]
fn zero_error_ratio_limit_refuses_any_new_error() {
    let l = CanaryLimits {
        max_error_ratio: 0.0,
        ..CanaryLimits::default()
    };
    let old = figs(1, 100, 0, None);
    assert_eq!(judge(&l, &old, &figs(2, 100, 0, None)).0, Verdict::Promote);
    assert_eq!(judge(&l, &old, &figs(2, 100, 1, None)).0, Verdict::Rollback);
}

#[test]
fn p99_over_the_ratio_fails_but_not_under_the_floor() {
    let l = CanaryLimits::default();
    let old = figs(1, 100, 0, Some(0.1));
    assert_eq!(
        judge(&l, &old, &figs(2, 100, 0, Some(0.15))).0,
        Verdict::Promote
    );
    let (v, why) = judge(&l, &old, &figs(2, 100, 0, Some(0.16)));
    assert_eq!(v, Verdict::Rollback);
    assert!(why.starts_with("p99 0.1600s over 0.1500s"), "{why}");
    // An old p99 of 0 (everything in the first bucket): only a p99 above the floor fails.
    let zero = figs(1, 100, 0, Some(0.0));
    let just_under = Some(P99_FLOOR_SECONDS);
    assert_eq!(
        judge(&l, &zero, &figs(2, 100, 0, just_under)).0,
        Verdict::Promote
    );
    assert_eq!(
        judge(&l, &zero, &figs(2, 100, 0, Some(0.006))).0,
        Verdict::Rollback
    );
}

#[test]
fn too_few_requests_in_either_generation_rolls_back() {
    let l = CanaryLimits::default();
    let (v, why) = judge(&l, &figs(1, 100, 0, None), &figs(2, 19, 0, None));
    assert_eq!(v, Verdict::Rollback);
    assert!(
        why.starts_with("too few requests to judge: 100 old, 19 canary"),
        "{why}"
    );
    assert_eq!(
        judge(&l, &figs(1, 19, 0, None), &figs(2, 100, 0, None)).0,
        Verdict::Rollback
    );
    let none = CanaryLimits {
        min_requests: 0,
        ..l
    };
    // No requests at all with no minimum: ratios 0, no p99, promoted.
    assert_eq!(
        judge(&none, &figs(1, 0, 0, None), &figs(2, 0, 0, None)).0,
        Verdict::Promote
    );
}

#[test]
fn a_crash_rolls_back_whatever_the_figures() {
    let mut new = figs(2, 100, 0, Some(0.001));
    new.crashes = 1;
    let (v, why) = judge(&CanaryLimits::default(), &figs(1, 100, 0, None), &new);
    assert_eq!(v, Verdict::Rollback);
    assert!(why.starts_with("crash"));
}

#[test]
fn ratio_without_requests_is_zero_never_nan() {
    let f = figs(1, 0, 0, None);
    assert_eq!(f.error_ratio, 0.0);
}

#[test]
fn validation_names_the_bad_value() {
    let ok = CanarySpec {
        workers: 1,
        secs: 5.0,
        limits: CanaryLimits::default(),
    };
    assert!(ok.validate().is_ok());
    let bad = |f: fn(&mut CanarySpec)| {
        let mut s = ok;
        f(&mut s);
        s.validate().unwrap_err()
    };
    assert!(bad(|s| s.workers = 0).contains("at least 1"));
    assert!(bad(|s| s.secs = 0.0).contains("canary seconds 0"));
    assert!(bad(|s| s.secs = f64::NAN).contains("canary seconds NaN"));
    assert!(bad(|s| s.secs = f64::INFINITY).contains("canary seconds inf"));
    assert!(bad(|s| s.limits.max_error_ratio = 1.5).contains("[0, 1]"));
    assert!(bad(|s| s.limits.max_error_ratio = f64::NAN).contains("[0, 1]"));
    assert!(bad(|s| s.limits.max_p99_ratio = 0.0).contains("p99 ratio 0"));
    assert!(bad(|s| s.limits.max_p99_ratio = f64::NAN).contains("p99 ratio NaN"));
}

#[test]
fn flag_parsers_refuse_bad_values() {
    assert_eq!(parse_workers("2"), Ok(2));
    assert!(parse_workers("0").unwrap_err().contains(">= 1"));
    assert!(parse_workers("-1").is_err());
    assert_eq!(parse_error_ratio("0"), Ok(0.0));
    assert_eq!(parse_error_ratio("1"), Ok(1.0));
    for bad in ["1.01", "-0.1", "NaN", "x"] {
        assert!(
            parse_error_ratio(bad).unwrap_err().contains("[0, 1]"),
            "{bad}"
        );
    }
    assert_eq!(parse_p99_ratio("1.5"), Ok(1.5));
    for bad in ["0", "-1", "inf", "NaN"] {
        assert!(parse_p99_ratio(bad).unwrap_err().contains("> 0"), "{bad}");
    }
}
