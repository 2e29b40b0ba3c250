//! Paired speed: the baseline and the candidates timed in one process on the same batches, in
//! rounds whose order rotates (as `bench/paired_speed.py` does), so that a machine's drift during
//! the search does not favour whoever ran last. A candidate's speed-up is the median over rounds
//! of baseline seconds / candidate seconds.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::runtime::{self, Batch, SessionOptions};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Speed {
    /// Median over rounds of baseline time / this model's time.
    pub speedup: f64,
    pub min: f64,
    pub max: f64,
    /// Median milliseconds per batch.
    pub ms_per_batch: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Times `models` (the first is the baseline) on `batches`: one untimed pass each, then `rounds`
/// rounds, round r starting at model r (mod the count). `tick` hears (round, rounds).
pub fn paired(
    models: &[PathBuf],
    batches: &[Batch],
    session: &SessionOptions,
    rounds: usize,
    tick: &dyn Fn(usize, usize),
) -> Result<Vec<Speed>> {
    let mut open = models
        .iter()
        .map(|p| runtime::open(p, session))
        .collect::<Result<Vec<_>>>()?;
    for m in open.iter_mut() {
        for b in batches {
            m.run(b)?;
        }
    }
    let k = open.len();
    let mut seconds = vec![vec![]; k];
    for r in 0..rounds.max(1) {
        tick(r, rounds);
        for step in 0..k {
            let i = (r + step) % k;
            let t = Instant::now();
            for b in batches {
                open[i].run(b)?;
            }
            seconds[i].push(t.elapsed().as_secs_f64());
        }
    }
    let base = seconds[0].clone();
    Ok(seconds
        .iter()
        .map(|s| {
            let ratios: Vec<f64> = base.iter().zip(s).map(|(b, x)| b / x).collect();
            let (min, max) = ratios
                .iter()
                .fold((f64::INFINITY, 0.0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
            Speed {
                speedup: median(ratios),
                min,
                max,
                ms_per_batch: median(s.clone()) * 1000.0 / batches.len().max(1) as f64,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(super::median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
