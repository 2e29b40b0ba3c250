//! The reference's random-matrix-theory denoising of a weight matrix, reproduced literally:
//! standardize each input column (over the output dimension), take the SVD, shrink the singular
//! values with one of four rules, rebuild and undo the standardization.
//!
//! Matrices here are in the reference's (torch) layout, `[out, in]`; "column" means one input
//! feature. Thresholds are applied to the raw singular values of the standardized matrix, as
//! the reference does (it does not rescale by √n): at BERT sizes this leaves `bulk_shrink` with
//! an empty bulk and makes `hard_threshold` clamp every singular value, which is what the
//! reference computes too.

use faer::Mat;
use serde::Serialize;

/// Singular-value shrinkage rule of the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shrink {
    /// Zero every singular value below (4/√3)·√β·median(s), β = min/max of the shape.
    GavishDonoho,
    /// Replace the singular values inside the trimmed Marchenko–Pastur bulk [√L, √U] by their mean.
    BulkShrink,
    /// Clamp every singular value into [√L, √U].
    HardThreshold,
    /// Subtract τ = 0.1 from every singular value (at least 0).
    SoftThreshold,
}

impl crate::options::Named for Shrink {
    const ALL: &'static [(Self, &'static str, &'static str)] = &[
        (
            Shrink::GavishDonoho,
            "gavish_donoho",
            "zero every singular value below (4/√3)·√β·median(s)",
        ),
        (
            Shrink::BulkShrink,
            "bulk_shrink",
            "replace the singular values inside the trimmed Marchenko–Pastur bulk by their mean",
        ),
        (
            Shrink::HardThreshold,
            "hard_threshold",
            "clamp every singular value into the trimmed Marchenko–Pastur bulk",
        ),
        (
            Shrink::SoftThreshold,
            "soft_threshold",
            "subtract τ = 0.1 from every singular value (at least 0)",
        ),
    ];
}

/// τ of `soft_threshold` (the reference's default, never changed by its callers).
pub const SOFT_TAU: f64 = 0.1;

/// The reference's trimmed Marchenko–Pastur support (L, U) for eigenvalues of an m × n matrix:
/// q = min/max, λ± = (1 ± √q)², trimmed on both sides by max(0.15·(λ₊ − λ₋),
/// 1.5·p^(−2/3)·2^(4/3)) with p = min(m, n); the untrimmed support when trimming empties it.
pub fn mp_support(m: usize, n: usize) -> (f64, f64) {
    let (phi, ca) = (0.15, 1.5);
    let p = m.min(n) as f64;
    let q = m.min(n) as f64 / m.max(n) as f64;
    let lam_minus = (1.0 - q.sqrt()).powi(2);
    let lam_plus = (1.0 + q.sqrt()).powi(2);
    let beta: f64 = 1.0;
    let tw = ca * p.powf(-2.0 / 3.0) * (1.0 + beta.sqrt()).powf(4.0 / 3.0);
    let delta = (phi * (lam_plus - lam_minus)).max(tw);
    let (l, u) = (lam_minus + delta, lam_plus - delta);
    if l < u {
        (l, u)
    } else {
        (lam_minus, lam_plus)
    }
}

/// torch's `median` of a vector: the lower of the two middle values for an even count.
pub fn lower_median(s: &[f64]) -> f64 {
    let mut v = s.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0.0)
}

/// The shrunk singular values of an m × n matrix (`s` in non-increasing order).
pub fn shrink_values(s: &[f64], m: usize, n: usize, method: Shrink) -> Vec<f64> {
    let (l, u) = mp_support(m, n);
    let (lo, hi) = (l.sqrt(), u.sqrt());
    match method {
        Shrink::BulkShrink => {
            let bulk: Vec<f64> = s.iter().copied().filter(|&v| v >= lo && v <= hi).collect();
            if bulk.is_empty() {
                return s.to_vec();
            }
            let mean = bulk.iter().sum::<f64>() / bulk.len() as f64;
            s.iter().map(|&v| if v >= lo && v <= hi { mean } else { v }).collect()
        }
        Shrink::HardThreshold => s.iter().map(|&v| v.clamp(lo, hi)).collect(),
        Shrink::SoftThreshold => s.iter().map(|&v| (v - SOFT_TAU).max(0.0)).collect(),
        Shrink::GavishDonoho => {
            let beta = m.min(n) as f64 / m.max(n) as f64;
            let thresh = 4.0 / 3f64.sqrt() * beta.sqrt() * lower_median(s);
            s.iter().map(|&v| if v >= thresh { v } else { 0.0 }).collect()
        }
    }
}

/// Denoises `w` ([out, in], the reference's layout): column standardization (population
/// standard deviation; a constant column keeps scale 1), SVD, [`shrink_values`], rebuild,
/// undo the standardization.
pub fn denoise(w: &Mat<f64>, method: Shrink) -> Result<Mat<f64>, String> {
    let (m, n) = (w.nrows(), w.ncols());
    let mut mu = vec![0.0; n];
    let mut sd = vec![1.0; n];
    for j in 0..n {
        let mean = (0..m).map(|i| w[(i, j)]).sum::<f64>() / m as f64;
        let var = (0..m).map(|i| (w[(i, j)] - mean).powi(2)).sum::<f64>() / m as f64;
        mu[j] = mean;
        let s = var.sqrt();
        sd[j] = if s == 0.0 { 1.0 } else { s };
    }
    let z = Mat::from_fn(m, n, |i, j| (w[(i, j)] - mu[j]) / sd[j]);
    let svd = z
        .thin_svd()
        .map_err(|e| format!("SVD of the standardized weight failed: {e:?}"))?;
    let s: Vec<f64> = (0..m.min(n)).map(|i| svd.S().column_vector()[i]).collect();
    let shrunk = shrink_values(&s, m, n, method);
    let (u, v) = (svd.U(), svd.V());
    let us = Mat::from_fn(m, s.len(), |i, k| u[(i, k)] * shrunk[k]);
    let z_hat = &us * v.transpose();
    Ok(Mat::from_fn(m, n, |i, j| z_hat[(i, j)] * sd[j] + mu[j]))
}
