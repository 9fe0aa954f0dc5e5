//! Statistics that decide: means with 95 % bootstrap intervals, ratios of
//! means over interleaved windows, and the verdict rule.
//!
//! A cell's samples are the rates of its windows; window `i` of every
//! implementation in a cell ran in the same round (implementations take
//! turns window by window, A B C A B C ..., so drift and neighbours' noise
//! hit all of them alike). A ratio is the ratio of the *means* of the two
//! implementations' windows (equal-length windows: the ratio of total
//! operations). Its interval is a paired percentile bootstrap: resample the
//! rounds (both implementations' windows of a round together) with
//! replacement, recompute the ratio of means, 2000 times, take the 2.5th and
//! 97.5th percentiles. With samples from several process runs (`--runs`),
//! the bootstrap first resamples runs, then rounds within each drawn run, so
//! the interval carries run-to-run spread too.

use crate::data::mix;

/// Bootstrap replicates per interval.
const REPLICATES: usize = 2000;

/// A point estimate and its 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Estimate {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Estimate {
    /// An exact figure with no interval (lo = hi = value).
    pub fn point(v: f64) -> Self {
        Estimate {
            value: v,
            lo: v,
            hi: v,
        }
    }

    /// `value ± half` (a mean and the half-width of its interval).
    pub fn around(value: f64, half: f64) -> Self {
        Estimate {
            value,
            lo: value - half,
            hi: value + half,
        }
    }
}

/// A small deterministic generator (splitmix64 over a counter), so the same
/// samples always give the same interval.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(1);
        (mix(self.0) % n as u64) as usize
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn interval(value: f64, mut reps: Vec<f64>) -> Estimate {
    reps.retain(|x| x.is_finite());
    reps.sort_by(|a, b| a.total_cmp(b));
    Estimate {
        value,
        lo: percentile(&reps, 0.025),
        hi: percentile(&reps, 0.975),
    }
}

/// Draws the (run, round) indices of one bootstrap replicate: runs with
/// replacement when there are several, then rounds within each drawn run.
fn draw(rng: &mut Rng, rounds_per_run: &[usize]) -> Vec<(usize, usize)> {
    let runs = rounds_per_run.len();
    let mut out = Vec::new();
    for _ in 0..runs {
        let r = if runs > 1 { rng.below(runs) } else { 0 };
        let n = rounds_per_run[r];
        for _ in 0..n {
            out.push((r, rng.below(n)));
        }
    }
    out
}

/// Mean of one implementation's windows, over every run, with its interval.
/// `runs[r][i]`: window `i` of run `r`.
pub fn mean_ci(runs: &[Vec<f64>]) -> Estimate {
    let runs: Vec<&Vec<f64>> = runs.iter().filter(|r| !r.is_empty()).collect();
    if runs.is_empty() {
        return Estimate::point(f64::NAN);
    }
    let all: Vec<f64> = runs.iter().flat_map(|r| r.iter().copied()).collect();
    let value = mean(&all);
    let sizes: Vec<usize> = runs.iter().map(|r| r.len()).collect();
    let mut rng = Rng(0x5eed);
    let reps = (0..REPLICATES)
        .map(|_| {
            let idx = draw(&mut rng, &sizes);
            idx.iter().map(|&(r, i)| runs[r][i]).sum::<f64>() / idx.len() as f64
        })
        .collect();
    interval(value, reps)
}

/// Ratio of means `a / b` of two implementations measured in the same
/// rounds (paired by run and window index), with its interval.
pub fn paired_ratio(a: &[Vec<f64>], b: &[Vec<f64>]) -> Estimate {
    // Pair run by run, window by window; extra windows of either side are
    // dropped (they never occur when both come from one cell).
    let pairs: Vec<Vec<(f64, f64)>> = a
        .iter()
        .zip(b)
        .map(|(x, y)| x.iter().copied().zip(y.iter().copied()).collect::<Vec<_>>())
        .filter(|v: &Vec<(f64, f64)>| !v.is_empty())
        .collect();
    if pairs.is_empty() {
        return Estimate::point(f64::NAN);
    }
    let sum = |it: &mut dyn Iterator<Item = (f64, f64)>| {
        it.fold((0.0, 0.0), |(sa, sb), (x, y)| (sa + x, sb + y))
    };
    let (sa, sb) = sum(&mut pairs.iter().flat_map(|r| r.iter().copied()));
    let value = sa / sb;
    let sizes: Vec<usize> = pairs.iter().map(|r| r.len()).collect();
    let mut rng = Rng(0xfa12);
    let reps = (0..REPLICATES)
        .map(|_| {
            let idx = draw(&mut rng, &sizes);
            let (sa, sb) = sum(&mut idx.iter().map(|&(r, i)| pairs[r][i]));
            sa / sb
        })
        .collect();
    interval(value, reps)
}

