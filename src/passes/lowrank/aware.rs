//! Activation-aware factorization (the SVD-LLM / DRONE idea): with G = XᵀX the second moments
//! of a layer's input over the calibration tokens (damped), and S its symmetric square root
//! (SᵀS = G), the output error of any replacement M̂ of the weight M ([in, out]) is
//! ‖X(M − M̂)‖² = ‖S(M − M̂)‖². So the best rank-k M̂ is S⁻¹·(rank-k SVD of S·M), and the squared
//! singular values discarded are exactly the output error. The factors are A = S⁻¹U_k ([in, k])
//! and B = Σ_k V_kᵀ ([k, out]).
//!
//! Ranks come from the rule (energy of the whitened spectrum = share of the output energy kept)
//! or, with a parameter budget, from [`allocate_ranks`]: greedy over all selected layers, each
//! step buys the largest reduction of relative output error per parameter.

use std::time::Instant;

use faer::{Mat, Side};
use ndarray::linalg::general_mat_mul;
use ndarray::Array2;

use super::*;
use crate::passes::Calibrator;

/// Damping added to the Gram matrix's diagonal, relative to its mean (as calibrated pruning).
const DAMP: f64 = 1e-2;
/// Gram statistics use at most this many tokens (evenly spaced over the calibration data).
const MAX_GRAM_TOKENS: usize = 16384;
/// The inputs' Gram matrices are captured a few at a time, as many as fit in this many bytes (at
/// least one; all of MiniLM's at once, two layers' of BERT-base): capturing all of BERT-base's at
/// once held 1 GB of them and a batch of every layer's inputs. Each capture runs the model up to
/// its last input only.
const GRAM_BYTES: usize = 192 << 20;

/// Float32 factors set aside in an anonymous temporary file (removed when it is closed) until the
/// ranks are chosen, then read back up to the rank chosen: held in memory, every weight's factors
/// up to the largest rank it could take were, after the model itself, the pass's largest holding
/// (BERT-base: 0.3 GB).
struct Spill {
    file: std::fs::File,
    end: u64,
}

fn spill_error(e: std::io::Error) -> PassError {
    PassError::Calibration(format!(
        "the factors' temporary file in {} (set TMPDIR to a folder with room): {e}",
        std::env::temp_dir().display()
    ))
}

impl Spill {
    fn new() -> Result<Spill, PassError> {
        Ok(Spill {
            file: tempfile::tempfile().map_err(spill_error)?,
            end: 0,
        })
    }

    /// Appends `values`; returns where they start.
    fn put(&mut self, values: impl Iterator<Item = f32>) -> Result<u64, PassError> {
        use std::io::{Seek, SeekFrom, Write};
        let at = self.end;
        self.file.seek(SeekFrom::Start(at)).map_err(spill_error)?;
        let mut w = std::io::BufWriter::new(&mut self.file);
        let mut bytes = 0;
        for v in values {
            w.write_all(&v.to_le_bytes()).map_err(spill_error)?;
            bytes += 4;
        }
        w.flush().map_err(spill_error)?;
        self.end += bytes;
        Ok(at)
    }

    /// The `n` values written from `at` on.
    fn get(&mut self, at: u64, n: usize) -> Result<Vec<f32>, PassError> {
        use std::io::{Read, Seek, SeekFrom};
        self.file.seek(SeekFrom::Start(at)).map_err(spill_error)?;
        let mut raw = vec![0u8; n * 4];
        self.file.read_exact(&mut raw).map_err(spill_error)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }
}

/// Second moments of one value over the calibration tokens.
struct Gram {
    g: Array2<f64>,
    seen: usize,
    stride: usize,
    used: usize,
}

impl Gram {
    fn new(width: usize, total_tokens: usize) -> Gram {
        Gram {
            g: Array2::zeros((width, width)),
            seen: 0,
            stride: total_tokens.div_ceil(MAX_GRAM_TOKENS).max(1),
            used: 0,
        }
    }

    fn add(&mut self, tokens: usize, x: &[f32], width: usize) -> Result<(), PassError> {
        if width != self.g.nrows() || x.len() != tokens * width {
            return Err(PassError::Calibration(format!(
                "captured value of width {width} ({} values for {tokens} tokens), expected width {}",
                x.len(),
                self.g.nrows()
            )));
        }
        let rows: Vec<usize> = (0..tokens).filter(|r| (self.seen + r) % self.stride == 0).collect();
        self.seen += tokens;
        self.used += rows.len();
        let mut xb = Array2::<f64>::zeros((rows.len(), width));
        for (k, &r) in rows.iter().enumerate() {
            for (dst, &v) in xb.row_mut(k).iter_mut().zip(&x[r * width..(r + 1) * width]) {
                *dst = v as f64;
            }
        }
        general_mat_mul(1.0, &xb.t(), &xb, 1.0, &mut self.g);
        Ok(())
    }

