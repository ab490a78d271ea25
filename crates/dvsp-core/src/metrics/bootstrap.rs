//! Bootstrap 95% intervals (percentile method, Efron & Tibshirani 1993) for EER and RI.
//! EER: the test images are drawn with replacement (each image i gets a multinomial count
//! w_i), so the pair (i, j) weighs w_i w_j: the dependence between pairs sharing an image is
//! kept, which resampling pairs would ignore. RI: the ordered class pairs are drawn
//! with replacement, then the attacked pairs within each (see `ri_interval`).
use rand::{Rng, SeedableRng};
use tch::Tensor;

use crate::{Error, Result};

/// The 2.5% and 97.5% percentiles of `v`.
pub fn interval(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
    (at(0.025), at(0.975))
}

/// All pairs i < j of a test set, sorted by cosine distance.
pub struct PairTable {
    d: Vec<f32>,
    i: Vec<u16>,
    j: Vec<u16>,
    genuine: Vec<bool>,
    n: usize,
}

impl PairTable {
    /// `emb`: unit-norm `[N, k]` on the CPU, N at most 65,535.
    pub fn new(emb: &Tensor, labels: &[i64]) -> Result<PairTable> {
        let n = labels.len();
        if n > u16::MAX as usize || n < 2 {
            return Err(Error::Invalid(format!(
                "the EER bootstrap takes 2 to 65535 images, not {n}"
            )));
        }
        let mut rows: Vec<(f32, u16, u16)> = Vec::with_capacity(n * (n - 1) / 2);
        for i0 in (0..n).step_by(512) {
            let b = 512.min(n - i0);
            let sim = emb.narrow(0, i0 as i64, b as i64).matmul(&emb.tr());
            let sim: Vec<f32> = Vec::<f32>::try_from(sim.flatten(0, -1))?;
            for r in 0..b {
                let i = i0 + r;
                for j in i + 1..n {
                    rows.push(((1.0 - sim[r * n + j]).clamp(0.0, 2.0), i as u16, j as u16));
                }
            }
        }
        rows.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        Ok(PairTable {
            genuine: rows
                .iter()
                .map(|r| labels[r.1 as usize] == labels[r.2 as usize])
                .collect(),
            d: rows.iter().map(|r| r.0).collect(),
            i: rows.iter().map(|r| r.1).collect(),
            j: rows.iter().map(|r| r.2).collect(),
            n,
        })
    }

    /// EER with image weights `w` (all 1: the plain EER): the mean of FMR and FNMR at the
    /// distinct threshold where they are closest.
    pub fn weighted_eer(&self, w: &[f64]) -> f64 {
        let (mut g_tot, mut i_tot) = (0.0, 0.0);
        for k in 0..self.d.len() {
            let pw = w[self.i[k] as usize] * w[self.j[k] as usize];
            if self.genuine[k] {
                g_tot += pw;
            } else {
                i_tot += pw;
            }
        }
        // Below every distance: FMR 0, FNMR 1.
        let (mut best_gap, mut best) = (1.0, 0.5);
        let (mut g, mut imp) = (0.0, 0.0);
        let mut k = 0;
        while k < self.d.len() {
            let t = self.d[k];
            while k < self.d.len() && self.d[k] == t {
                let pw = w[self.i[k] as usize] * w[self.j[k] as usize];
                if self.genuine[k] {
                    g += pw;
                } else {
                    imp += pw;
                }
                k += 1;
            }
            let (fmr, fnmr) = (imp / i_tot, 1.0 - g / g_tot);
            if (fmr - fnmr).abs() < best_gap {
                (best_gap, best) = ((fmr - fnmr).abs(), (fmr + fnmr) / 2.0);
            }
        }
        best
    }

    /// The 95% interval of the EER over `reps` resamples of the images.
    pub fn eer_interval(&self, reps: usize, seed: u64) -> (f64, f64) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let eers = (0..reps)
            .map(|_| {
                let mut w = vec![0.0; self.n];
                for _ in 0..self.n {
                    w[rng.random_range(0..self.n)] += 1.0;
                }
                self.weighted_eer(&w)
            })
            .collect();
        interval(eers)
    }
}

/// The 95% interval of RI over `reps` two-stage resamples; `results`: (source class, target
/// class, L2). Stage one draws the ordered class pairs with replacement, stage two the
/// attacked pairs within each drawn class pair; RI* is then the mean over the drawn class
/// pairs of their H (eqs. 4 and 17). Resampling only within class pairs would give an
/// interval of width 0 when each class pair holds one attacked pair, as `--pairs 1` does.
pub fn ri_interval(
    classes: usize,
    results: &[(usize, usize, f64)],
    reps: usize,
    seed: u64,
) -> (f64, f64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cells: Vec<Vec<f64>> = vec![Vec::new(); classes * classes];
    for r in results {
        cells[r.0 * classes + r.1].push(r.2);
    }
    cells.retain(|c| !c.is_empty());
    if cells.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let ris = (0..reps)
        .map(|_| {
            let h_sum: f64 = (0..cells.len())
                .map(|_| {
                    let c = &cells[rng.random_range(0..cells.len())];
                    (0..c.len())
                        .map(|_| c[rng.random_range(0..c.len())])
                        .sum::<f64>()
                        / c.len() as f64
                })
                .sum();
            h_sum / cells.len() as f64
        })
        .collect();
    interval(ris)
}
