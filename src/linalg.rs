//! The few dense linear-algebra routines the passes need, in f64: Gram accumulation, a
//! Cholesky-based inverse of symmetric positive definite matrices, and optimal-brain-surgeon
//! (OBS) greedy removal of rows with least-squares compensation.

/// Matrices at least this wide are inverted by faer (blocked, SIMD, on every core); smaller ones
/// (attention heads' blocks in the OBS cost) by the plain loops below.
const FAER_FROM: usize = 128;

/// Inverts a symmetric positive definite n×n row-major matrix in place (Cholesky). Errors when
/// the matrix is not positive definite (a non-positive pivot), naming the pivot.
pub fn spd_inverse(a: &mut [f64], n: usize) -> Result<(), String> {
    assert_eq!(a.len(), n * n);
    if n >= FAER_FROM {
        spd_inverse_faer(a, n)
    } else {
        spd_inverse_loops(a, n)
    }
}

/// [`spd_inverse`] by plain loops.
fn spd_inverse_loops(a: &mut [f64], n: usize) -> Result<(), String> {
    // L (lower) with A = L·Lᵀ, row by row (Cholesky–Banachiewicz): contiguous dot products.
    let mut l = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let (ri, rj) = (&l[i * n..i * n + j], &l[j * n..j * n + j]);
            let s: f64 = ri.iter().zip(rj).map(|(x, y)| x * y).sum();
            let v = a[i * n + j] - s;
            if i == j {
                if v.is_nan() || v <= 0.0 || !v.is_finite() {
                    return Err(format!("matrix is not positive definite (pivot {i} is {v:e})"));
                }
                l[i * n + i] = v.sqrt();
            } else {
                l[i * n + j] = v / l[j * n + j];
            }
        }
    }
    // M = L⁻¹ (lower triangular), column by column of the identity, stored transposed (Mt[j] = column j).
    let mut mt = vec![0.0f64; n * n];
    for j in 0..n {
        let col = &mut mt[j * n..(j + 1) * n];
        col[j] = 1.0 / l[j * n + j];
        for i in j + 1..n {
            let row = &l[i * n + j..i * n + i];
            let s: f64 = row.iter().zip(&col[j..i]).map(|(x, y)| x * y).sum();
            col[i] = -s / l[i * n + i];
        }
    }
    // A⁻¹ = Mᵀ·M: (A⁻¹)[i][j] = Σ_k M[k][i]·M[k][j] = dot(Mt[i], Mt[j]) over k ≥ max(i, j).
    for i in 0..n {
        for j in 0..=i {
            let (ci, cj) = (&mt[i * n + i..(i + 1) * n], &mt[j * n + i..(j + 1) * n]);
            let s: f64 = ci.iter().zip(cj).map(|(x, y)| x * y).sum();
            a[i * n + j] = s;
            a[j * n + i] = s;
        }
    }
    Ok(())
}

/// [`spd_inverse`] through faer's Cholesky factorization (the lower triangle is read).
fn spd_inverse_faer(a: &mut [f64], n: usize) -> Result<(), String> {
    use faer::linalg::solvers::DenseSolveCore;
    let m = faer::MatRef::from_row_major_slice(a, n, n);
    let inv = match m.llt(faer::Side::Lower) {
        Ok(llt) => llt.inverse(),
        Err(faer::linalg::cholesky::llt::factor::LltError::NonPositivePivot { index }) => {
            return Err(format!(
                "matrix is not positive definite (pivot {index} is not positive)"
            ))
        }
    };
    for i in 0..n {
        for j in 0..n {
            a[i * n + j] = inv[(i, j)];
        }
    }
    if let Some(i) = a.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "matrix is not positive definite (its inverse is not finite at row {})",
            i / n
        ));
    }
    Ok(())
}

/// Row-major `a` (r×k) times `b` (k×c), through faer.
fn matmul(a: &[f64], b: &[f64], r: usize, k: usize, c: usize) -> Vec<f64> {
    let (fa, fb) = (
        faer::MatRef::from_row_major_slice(a, r, k),
        faer::MatRef::from_row_major_slice(b, k, c),
    );
    let p = fa * fb;
    let mut out = Vec::with_capacity(r * c);
    for i in 0..r {
        out.extend((0..c).map(|j| p[(i, j)]));
    }
    out
}