    /// (S, S⁻¹) with S = (G + λI)^{1/2}, λ = DAMP × mean diag(G).
    fn whitening(&self, what: &str) -> Result<(Mat<f64>, Mat<f64>), PassError> {
        let n = self.g.nrows();
        let mean_diag = (0..n).map(|i| self.g[[i, i]]).sum::<f64>() / n.max(1) as f64;
        if !(mean_diag > 0.0 && mean_diag.is_finite()) || self.used == 0 {
            return Err(PassError::Calibration(format!(
                "{what}: the input seen on the calibration data is all zeros or not finite"
            )));
        }
        let lambda = DAMP * mean_diag;
        let g = Mat::from_fn(n, n, |i, j| self.g[[i, j]] + if i == j { lambda } else { 0.0 });
        let e = g
            .self_adjoint_eigen(Side::Lower)
            .map_err(|e| PassError::Calibration(format!("{what}: eigendecomposition failed ({e:?})")))?;
        let q = e.U();
        let floor = lambda * 1e-6;
        let d: Vec<f64> = (0..n).map(|i| e.S().column_vector()[i].max(floor)).collect();
        let qs = Mat::from_fn(n, n, |i, j| q[(i, j)] * d[j].sqrt());
        let qi = Mat::from_fn(n, n, |i, j| q[(i, j)] / d[j].sqrt());
        Ok((&qs * q.transpose(), &qi * q.transpose()))
    }
}

/// Greedy rank allocation against a parameter budget. `layers`: per layer its whitened singular
/// values (non-increasing) and its shape (m, n). Every layer starts at rank 1; each step takes
/// the layer whose next rank removes the most relative output error (s²/Σs²) per parameter
/// ((m + n) per rank); a layer whose next rank would reach break-even instead goes dense (cost: the
/// rest of m·n, gain: its whole remaining error). Steps stop when none fits in
/// `keep` × Σ m·n. Returns the rank per layer, `None` for dense.
pub fn allocate_ranks(layers: &[(Vec<f64>, usize, usize)], keep: f64) -> Vec<Option<usize>> {
    let budget = keep * layers.iter().map(|(_, m, n)| (m * n) as f64).sum::<f64>();
    let energies: Vec<Vec<f64>> = layers
        .iter()
        .map(|(s, _, _)| {
            let total: f64 = s.iter().map(|v| v * v).sum::<f64>().max(1e-300);
            s.iter().map(|v| v * v / total).collect()
        })
        .collect();
    let mut k: Vec<usize> = vec![1; layers.len()];
    let mut dense = vec![false; layers.len()];
    let mut used: f64 = layers.iter().map(|(_, m, n)| (m + n) as f64).sum();
    loop {
        let mut best: Option<(usize, f64, f64)> = None;
        for (l, (_, m, n)) in layers.iter().enumerate() {
            if dense[l] {
                continue;
            }
            let (m, n) = (*m, *n);
            let kb = (m * n).div_ceil(m + n);
            let e = &energies[l];
            let (gain, cost) = if k[l] + 1 < kb && k[l] < e.len() {
                (e[k[l]], (m + n) as f64)
            } else {
                (e[k[l].min(e.len())..].iter().sum(), (m * n - k[l] * (m + n)) as f64)
            };
            if used + cost > budget {
                continue;
            }
            let ratio = gain / cost.max(1.0);
            if best.is_none_or(|b| ratio > b.1) {
                best = Some((l, ratio, cost));
            }
        }
        let Some((l, _, cost)) = best else { break };
        used += cost;
        let (m, n) = (layers[l].1, layers[l].2);
        if k[l] + 1 < (m * n).div_ceil(m + n) && k[l] < energies[l].len() {
            k[l] += 1;
        } else {
            dense[l] = true;
        }
    }
    k.into_iter().zip(dense).map(|(k, d)| (!d).then_some(k)).collect()
}