/// Ratio of means `a / b` of two figures measured in different cells (not
/// paired): each side resampled on its own.
pub fn unpaired_ratio(a: &[Vec<f64>], b: &[Vec<f64>]) -> Estimate {
    let (ea, eb) = (mean_ci(a), mean_ci(b));
    let a: Vec<&Vec<f64>> = a.iter().filter(|r| !r.is_empty()).collect();
    let b: Vec<&Vec<f64>> = b.iter().filter(|r| !r.is_empty()).collect();
    if a.is_empty() || b.is_empty() {
        return Estimate::point(f64::NAN);
    }
    let (sa, sb): (Vec<usize>, Vec<usize>) = (
        a.iter().map(|r| r.len()).collect(),
        b.iter().map(|r| r.len()).collect(),
    );
    let mut rng = Rng(0xb007);
    let reps = (0..REPLICATES)
        .map(|_| {
            let ia = draw(&mut rng, &sa);
            let ib = draw(&mut rng, &sb);
            let ma = ia.iter().map(|&(r, i)| a[r][i]).sum::<f64>() / ia.len() as f64;
            let mb = ib.iter().map(|&(r, i)| b[r][i]).sum::<f64>() / ib.len() as f64;
            ma / mb
        })
        .collect();
    interval(ea.value / eb.value, reps)
}

/// A target's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The whole interval clears the bound.
    Met,
    /// The whole interval is on the wrong side of the bound.
    Missed,
    /// The interval straddles the bound, or the figure has no interval
    /// yet (a per-run figure needs at least 3 runs).
    Undecided,
    /// Not measured in this run.
    NotMeasured,
}

impl Verdict {
    /// How the single-purpose cells print it.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::Undecided => "undecided",
            Verdict::NotMeasured => "not measured",
        }
    }
}

/// The verdict of `e` against `bound`: `at_least` (ratio >= bound) or not
/// (value <= bound).
pub fn verdict(e: Option<Estimate>, bound: f64, at_least: bool) -> Verdict {
    let Some(e) = e else {
        return Verdict::NotMeasured;
    };
    if !(e.lo.is_finite() && e.hi.is_finite()) {
        return Verdict::NotMeasured;
    }
    let (met, missed) = if at_least {
        (e.lo >= bound, e.hi < bound)
    } else {
        (e.hi <= bound, e.lo > bound)
    };
    if met {
        Verdict::Met
    } else if missed {
        Verdict::Missed
    } else {
        Verdict::Undecided
    }
}

/// Per-run figures (one value per process run) as an estimate: the mean,
/// and the range of the runs as its interval. `None` with fewer than
/// `min_runs` runs, so one run never decides such a target.
pub fn over_runs(values: &[f64], min_runs: usize) -> Option<Estimate> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.len() < min_runs.max(1) {
        return None;
    }
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(Estimate {
        value: mean(&v),
        lo,
        hi,
    })
}

/// Mean of `xs` and the half-width of its 95 % confidence interval
/// (Student's t; NaN with fewer than 2 values), for cells that report
/// `mean ± half`.
pub fn t_interval(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    // Two-sided 95 % t quantiles for n-1 degrees of freedom (>= 30: normal).
    const T: [f64; 30] = [
        12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23, 2.20, 2.18, 2.16, 2.14, 2.13,
        2.12, 2.11, 2.10, 2.09, 2.09, 2.08, 2.07, 2.07, 2.06, 2.06, 2.06, 2.05, 2.05, 2.05, 2.04,
    ];
    let t = T.get(xs.len() - 2).copied().unwrap_or(1.96);
    (mean, t * (var / n).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_ratio_of_identical_series_is_one_with_a_tight_interval() {
        let a = vec![vec![100.0, 90.0, 110.0, 105.0, 95.0]];
        let e = paired_ratio(&a, &a);
        assert_eq!(e.value, 1.0);
        assert_eq!((e.lo, e.hi), (1.0, 1.0));
    }

    #[test]
    fn a_noisy_ratio_straddling_the_bound_is_undecided() {
        let a = vec![vec![90.0, 130.0, 70.0, 120.0, 95.0, 60.0]];
        let b = vec![vec![100.0, 100.0, 100.0, 100.0, 100.0, 100.0]];
        let e = paired_ratio(&a, &b);
        assert!(e.lo < e.value && e.value < e.hi, "{e:?}");
        assert_eq!(verdict(Some(e), e.value, true), Verdict::Undecided);
        assert_eq!(verdict(Some(e), e.lo / 2.0, true), Verdict::Met);
        assert_eq!(verdict(Some(e), e.hi * 2.0, true), Verdict::Missed);
        assert_eq!(verdict(Some(e), e.hi * 2.0, false), Verdict::Met);
        assert_eq!(verdict(None, 1.0, true), Verdict::NotMeasured);
    }

    #[test]
    fn one_run_does_not_decide_a_per_run_figure() {
        assert_eq!(over_runs(&[3.0], 3), None);
        let e = over_runs(&[3.0, 5.0, 4.0], 3).expect("three runs");
        assert_eq!((e.value, e.lo, e.hi), (4.0, 3.0, 5.0));
    }
}
