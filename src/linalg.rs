//! The few dense linear-algebra routines the passes need, in f64: Gram accumulation, a
//! Cholesky-based inverse of symmetric positive definite matrices, and optimal-brain-surgeon
//! (OBS) greedy removal of rows with least-squares compensation.

/// Inverts a symmetric positive definite n×n row-major matrix in place (Cholesky). Errors when
/// the matrix is not positive definite (a non-positive pivot), naming the pivot.
pub fn spd_inverse(a: &mut [f64], n: usize) -> Result<(), String> {
    assert_eq!(a.len(), n * n);
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

/// Least squares with OBS greedy removal of groups of rows.
///
/// Model: targets Y ≈ X·W with X = [units…, 1] (the last column is the bias, never removed),
/// H = XᵀX + damping, W = H⁻¹·XᵀY. Removing group g (rows `g`) with the best compensation by
/// the remaining rows raises the squared error by tr(W_gᵀ (H⁻¹_gg)⁻¹ W_g) (Hassibi & Stork's
/// optimal brain surgeon, for blocks); W and H⁻¹ are then updated as if g never existed.
pub struct Obs {
    pub n: usize,
    pub m: usize,
    /// H⁻¹, n×n.
    pub hinv: Vec<f64>,
    /// W, n×m.
    pub w: Vec<f64>,
    removed: Vec<bool>,
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
        let mut w = vec![0.0; n * m];
        for i in 0..n {
            let hi = &h[i * n..(i + 1) * n];
            let wi = &mut w[i * m..(i + 1) * m];
            for (k, &hik) in hi.iter().enumerate() {
                if hik != 0.0 {
                    let ck = &c[k * m..(k + 1) * m];
                    for (x, &y) in wi.iter_mut().zip(ck) {
                        *x += hik * y;
                    }
                }
            }
        }
        Ok(Obs {
            n,
            m,
            hinv: h,
            w,
            removed: vec![false; n],
        })
    }

    /// Squared-error increase of removing `rows` now (with compensation).
    pub fn cost(&self, rows: &[usize]) -> f64 {
        if let [i] = rows {
            let d = self.hinv[i * self.n + i];
            if d <= 0.0 {
                return f64::INFINITY;
            }
            let w = &self.w[i * self.m..(i + 1) * self.m];
            return w.iter().map(|x| x * x).sum::<f64>() / d;
        }
        let g = rows.len();
        let mut b: Vec<f64> = Vec::with_capacity(g * g);
        for &i in rows {
            for &j in rows {
                b.push(self.hinv[i * self.n + j]);
            }
        }
        if spd_inverse(&mut b, g).is_err() {
            return f64::INFINITY;
        }
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
        let (n, m, g) = (self.n, self.m, rows.len());
        let mut b: Vec<f64> = Vec::with_capacity(g * g);
        for &i in rows {
            for &j in rows {
                b.push(self.hinv[i * n + j]);
            }
        }
        if spd_inverse(&mut b, g).is_err() {
            b = vec![0.0; g * g];
        }
        // K = H⁻¹[:, g]·B (n×g)
        let mut k = vec![0.0; n * g];
        for r in 0..n {
            for a in 0..g {
                let mut s = 0.0;
                for (bb, &j) in rows.iter().enumerate() {
                    s += self.hinv[r * n + j] * b[bb * g + a];
                }
                k[r * g + a] = s;
            }
        }
        // W -= K·W_g ; H⁻¹ -= K·H⁻¹[g, :]
        let wg: Vec<f64> = rows.iter().flat_map(|&i| self.w[i * m..(i + 1) * m].to_vec()).collect();
        let hg: Vec<f64> = rows
            .iter()
            .flat_map(|&i| self.hinv[i * n..(i + 1) * n].to_vec())
            .collect();
        for r in 0..n {
            if self.removed[r] {
                continue;
            }
            for a in 0..g {
                let kra = k[r * g + a];
                if kra == 0.0 {
                    continue;
                }
                let w_row = &mut self.w[r * m..(r + 1) * m];
                for (x, &y) in w_row.iter_mut().zip(&wg[a * m..(a + 1) * m]) {
                    *x -= kra * y;
                }
                let h_row = &mut self.hinv[r * n..(r + 1) * n];
                for (x, &y) in h_row.iter_mut().zip(&hg[a * n..(a + 1) * n]) {
                    *x -= kra * y;
                }
            }
        }
        for &i in rows {
            self.removed[i] = true;
            self.w[i * m..(i + 1) * m].iter_mut().for_each(|x| *x = 0.0);
        }
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
}