/// The activation-aware pass: calibration statistics of every selected encoder layer's input
/// through `calib`, whitened SVD, ranks by the rule or by the budget.
pub fn lowrank_calibrated(
    model: &ModelProto,
    opts: &LowrankOptions,
    calib: &mut dyn Calibrator,
) -> Result<(ModelProto, LowrankReport), PassError> {
    factorize_calibrated(model, opts, calib, GRAM_BYTES)
}

/// [`lowrank_calibrated`], with the Gram matrices captured `budget` bytes at a time.
fn factorize_calibrated(
    model: &ModelProto,
    opts: &LowrankOptions,
    calib: &mut dyn Calibrator,
    budget: usize,
) -> Result<(ModelProto, LowrankReport), PassError> {
    validate(opts)?;
    crate::passes::ensure_known_opsets(model)?;
    if opts.denoise.is_some() {
        return Err(PassError::Options(crate::options::OptionError::new(
            "denoise",
            "`denoise` belongs to the weight-only method: drop it with `calib_data`",
        )));
    }
    let start = Instant::now();
    let t = structure::discover(model)?;
    let targets = select(model, &t, opts)?;
    if opts.target_params.is_none() {
        // Only the encoder's layers are calibrated (the pooler and classifier stay as they are).
        check_fixed_rank(targets.iter().filter(|t| t.layer.is_some()), opts.rank)?;
    }
    let g = crate::passes::graph(model)?;
    let ix = GraphIndex::new(g);
    let mut rows: Vec<Option<LayerReport>> = vec![None; targets.len()];
    // One weight read by several layers (ALBERT) gets one factorization, fitted to all its
    // readers' inputs at once: ‖X₁(M − M̂)‖² + ‖X₂(M − M̂)‖² = ‖S(M − M̂)‖² with SᵀS = X₁ᵀX₁ + X₂ᵀX₂,
    // so the Gram matrices of its inputs are summed. `lead[i]`: the first target with i's weight.
    let mut lead: Vec<usize> = (0..targets.len()).collect();
    for (i, tg) in targets.iter().enumerate() {
        if let Some(f) = &tg.linear.factor {
            rows[i] = Some(tg.kept(format!("already factorized (rank {})", f.rank), f.rank, 1.0));
            continue;
        }
        if let Some(why) = &tg.shared_with {
            rows[i] = Some(tg.kept(why.clone(), 0, 1.0));
            continue;
        }
        if tg.layer.is_none() {
            rows[i] = Some(tg.kept(
                "not calibrated: the pooler and classifier read one vector per sequence (use the weight-only method for them)"
                    .into(),
                0,
                1.0,
            ));
            continue;
        }
        lead[i] = (0..i)
            .find(|&j| rows[j].is_none() && lead[j] == j && targets[j].linear.weight == tg.linear.weight)
            .unwrap_or(i);
    }
    let calibrated = |i: usize| rows[i].is_none();
    // Rank 1 in every calibrated weight is the least a budget keeps: one below it is refused
    // before the captures and SVDs (minutes on a large model).
    if let Some(keep) = opts.target_params {
        let shapes: Vec<(usize, usize)> = (0..targets.len())
            .filter(|&i| calibrated(i) && lead[i] == i)
            .map(|i| (targets[i].linear.in_features, targets[i].linear.out_features))
            .collect();
        let weights: usize = shapes.iter().map(|(m, n)| m * n).sum();
        let least = shapes.iter().map(|(m, n)| m + n).sum::<usize>() as f64 / weights.max(1) as f64;
        if keep < least {
            // Rounded up, so that the fraction named is one that is met.
            let least = (least * 1e4).ceil() / 1e4;
            return Err(PassError::Options(OptionError::new(
                "target_params",
                format!(
                    "`target_params` {keep}: out of reach: rank 1 in every calibrated layer keeps {least:.4} of their weights; ask for that or more"
                ),
            )));
        }
    }
    // The inputs each shared (or single) weight is fitted to: Q, K and V of a layer read one
    // input and share its Gram matrix; ALBERT's Q reads every layer's input.
    let mut inputs: Vec<(Vec<String>, usize)> = Vec::new();
    let mut input_of: Vec<usize> = vec![usize::MAX; targets.len()];
    for i in (0..targets.len()).filter(|&i| calibrated(i) && lead[i] == i) {
        let mut xs: Vec<String> = Vec::new();
        for j in (i..targets.len()).filter(|&j| calibrated(j) && lead[j] == i) {
            let x = ix.node(targets[j].linear.node).input[0].clone();
            if !xs.contains(&x) {
                xs.push(x);
            }
        }
        input_of[i] = match inputs.iter().position(|(v, _)| *v == xs) {
            Some(p) => p,
            None => {
                inputs.push((xs, targets[i].linear.in_features));
                inputs.len() - 1
            }
        };
    }
    // Per distinct input (Q, K and V share one), a few at a time: its Gram matrix, the whitening S
    // and S⁻¹, then the whitened SVD of each weight reading it. Kept per weight until the ranks are
    // chosen: its singular values and, up to the largest rank it could take (break-even, or full
    // with --force), the factors A = S⁻¹U and B = ΣVᵀ in float32, as they are written, set aside
    // in a temporary file. Nothing else outlives its input's run (BERT-base: 2 GB of f64 U, V and
    // S⁻¹ once; then 0.3 GB of factors in memory).
    struct Done {
        i: usize,
        s: Vec<f64>,
        /// Columns kept of A (rows of B).
        kmax: usize,
        /// Where Aᵀ [kmax, in] and B [kmax, out], row-major, start in the spill file: the first
        /// k rows of each are the factors at rank k.
        at: (u64, u64),
    }
    let mut spill = Spill::new()?;
    let mut spectra: Vec<Done> = Vec::new();
    for run in crate::passes::runs_within(inputs.iter().map(|(_, w)| 8 * w * w), budget) {
        let mut grams: Vec<Gram> = inputs[run.clone()]
            .iter()
            .map(|(xs, w)| Gram::new(*w, calib.tokens() * xs.len()))
            .collect();
        // Each value captured once, added to every Gram matrix that sums it.
        let mut names: Vec<String> = Vec::new();
        let mut into: Vec<Vec<usize>> = Vec::new();
        for (k, (xs, _)) in inputs[run.clone()].iter().enumerate() {
            for x in xs {
                match names.iter().position(|n| n == x) {
                    Some(p) => into[p].push(k),
                    None => {
                        names.push(x.clone());
                        into.push(vec![k]);
                    }
                }
            }
        }
        calib.capture(model, &names, &mut |positions, vals| {
            let tokens = positions.len();
            for ((v, w), to) in vals.iter().zip(&into) {
                for &k in to {
                    grams[k].add(tokens, v, *w)?;
                }
            }
            Ok(())
        })?;
        for (gram, p) in grams.into_iter().zip(run) {
            let readers: Vec<usize> = (0..targets.len()).filter(|&i| input_of[i] == p).collect();
            let what = format!("{} (input '{}')", targets[readers[0]].name(), inputs[p].0.join("' + '"));
            let (s_mat, s_inv) = gram.whitening(&what)?;
            drop(gram);
            for i in readers {
                let tg = &targets[i];
                let (m, n) = (tg.linear.in_features, tg.linear.out_features);
                let w = weight_matrix(model, &tg.linear)?;
                let sw = &s_mat * &w;
                let (u, s, v) = svd(&sw, &tg.name())?;
                let mut kmax = s.len();
                if !opts.force {
                    while kmax > 0 && at_break_even(kmax, m, n) {
                        kmax -= 1;
                    }
                }
                let a = &s_inv * u.subcols(0, kmax);
                let at_a = spill.put(
                    (0..kmax)
                        .flat_map(|c| (0..m).map(move |r| (r, c)))
                        .map(|(r, c)| a[(r, c)] as f32),
                )?;
                let at_b = spill.put(
                    (0..kmax)
                        .flat_map(|r| (0..n).map(move |c| (r, c)))
                        .map(|(r, c)| (s[r] * v[(c, r)]) as f32),
                )?;
                spectra.push(Done {
                    i,
                    kmax,
                    at: (at_a, at_b),
                    s,
                });
            }
        }
    }
    spectra.sort_by_key(|d| d.i);
    let ranks: Vec<Option<usize>> = match opts.target_params {
        Some(keep) => {
            let layers: Vec<(Vec<f64>, usize, usize)> = spectra
                .iter()
                .map(|d| {
                    let l = &targets[d.i].linear;
                    (d.s.clone(), l.in_features, l.out_features)
                })
                .collect();
            allocate_ranks(&layers, keep)
        }
        None => spectra
            .iter()
            .map(|d| Some(choose_rank(&d.s, opts.rank, opts.k_min, opts.k_max)))
            .collect(),
    };
    let mut reps = Vec::new();
    // The budget's weights (each spectrum's m·n before; after, k·(m + n) where factorized).
    let (mut budget_before, mut budget_after) = (0, 0);
    for (d, k) in spectra.iter().zip(ranks) {
        let tg = &targets[d.i];
        let (m, n) = (tg.linear.in_features, tg.linear.out_features);
        budget_before += m * n;
        budget_after += match k {
            Some(k) if opts.force || !at_break_even(k, m, n) => k * (m + n),
            _ => m * n,
        };
        // The weight's readers: itself and the layers sharing it, which get the same factors.
        let sharing: Vec<usize> = (d.i..targets.len()).filter(|&j| lead[j] == d.i).collect();
        let Some(k) = k else {
            for &j in &sharing {
                rows[j] = Some(
                    targets[j]
                        .kept(
                            format!(
                                "kept dense by the budget allocation (its useful rank reached break-even {:.1})",
                                break_even(m, n)
                            ),
                            0,
                            1.0,
                        )
                        .at_break_even(),
                );
            }
            continue;
        };
        let kept = energy_share(&d.s, k);
        if at_break_even(k, m, n) && !opts.force {
            for &j in &sharing {
                rows[j] = Some(targets[j].kept(
                    format!(
                        "rank {k} is at or above break-even {:.1}: factors would not be smaller (force factorizes anyway)",
                        break_even(m, n)
                    ),
                    k,
                    kept,
                ).at_break_even());
            }
            continue;
        }
        if k > d.kmax {
            return Err(PassError::Internal(format!(
                "{}: rank {k} above the {} kept",
                tg.name(),
                d.kmax
            )));
        }
        let (at, bt) = (spill.get(d.at.0, k * m)?, spill.get(d.at.1, k * n)?);
        let a = Mat::from_fn(m, k, |r, c| at[c * m + r] as f64);
        let b = Mat::from_fn(k, n, |r, c| bt[r * n + c] as f64);
        for &j in &sharing {
            reps.push(Replacement::new(&targets[j], &a, &b)?);
            rows[j] = Some(targets[j].done(k, kept));
        }
    }
    let out = factorize_graph(model, &reps)?;
    let rows: Vec<LayerReport> = rows.into_iter().flatten().collect();
    let mut report = finish(
        model,
        &out,
        opts,
        "activation-aware (whitened svd)".into(),
        rows,
        start.elapsed().as_secs_f64(),
    )?;
    if opts.target_params.is_some() {
        report.budget_weights_before = Some(budget_before);
        report.budget_weights_after = Some(budget_after);
    }
    report.calibration_seconds = calib.seconds();
    report.calibration_examples = Some(calib.examples());
    report.calibration_tokens = Some(calib.tokens());
    Ok((out, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::tensor;

    /// Gram matrices captured one input at a time (the budget a big model gets) give the ranks and
    /// factors one capture of every input gives, within float noise of where ONNX Runtime's
    /// graph is cut.
    #[test]
    fn grams_captured_in_runs_give_the_same_factors() {
        if !crate::testkit::shared::require_ort("activation-aware low rank's statistics") {
            return;
        }
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert-sdpa/model.onnx");
        let m = crate::onnx::load(&path).expect("the fixture loads");
        let opts = LowrankOptions {
            rank: RankRule::Ratio(0.25),
            ..Default::default()
        };
        let run = |budget: usize| {
            let mut c = crate::runtime::OrtCalibrator::new(
                crate::testkit::synth::random_batches(3, 7),
                crate::runtime::SessionOptions::default(),
            );
            factorize_calibrated(&m, &opts, &mut c, budget).expect("factorizes")
        };
        let ((whole, a), (runs, b)) = (run(usize::MAX), run(0));
        assert!(a.factorized > 0, "{a:?}");
        let ranks = |r: &LowrankReport| r.layers.iter().map(|l| (l.name.clone(), l.rank)).collect::<Vec<_>>();
        assert_eq!(ranks(&a), ranks(&b));
        let (gw, gr) = (whole.graph.as_ref().unwrap(), runs.graph.as_ref().unwrap());
        assert_eq!(gw.initializer.len(), gr.initializer.len());
        for (x, y) in gw.initializer.iter().zip(&gr.initializer) {
            assert_eq!((x.name(), &x.dims), (y.name(), &y.dims));
            let (xv, yv) = (
                tensor::to_f32(x).unwrap_or_default(),
                tensor::to_f32(y).unwrap_or_default(),
            );
            let scale = xv.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
            let worst = xv.iter().zip(&yv).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            assert!(worst <= 1e-4 * scale, "{}: {worst} of {scale}", x.name());
        }
    }
}
