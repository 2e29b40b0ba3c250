//! Activation ranges from calibration data: min/max, percentile, or entropy (KL divergence).
//! Values come through the [`Calibrator`]: only real (non-padding) tokens are seen, all of them
//! or only the first token of each sequence or only the others ([`Tokens`]).

use super::CalibMethod;
use crate::onnx::ModelProto;
use crate::passes::{Calibrator, PassError};

/// A clipping range [min, max] for one activation.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Range {
    pub min: f32,
    pub max: f32,
}

/// Histogram bins for percentile and entropy.
pub const BINS: usize = 2048;
/// Quantization levels the entropy method compares against (the positive half of int8/uint8).
const LEVELS: usize = 128;

/// Which tokens of a value a range is taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tokens {
    All,
    /// Only the first token of each sequence (position 0: [CLS]).
    First,
    /// Every token but the first.
    AfterFirst,
}

impl Tokens {
    fn takes(self, position: usize) -> bool {
        match self {
            Tokens::All => true,
            Tokens::First => position == 0,
            Tokens::AfterFirst => position > 0,
        }
    }
}

/// One range to measure: a value of the calibrated model, over some of its tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Probe {
    pub value: String,
    pub tokens: Tokens,
}

/// The distinct values the probes read, and for each probe the index of its value.
fn distinct_values(probes: &[Probe]) -> (Vec<String>, Vec<usize>) {
    let mut values: Vec<String> = vec![];
    let slots = probes
        .iter()
        .map(|p| match values.iter().position(|v| *v == p.value) {
            Some(k) => k,
            None => {
                values.push(p.value.clone());
                values.len() - 1
            }
        })
        .collect();
    (values, slots)
}

/// Calls `f(probe, row)` for every token row of every probe (the rows of its tokens only), over
/// one pass of the calibration data.
fn scan(
    model: &ModelProto,
    calib: &mut dyn Calibrator,
    probes: &[Probe],
    f: &mut dyn FnMut(usize, &[f32]),
) -> Result<(), PassError> {
    let (values, slots) = distinct_values(probes);
    calib.capture(model, &values, &mut |positions, vals| {
        for (k, p) in probes.iter().enumerate() {
            let (v, w) = &vals[slots[k]];
            for (row, &pos) in v.chunks((*w).max(1)).zip(positions) {
                if p.tokens.takes(pos) {
                    f(k, row);
                }
            }
        }
        Ok(())
    })
}

/// Running min/max of one pass over the data.
fn minmax(model: &ModelProto, calib: &mut dyn Calibrator, probes: &[Probe]) -> Result<Vec<Range>, PassError> {
    let mut r = vec![
        Range {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY
        };
        probes.len()
    ];
    scan(model, calib, probes, &mut |k, row| {
        for &x in row.iter().filter(|x| x.is_finite()) {
            r[k].min = r[k].min.min(x);
            r[k].max = r[k].max.max(x);
        }
    })?;
    Ok(r)
}

/// The range of each probe on the calibration data by `method` (`percentile` is the share of
/// values kept, in percent). Probes never seen (or never finite) get an empty range (min > max),
/// which the caller must treat as unusable.
pub fn ranges(
    model: &ModelProto,
    calib: &mut dyn Calibrator,
    probes: &[Probe],
    method: CalibMethod,
    percentile: f64,
) -> Result<Vec<Range>, PassError> {
    let mm = minmax(model, calib, probes)?;
    if method == CalibMethod::Minmax {
        return Ok(mm);
    }
    // Second pass: histograms of x over [min, max] (percentile) or of |x| over [0, max|x|] (entropy).
    let span: Vec<(f32, f32)> = mm
        .iter()
        .map(|r| match method {
            CalibMethod::Entropy => (0.0, r.min.abs().max(r.max.abs())),
            _ => (r.min, r.max),
        })
        .collect();
    let mut hist = vec![vec![0u64; BINS]; probes.len()];
    scan(model, calib, probes, &mut |k, row| {
        let (lo, hi) = span[k];
        if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
            return;
        }
        let w = (hi - lo) / BINS as f32;
        for &x in row.iter().filter(|x| x.is_finite()) {
            let x = if method == CalibMethod::Entropy { x.abs() } else { x };
            let b = (((x - lo) / w) as usize).min(BINS - 1);
            hist[k][b] += 1;
        }
    })?;
    Ok(mm
        .iter()
        .zip(&span)
        .zip(&hist)
        .map(|((r, &(lo, hi)), h)| {
            if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
                return *r;
            }
            let w = (hi - lo) / BINS as f32;
            match method {
                CalibMethod::Percentile => {
                    let (a, b) = percentile_bins(h, percentile);
                    Range {
                        min: (lo + a as f32 * w).max(r.min),
                        max: (lo + (b + 1) as f32 * w).min(r.max),
                    }
                }
                _ => {
                    let t = (entropy_threshold(h) as f32 + 0.5) * w;
                    Range {
                        min: r.min.max(-t),
                        max: r.max.min(t),
                    }
                }
            }
        })
        .collect())
}