/// Threads for one OBS update of `work` multiply-adds: one below a size where spawning costs more
/// than it saves; else the machine's cores (at most 8). Unit tests split even small updates, over
/// three threads, so that the split is what they check.
fn workers(work: usize) -> usize {
    if cfg!(test) {
        return if work < 1 << 10 { 1 } else { 3 };
    }
    if work < 1 << 20 {
        return 1;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// Single-row removals whose H⁻¹ updates wait, as rank-one terms, before they are applied to
/// the whole matrix at once (one matrix product instead of as many passes over it).
const PENDING: usize = 64;

/// Least squares with OBS greedy removal of groups of rows.
///
/// Model: targets Y ≈ X·W with X = [units…, 1] (the last column is the bias, never removed),
/// H = XᵀX + damping, W = H⁻¹·XᵀY. Removing group g (rows `g`) with the best compensation by
/// the remaining rows raises the squared error by tr(W_gᵀ (H⁻¹_gg)⁻¹ W_g) (Hassibi & Stork's
/// optimal brain surgeon, for blocks); W and H⁻¹ are then updated as if g never existed.
///
/// Kept fast for wide layers (a BERT-base FFN: 3073 rows): H⁻¹ only over the rows still in
/// (compacted as rows go), single-row removals update it lazily (H⁻¹ = base − Σ uuᵀ over the
/// last few removals, applied together as one matrix product), each update of W is split by
/// rows over the cores, and each row's squared norm is kept with it (a single row's cost reads
/// it and the diagonal).
pub struct Obs {
    pub n: usize,
    pub m: usize,
    /// H⁻¹ over the rows of `live`, before the pending updates: row-major, k × k (k = live.len()).
    hinv: Vec<f64>,
    /// Pending rank-one updates of `hinv`: row-major, one k-vector u each (H⁻¹ = hinv − Σ uuᵀ).
    pending: Vec<f64>,
    /// The diagonal of H⁻¹ with the pending updates, over the rows of `live`.
    diag: Vec<f64>,
    /// Rows still in H⁻¹, ascending (some removed since the last compaction).
    live: Vec<usize>,
    /// Each row's place in `live` (meaningless once removed).
    at: Vec<usize>,
    /// Removed rows still in `live`.
    dead: usize,
    /// W, n×m.
    pub w: Vec<f64>,
    /// Squared norm of each row of W.
    norms: Vec<f64>,
    removed: Vec<bool>,
}

/// What [`each_row`] does to one row: (its place in `live`, its W row, its squared norm, its H⁻¹
/// row when asked for).
type RowUpdate<'a> = dyn Fn(usize, &mut [f64], &mut f64, Option<&mut [f64]>) + Sync + 'a;

/// Runs `f(r, w_row, norm, h_row)` for each row still in (`r` its place in `live`), split by rows
/// over `threads`; `h_row` is row r of `hinv` (k wide) when given.
#[allow(clippy::too_many_arguments)]
fn each_row(
    live: &[usize],
    removed: &[bool],
    m: usize,
    threads: usize,
    mut hinv: Option<&mut [f64]>,
    w: &mut [f64],
    norms: &mut [f64],
    f: &RowUpdate,
) {
    let (k, n) = (live.len(), norms.len());
    let per = k.div_ceil(threads.max(1)).max(1);
    let run = |lo: usize, hi: usize, mut h: Option<&mut [f64]>, w: &mut [f64], norms: &mut [f64], base: usize| {
        for r in lo..hi {
            let o = live[r];
            if removed[o] {
                continue;
            }
            let h_row = h.as_deref_mut().map(|h| &mut h[(r - lo) * k..(r - lo + 1) * k]);
            f(
                r,
                &mut w[(o - base) * m..(o - base + 1) * m],
                &mut norms[o - base],
                h_row,
            );
        }
    };
    std::thread::scope(|s| {
        let (mut w_rest, mut n_rest) = (w, norms);
        let mut base = 0;
        for lo in (0..k).step_by(per) {
            let hi = (lo + per).min(k);
            let end = if hi < k { live[hi] } else { n };
            let h = hinv.take().map(|h| {
                let (chunk, tail) = h.split_at_mut((hi - lo) * k);
                hinv = Some(tail);
                chunk
            });
            let (wc, w_tail) = std::mem::take(&mut w_rest).split_at_mut((end - base) * m);
            let (nc, n_tail) = std::mem::take(&mut n_rest).split_at_mut(end - base);
            (w_rest, n_rest) = (w_tail, n_tail);
            let from = base;
            base = end;
            if hi == k {
                run(lo, hi, h, wc, nc, from);
            } else {
                s.spawn(move || run(lo, hi, h, wc, nc, from));
            }
        }
    });
}

impl Obs {
    /// `h` = XᵀX (n×n), `c` = XᵀY (n×m); `damp` is added to the diagonal of the unit rows (not
    /// the bias row, the last).
    pub fn new(mut h: Vec<f64>, c: &[f64], n: usize, m: usize, damp: f64) -> Result<Obs, String> {
        for i in 0..n.saturating_sub(1) {
            h[i * n + i] += damp;
        }
        // A row that never saw data (a dead unit) still needs a positive pivot.
        for i in 0..n {
            if h[i * n + i] <= 0.0 {
                h[i * n + i] = damp.max(1e-12);
            }
        }
        spd_inverse(&mut h, n)?;
        let w = matmul(&h, c, n, n, m);
        let norms = (0..n)
            .map(|i| w[i * m..(i + 1) * m].iter().map(|x| x * x).sum())
            .collect();
        Ok(Obs {
            n,
            m,
            diag: (0..n).map(|i| h[i * n + i]).collect(),
            hinv: h,
            pending: Vec::new(),
            live: (0..n).collect(),
            at: (0..n).collect(),
            dead: 0,
            w,
            norms,
            removed: vec![false; n],
        })
    }

    /// H⁻¹ at rows `i`, `j` (both still in).
    fn h(&self, i: usize, j: usize) -> f64 {
        let (k, p, q) = (self.live.len(), self.at[i], self.at[j]);
        if self.pending.is_empty() {
            return self.hinv[p * k + q];
        }
        let lazy: f64 = self.pending.chunks(k).map(|u| u[p] * u[q]).sum();
        self.hinv[p * k + q] - lazy
    }

    /// (H⁻¹ at `rows` × `rows`)⁻¹, row-major; `None` when that block is not positive definite.
    fn block_inverse(&self, rows: &[usize]) -> Option<Vec<f64>> {
        let mut b: Vec<f64> = rows
            .iter()
            .flat_map(|&i| rows.iter().map(move |&j| self.h(i, j)))
            .collect();
        spd_inverse(&mut b, rows.len()).ok().map(|()| b)
    }

    /// Squared-error increase of removing `rows` now (with compensation).
    pub fn cost(&self, rows: &[usize]) -> f64 {
        if let [i] = rows {
            let d = self.diag[self.at[*i]];
            if d <= 0.0 {
                return f64::INFINITY;
            }
            return self.norms[*i] / d;
        }
        let g = rows.len();
        let Some(b) = self.block_inverse(rows) else {
            return f64::INFINITY;
        };
        // tr(W_gᵀ B W_g) = Σ_c Σ_ij W[i][c] B[i][j] W[j][c]
        let mut total = 0.0;
        for (a, &i) in rows.iter().enumerate() {
            for (bb, &j) in rows.iter().enumerate() {
                let bij = b[a * g + bb];
                let (wi, wj) = (
                    &self.w[i * self.m..(i + 1) * self.m],
                    &self.w[j * self.m..(j + 1) * self.m],
                );
                total += bij * wi.iter().zip(wj).map(|(x, y)| x * y).sum::<f64>();
            }
        }
        total
    }

    /// Removes `rows`, compensating the remaining rows of W and updating H⁻¹.
    pub fn remove(&mut self, rows: &[usize]) {
        if let [j] = rows {
            self.remove_one(*j);
        } else {
            self.flush();
            self.remove_group(rows);
        }
        for &i in rows {
            self.removed[i] = true;
            self.w[i * self.m..(i + 1) * self.m].iter_mut().for_each(|x| *x = 0.0);
            self.norms[i] = 0.0;
        }
        self.dead += rows.len();
        if self.dead * 16 >= self.live.len() {
            self.compact();
        }
    }

    /// One row: H⁻¹'s column j with the pending updates is c; W -= c·w_jᵀ / c_j; the update
    /// c·cᵀ / c_j of H⁻¹ waits with the others (its diagonal is applied now).
    fn remove_one(&mut self, j: usize) {
        let (m, k, pj) = (self.m, self.live.len(), self.at[j]);
        let mut c = self.hinv[pj * k..(pj + 1) * k].to_vec(); // row j = column j
        for u in self.pending.chunks(k) {
            let f = u[pj];
            if f != 0.0 {
                c.iter_mut().zip(u).for_each(|(x, &y)| *x -= f * y);
            }
        }
        let cjj = c[pj];
        if cjj.is_nan() || cjj <= 0.0 {
            return; // as a block whose inverse fails: removed without compensation
        }
        let inv = 1.0 / cjj;
        let wj = self.w[j * m..(j + 1) * m].to_vec();
        let Obs {
            live,
            removed,
            w,
            norms,
            ..
        } = self;
        each_row(
            live,
            removed,
            m,
            workers(k * m),
            None,
            w,
            norms,
            &|r, w_row, norm, _| {
                let kr = c[r] * inv;
                if kr != 0.0 {
                    w_row.iter_mut().zip(&wj).for_each(|(x, &y)| *x -= kr * y);
                    *norm = w_row.iter().map(|x| x * x).sum();
                }
            },
        );
        let scale = cjj.sqrt();
        for (d, &x) in self.diag.iter_mut().zip(&c) {
            *d -= x * x * inv;
        }
        self.pending.extend(c.iter().map(|x| x / scale));
        if self.pending.len() >= PENDING * k {
            self.flush();
        }
    }

    /// Applies the pending updates to H⁻¹ (hinv −= UᵀU) and reads the diagonal back.
    fn flush(&mut self) {
        let k = self.live.len();
        if self.pending.is_empty() || k == 0 {
            return;
        }
        let p = self.pending.len() / k;
        let u = faer::MatRef::from_row_major_slice(&self.pending, p, k);
        faer::linalg::matmul::matmul(
            faer::MatMut::from_row_major_slice_mut(&mut self.hinv, k, k),
            faer::Accum::Add,
            u.transpose(),
            u,
            -1.0,
            faer::get_global_parallelism(),
        );
        self.pending.clear();
        self.diag = (0..k).map(|p| self.hinv[p * k + p]).collect();
    }

    /// A group of rows, on H⁻¹ with nothing pending.
    fn remove_group(&mut self, rows: &[usize]) {
        let (m, g, k) = (self.m, rows.len(), self.live.len());
        let cols: Vec<usize> = rows.iter().map(|&i| self.at[i]).collect();
        let b = self.block_inverse(rows).unwrap_or_else(|| vec![0.0; g * g]);
        // K = H⁻¹[:, g]·B (k×g)
        let mut kk = vec![0.0; k * g];
        for r in 0..k {
            for a in 0..g {
                let mut s = 0.0;
                for (bb, &q) in cols.iter().enumerate() {
                    s += self.hinv[r * k + q] * b[bb * g + a];
                }
                kk[r * g + a] = s;
            }
        }
        // W -= K·W_g ; H⁻¹ -= K·H⁻¹[g, :]
        let wg: Vec<f64> = rows.iter().flat_map(|&i| self.w[i * m..(i + 1) * m].to_vec()).collect();
        let hg: Vec<f64> = cols
            .iter()
            .flat_map(|&p| self.hinv[p * k..(p + 1) * k].to_vec())
            .collect();
        let Obs {
            hinv,
            live,
            w,
            norms,
            removed,
            ..
        } = self;
        each_row(
            live,
            removed,
            m,
            workers(k * (k + m)),
            Some(hinv),
            w,
            norms,
            &|r, w_row, norm, h_row| {
                let h_row = h_row.expect("H⁻¹ rows given");
                for a in 0..g {
                    let kra = kk[r * g + a];
                    if kra == 0.0 {
                        continue;
                    }
                    for (x, &y) in w_row.iter_mut().zip(&wg[a * m..(a + 1) * m]) {
                        *x -= kra * y;
                    }
                    for (x, &y) in h_row.iter_mut().zip(&hg[a * k..(a + 1) * k]) {
                        *x -= kra * y;
                    }
                }
                *norm = w_row.iter().map(|x| x * x).sum();
            },
        );
        self.diag = (0..k).map(|p| self.hinv[p * k + p]).collect();
    }

    /// Drops the removed rows (and columns) from H⁻¹.
    fn compact(&mut self) {
        self.flush();
        let k = self.live.len();
        let keep: Vec<usize> = (0..k).filter(|&p| !self.removed[self.live[p]]).collect();
        let mut h = Vec::with_capacity(keep.len() * keep.len());
        for &p in &keep {
            let row = &self.hinv[p * k..(p + 1) * k];
            h.extend(keep.iter().map(|&q| row[q]));
        }
        self.diag = keep.iter().map(|&p| self.diag[p]).collect();
        self.hinv = h;
        self.live = keep.iter().map(|&p| self.live[p]).collect();
        for (p, &o) in self.live.iter().enumerate() {
            self.at[o] = p;
        }
        self.dead = 0;
    }

    pub fn is_removed(&self, row: usize) -> bool {
        self.removed[row]
    }
}

/// Greedy OBS order over `groups` (each a list of rows): removes, one group at a time, the
/// cheapest, up to `count` more groups. Groups `obs` has already removed are skipped, so a
/// greedy run can be continued where an earlier call stopped. Returns the removed group
/// indices in order and the cost of each removal.
pub fn obs_greedy(obs: &mut Obs, groups: &[Vec<usize>], count: usize) -> (Vec<usize>, Vec<f64>) {
    let mut alive: Vec<bool> = groups
        .iter()
        .map(|g| g.first().is_some_and(|&r| !obs.is_removed(r)))
        .collect();
    let mut order = Vec::new();
    let mut costs = Vec::new();
    for _ in 0..count {
        let mut best = None;
        for (gi, g) in groups.iter().enumerate() {
            if !alive[gi] {
                continue;
            }
            let c = obs.cost(g);
            if best.is_none_or(|(_, bc)| c < bc) {
                best = Some((gi, c));
            }
        }
        let Some((gi, c)) = best else { break };
        obs.remove(&groups[gi]);
        alive[gi] = false;
        order.push(gi);
        costs.push(c);
    }
    (order, costs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_of_a_small_spd_matrix() {
        // [[4, 2], [2, 3]]⁻¹ = 1/8 · [[3, -2], [-2, 4]]
        let mut a = vec![4.0, 2.0, 2.0, 3.0];
        spd_inverse(&mut a, 2).unwrap();
        let want = [0.375, -0.25, -0.25, 0.5];
        for (x, y) in a.iter().zip(want) {
            assert!((x - y).abs() < 1e-12, "{a:?}");
        }
        assert!(spd_inverse(&mut [1.0, 2.0, 2.0, 1.0], 2).is_err());
    }

    #[test]
    fn inverse_times_matrix_is_identity() {
        let n = 7;
        let mut rng = 1u64;
        let mut next = || {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((rng >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        let x: Vec<f64> = (0..n * 20).map(|_| next()).collect();
        let mut h = vec![0.0; n * n];
        for r in 0..20 {
            for i in 0..n {
                for j in 0..n {
                    h[i * n + j] += x[r * n + i] * x[r * n + j];
                }
            }
        }
        let mut inv = h.clone();
        spd_inverse(&mut inv, n).unwrap();
        for i in 0..n {
            for j in 0..n {
                let s: f64 = (0..n).map(|k| h[i * n + k] * inv[k * n + j]).sum();
                assert!((s - if i == j { 1.0 } else { 0.0 }).abs() < 1e-9);
            }
        }
    }

    /// Removing a row with OBS must give exactly the least-squares refit on the other rows.
    #[test]
    fn obs_removal_equals_refit_on_the_rest() {
        let (t, n, m) = (50, 4, 2);
        let mut rng = 7u64;
        let mut next = || {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((rng >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        // X = [3 units, 1]; Y = X·W* + noise.
        let mut x = vec![0.0; t * n];
        let mut y = vec![0.0; t * m];
        for r in 0..t {
            for i in 0..n - 1 {
                x[r * n + i] = next();
            }
            x[r * n + n - 1] = 1.0;
            for c in 0..m {
                y[r * m + c] = x[r * n] * 0.5 - x[r * n + 1] + 0.3 * x[r * n + 2] + 0.2 + 0.01 * next() + c as f64;
            }
        }
        let gram = |cols: &[usize]| {
            let k = cols.len();
            let mut h = vec![0.0; k * k];
            let mut c = vec![0.0; k * m];
            for r in 0..t {
                for (a, &i) in cols.iter().enumerate() {
                    for (b, &j) in cols.iter().enumerate() {
                        h[a * k + b] += x[r * n + i] * x[r * n + j];
                    }
                    for cc in 0..m {
                        c[a * m + cc] += x[r * n + i] * y[r * m + cc];
                    }
                }
            }
            (h, c)
        };
        let (h, c) = gram(&[0, 1, 2, 3]);
        let mut obs = Obs::new(h, &c, n, m, 0.0).unwrap();
        let sse = |w: &[f64], cols: &[usize]| -> f64 {
            (0..t)
                .map(|r| {
                    (0..m)
                        .map(|cc| {
                            let p: f64 = cols
                                .iter()
                                .enumerate()
                                .map(|(a, &i)| x[r * n + i] * w[a * m + cc])
                                .sum();
                            (p - y[r * m + cc]).powi(2)
                        })
                        .sum::<f64>()
                })
                .sum()
        };
        let full = sse(&obs.w, &[0, 1, 2, 3]);
        let predicted = obs.cost(&[2]);
        obs.remove(&[2]);
        // Direct refit without unit 2.
        let (h2, c2) = gram(&[0, 1, 3]);
        let direct = Obs::new(h2, &c2, 3, m, 0.0).unwrap();
        let kept: Vec<f64> = [0usize, 1, 3]
            .iter()
            .flat_map(|&i| obs.w[i * m..(i + 1) * m].to_vec())
            .collect();
        for (a, b) in kept.iter().zip(&direct.w) {
            assert!((a - b).abs() < 1e-9, "{kept:?} vs {:?}", direct.w);
        }
        let after = sse(&direct.w, &[0, 1, 3]);
        assert!(
            (after - full - predicted).abs() < 1e-9,
            "{after} - {full} vs {predicted}"
        );
    }

    /// A greedy run continued where an earlier call stopped equals one uninterrupted run.
    #[test]
    fn greedy_can_be_continued() {
        let n = 6;
        let mut rng = 3u64;
        let mut next = || {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((rng >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        let rows: Vec<Vec<f64>> = (0..40)
            .map(|_| (0..n).map(|i| if i == n - 1 { 1.0 } else { next() }).collect())
            .collect();
        let mut h = vec![0.0; n * n];
        let mut c = vec![0.0; n];
        for r in &rows {
            let y = r[0] - 0.5 * r[2] + 0.1 * next();
            for i in 0..n {
                c[i] += r[i] * y;
                for j in 0..n {
                    h[i * n + j] += r[i] * r[j];
                }
            }
        }
        let groups: Vec<Vec<usize>> = (0..n - 1).map(|i| vec![i]).collect();
        let mut whole = Obs::new(h.clone(), &c, n, 1, 1e-3).unwrap();
        let (order, costs) = obs_greedy(&mut whole, &groups, 4);
        let mut parts = Obs::new(h, &c, n, 1, 1e-3).unwrap();
        let (mut o2, mut c2) = obs_greedy(&mut parts, &groups, 2);
        let (o3, c3) = obs_greedy(&mut parts, &groups, 2);
        o2.extend(o3);
        c2.extend(c3);
        assert_eq!(order, o2);
        assert!(costs.iter().zip(&c2).all(|(a, b)| (a - b).abs() < 1e-12));
        assert!(whole.w.iter().zip(&parts.w).all(|(a, b)| (a - b).abs() < 1e-12));
    }

    /// A random SPD problem of `n` rows (the last the bias) and `m` targets: (H, C).
    fn problem(n: usize, m: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
        let mut rng = seed;
        let mut next = || {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((rng >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        let t = n + 50;
        let x: Vec<f64> = (0..t * n).map(|i| if i % n == n - 1 { 1.0 } else { next() }).collect();
        let y: Vec<f64> = (0..t * m).map(|_| next()).collect();
        let mut h = vec![0.0; n * n];
        let mut c = vec![0.0; n * m];
        for r in 0..t {
            let xr = &x[r * n..(r + 1) * n];
            for i in 0..n {
                for j in 0..n {
                    h[i * n + j] += xr[i] * xr[j];
                }
                for cc in 0..m {
                    c[i * m + cc] += xr[i] * y[r * m + cc];
                }
            }
        }
        (h, c)
    }

    /// faer's inverse (wide matrices) agrees with the loops' (narrow ones) and is an inverse.
    #[test]
    fn faer_inverse_matches_the_loops() {
        let n = FAER_FROM + 3;
        let (h, _) = problem(n, 1, 5);
        let (mut fast, mut slow) = (h.clone(), h.clone());
        spd_inverse(&mut fast, n).unwrap();
        spd_inverse_loops(&mut slow, n).unwrap();
        let scale = slow.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        for (a, b) in fast.iter().zip(&slow) {
            assert!((a - b).abs() <= 1e-9 * scale, "{a} vs {b}");
        }
        for i in 0..n {
            for j in 0..n {
                let s: f64 = (0..n).map(|k| h[i * n + k] * fast[k * n + j]).sum();
                assert!((s - if i == j { 1.0 } else { 0.0 }).abs() < 1e-8, "({i}, {j}): {s}");
            }
        }
        // Not positive definite, NaN: errors, as the loops do.
        let mut bad = h.clone();
        bad[7 * n + 7] = -1.0;
        assert!(spd_inverse(&mut bad, n).is_err());
        let mut nan = h;
        nan[3 * n + 3] = f64::NAN;
        assert!(spd_inverse(&mut nan, n).is_err());
    }

    /// OBS on the whole matrix, as it was before H⁻¹ was compacted and the update split over
    /// threads: the reference the fast one must equal exactly.
    fn reference_greedy(
        hinv: &mut [f64],
        w: &mut [f64],
        n: usize,
        m: usize,
        groups: &[Vec<usize>],
        count: usize,
    ) -> (Vec<usize>, Vec<f64>) {
        let block_inverse = |hinv: &[f64], rows: &[usize]| {
            let mut b: Vec<f64> = rows
                .iter()
                .flat_map(|&i| rows.iter().map(move |&j| hinv[i * n + j]))
                .collect();
            spd_inverse(&mut b, rows.len()).unwrap();
            b
        };
        let mut removed = vec![false; n];
        let mut alive = vec![true; groups.len()];
        let (mut order, mut costs) = (Vec::new(), Vec::new());
        for _ in 0..count {
            let mut best: Option<(usize, f64)> = None;
            for (gi, rows) in groups.iter().enumerate() {
                if !alive[gi] {
                    continue;
                }
                let g = rows.len();
                let c = if let [i] = rows[..] {
                    let d = hinv[i * n + i];
                    let wi = &w[i * m..(i + 1) * m];
                    if d <= 0.0 {
                        f64::INFINITY
                    } else {
                        wi.iter().map(|x| x * x).sum::<f64>() / d
                    }
                } else {
                    let b = block_inverse(hinv, rows);
                    let mut total = 0.0;
                    for (a, &i) in rows.iter().enumerate() {
                        for (bb, &j) in rows.iter().enumerate() {
                            let (wi, wj) = (&w[i * m..(i + 1) * m], &w[j * m..(j + 1) * m]);
                            total += b[a * g + bb] * wi.iter().zip(wj).map(|(x, y)| x * y).sum::<f64>();
                        }
                    }
                    total
                };
                if best.is_none_or(|(_, bc)| c < bc) {
                    best = Some((gi, c));
                }
            }
            let Some((gi, c)) = best else { break };
            let rows = &groups[gi];
            let g = rows.len();
            let b = block_inverse(hinv, rows);
            let mut k = vec![0.0; n * g];
            for r in 0..n {
                for a in 0..g {
                    let mut s = 0.0;
                    for (bb, &j) in rows.iter().enumerate() {
                        s += hinv[r * n + j] * b[bb * g + a];
                    }
                    k[r * g + a] = s;
                }
            }
            let wg: Vec<f64> = rows.iter().flat_map(|&i| w[i * m..(i + 1) * m].to_vec()).collect();
            let hg: Vec<f64> = rows.iter().flat_map(|&i| hinv[i * n..(i + 1) * n].to_vec()).collect();
            for r in 0..n {
                if removed[r] {
                    continue;
                }
                for a in 0..g {
                    let kra = k[r * g + a];
                    if kra == 0.0 {
                        continue;
                    }
                    for (x, &y) in w[r * m..(r + 1) * m].iter_mut().zip(&wg[a * m..(a + 1) * m]) {
                        *x -= kra * y;
                    }
                    for (x, &y) in hinv[r * n..(r + 1) * n].iter_mut().zip(&hg[a * n..(a + 1) * n]) {
                        *x -= kra * y;
                    }
                }
            }
            for &i in rows {
                removed[i] = true;
                w[i * m..(i + 1) * m].iter_mut().for_each(|x| *x = 0.0);
            }
            alive[gi] = false;
            order.push(gi);
            costs.push(c);
        }
        (order, costs)
    }

    /// Compacting H⁻¹, splitting the updates over threads and (single rows) deferring H⁻¹'s
    /// updates give the removals, costs and weights of the whole-matrix algorithm: exactly for
    /// groups of rows (the same arithmetic), to rounding for single rows (the deferred updates sum
    /// in another order); the updates split over three threads (`workers` in unit tests).
    #[test]
    fn fast_obs_equals_the_whole_matrix() {
        for (n, m, group, count) in [(1101, 24, 1, 990), (161, 8, 4, 38)] {
            let (h, c) = problem(n, m, n as u64);
            let groups: Vec<Vec<usize>> = (0..(n - 1) / group)
                .map(|gi| (gi * group..(gi + 1) * group).collect())
                .collect();
            let mut obs = Obs::new(h, &c, n, m, 1e-2).unwrap();
            let (mut hinv, mut w) = (obs.hinv.clone(), obs.w.clone());
            let (want_order, want_costs) = reference_greedy(&mut hinv, &mut w, n, m, &groups, count);
            // In two calls, as the calibrated pass does (the probe, then the rest of the curve).
            let (mut order, mut costs) = obs_greedy(&mut obs, &groups, count / 3);
            let (o2, c2) = obs_greedy(&mut obs, &groups, count - count / 3);
            order.extend(o2);
            costs.extend(c2);
            assert_eq!(order, want_order, "n = {n}");
            assert!(obs.live.len() < n - count / 2, "H⁻¹ was compacted");
            if group > 1 {
                assert_eq!(costs, want_costs, "n = {n}");
                assert_eq!(obs.w, w, "n = {n}");
                continue;
            }
            for (a, b) in costs.iter().zip(&want_costs) {
                assert!((a - b).abs() <= 1e-9 * b.abs().max(1e-12), "{a} vs {b}");
            }
            let scale = w.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            for (a, b) in obs.w.iter().zip(&w) {
                assert!((a - b).abs() <= 1e-9 * scale, "{a} vs {b}");
            }
        }
    }
}