/// First and last bin kept when (100 − p)% of the counts are clipped, half on each side.
pub fn percentile_bins(h: &[u64], p: f64) -> (usize, usize) {
    let total: u64 = h.iter().sum();
    let cut = ((100.0 - p) / 200.0 * total as f64).floor() as u64;
    let mut acc = 0;
    let mut a = 0;
    for (i, &c) in h.iter().enumerate() {
        acc += c;
        if acc > cut {
            a = i;
            break;
        }
    }
    acc = 0;
    let mut b = h.len() - 1;
    for (i, &c) in h.iter().enumerate().rev() {
        acc += c;
        if acc > cut {
            b = i;
            break;
        }
    }
    (a, b.max(a))
}

/// TensorRT's entropy calibration on a histogram of |x|: the number of bins `i` (≥ 128) to keep
/// such that KL(P‖Q) is smallest, where P is the histogram cut at `i` with the outliers folded
/// into its last bin and Q is the cut histogram (without them: what clipping loses is the
/// difference) merged into 128 levels and expanded back. Returns the last kept bin.
pub fn entropy_threshold(h: &[u64]) -> usize {
    let n = h.len();
    if n <= LEVELS {
        return n - 1;
    }
    let mut best = (f64::INFINITY, n - 1);
    // A step keeps the search to ~256 candidates; keeping every bin is one of them.
    let step = ((n - LEVELS) / 256).max(1);
    let mut candidates: Vec<usize> = (LEVELS..=n).step_by(step).collect();
    if candidates.last() != Some(&n) {
        candidates.push(n);
    }
    for i in candidates {
        let mut p: Vec<f64> = h[..i].iter().map(|&c| c as f64).collect();
        let outliers: f64 = h[i..].iter().map(|&c| c as f64).sum();
        p[i - 1] += outliers;
        // Q: the cut histogram merged into LEVELS chunks, each chunk's mass spread over the bins
        // where P is not empty (the last one too when it holds the outliers).
        let nonzero = |j: usize| p[j] > 0.0;
        let mut q = vec![0f64; i];
        for l in 0..LEVELS {
            let s = l * i / LEVELS;
            let e = ((l + 1) * i / LEVELS).max(s + 1);
            let mass: f64 = h[s..e].iter().map(|&c| c as f64).sum();
            let nz = (s..e).filter(|&j| nonzero(j)).count();
            if nz > 0 {
                for (j, qj) in q.iter_mut().enumerate().take(e).skip(s) {
                    if nonzero(j) {
                        *qj = mass / nz as f64;
                    }
                }
            }
        }
        let ps: f64 = p.iter().sum();
        let qs: f64 = q.iter().sum();
        if ps > 0.0 && qs > 0.0 {
            let mut kl = 0.0;
            for j in 0..i {
                if p[j] > 0.0 {
                    let pj = p[j] / ps;
                    let qj = (q[j] / qs).max(1e-12);
                    kl += pj * (pj / qj).ln();
                }
            }
            if kl < best.0 {
                best = (kl, i - 1);
            }
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_clips_half_on_each_side() {
        let mut h = vec![1u64; 1000];
        h[0] = 0;
        // 999 counts; 1% clipped → 4 on each side (floor of 4.995).
        let (a, b) = percentile_bins(&h, 99.0);
        assert_eq!((a, b), (5, 995));
        assert_eq!(percentile_bins(&h, 100.0), (1, 999));
    }

    #[test]
    fn entropy_clips_a_long_tail() {
        // Mass near zero, a few far outliers: the threshold lands well below the maximum.
        let mut h = vec![0u64; BINS];
        for (j, c) in h.iter_mut().enumerate().take(200) {
            *c = 10_000 / (j as u64 + 1);
        }
        h[BINS - 1] = 1;
        let t = entropy_threshold(&h);
        assert!((LEVELS - 1..1000).contains(&t), "threshold bin {t}");
    }

    #[test]
    fn entropy_keeps_a_range_its_values_fill() {
        // Values spread over the whole range (no tail): clipping would fold most of them into
        // the last kept bin, so nearly all of it is kept. (Q built with the outliers in its last
        // bin matched P wherever it was cut, and every range was cut to 128 bins.)
        let h = vec![100u64; BINS];
        let t = entropy_threshold(&h);
        assert!(t >= BINS - 8, "threshold bin {t} of {BINS}");
        let half_normal: Vec<u64> = (0..BINS)
            .map(|j| (1e6 * (-0.5 * (4.0 * j as f64 / BINS as f64).powi(2)).exp()) as u64)
            .collect();
        let t = entropy_threshold(&half_normal);
        assert!(t > BINS / 2, "a half-normal to 4 sigma cut at bin {t} of {BINS}");
    }
}
