//! Carlini-Wagner L2 in feature space (section 2.2, eq. 3):
//! minimise ||x~ - x1||_2^2 + c * max(0, D(f(x~), f(x2)) - T + kappa) over x~ in [0, 1]^n,
//! with the tanh change of variables x~ = (tanh(w) + 1) / 2, Adam on w, and a binary search
//! over c for every pair (Carlini & Wagner 2017). Many pairs are optimised at once, each with
//! its own c. The smallest successful perturbation of each pair is kept, then shrunk towards
//! x1 by bisection on the segment [x1, x~] (still a success at every kept point).
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{distance, l2, FeatureMap};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CwConfig {
    /// Adam steps per binary-search round.
    pub steps: usize,
    /// Binary-search rounds over c.
    pub search: usize,
    /// Adam learning rate on w.
    pub lr: f64,
    /// Initial c.
    pub c0: f64,
    /// Confidence margin kappa of the hinge.
    pub kappa: f64,
    /// Bisection steps shrinking each success towards x1.
    pub refine: usize,
}

impl Default for CwConfig {
    fn default() -> Self {
        CwConfig {
            steps: 100,
            search: 5,
            lr: 0.05,
            c0: 10.0,
            kappa: 0.0,
            refine: 12,
        }
    }
}

/// Per-pair outcome. `l2` is `None` when no x~ within the box reached D <= T.
#[derive(Debug)]
pub struct CwOutcome {
    /// Best adversarial inputs `[P, ...]` (x1 itself where the attack failed).
    pub adversarial: Tensor,
    pub l2: Vec<Option<f64>>,
    /// D(f(x~), f(x2)) of the returned x~, recomputed by a fresh forward pass.
    pub distance: Vec<f64>,
    /// The last c of each pair's search.
    pub c: Vec<f64>,
}

/// Runs the attack for the pairs (`x1[i]`, target feature `target[i]`) at threshold `t`.
/// `x1`: `[P, ...]` in [0, 1]; `target`: `[P, k]` unit-norm features of the x2.
pub fn attack(
    f: &impl FeatureMap,
    x1: &Tensor,
    target: &Tensor,
    t: f64,
    cfg: &CwConfig,
) -> CwOutcome {
    let p = x1.size()[0] as usize;
    let x1 = x1.detach();
    let target = target.detach();
    let w0 = ((&x1 * 2.0 - 1.0) * (1.0 - 1e-6)).atanh();
    let (mut c, mut lower, mut upper) = (vec![cfg.c0; p], vec![0.0; p], vec![f64::INFINITY; p]);
    let mut best_l2 = Tensor::full([p as i64], f64::INFINITY, (Kind::Float, x1.device()));
    let mut best = x1.copy();
    let bshape = |t: &Tensor| {
        let mut s = vec![p as i64];
        s.resize(x1.dim(), 1);
        t.view(s.as_slice())
    };
    let (b1, b2) = (0.9, 0.999);
    for _ in 0..cfg.search {
        let mut w = w0.copy().set_requires_grad(true);
        let (mut m, mut v) = (w0.zeros_like(), w0.zeros_like());
        let ct = Tensor::from_slice(&c)
            .to_kind(Kind::Float)
            .to_device(x1.device());
        let mut succeeded = Tensor::zeros([p as i64], (Kind::Bool, x1.device()));
        for step in 1..=cfg.steps {
            let x = (w.tanh() + 1.0) / 2.0;
            let d = distance(f, &x, &target);
            let l2sq = (&x - &x1)
                .flatten(1, -1)
                .square()
                .sum_dim_intlist(1, false, None);
            let loss = (&l2sq + &ct * (&d - t + cfg.kappa).clamp_min(0.0)).sum(Kind::Float);
            let g = Tensor::run_backward(&[&loss], &[&w], false, false).remove(0);
            let _guard = tch::no_grad_guard();
            let ok = d.le(t);
            let norm = l2sq.sqrt();
            let better = ok.logical_and(&norm.lt_tensor(&best_l2));
            best_l2 = norm.where_self(&better, &best_l2);
            best = x.detach().where_self(&bshape(&better), &best);
            succeeded = succeeded.logical_or(&ok);
            // Adam on w (bias-corrected).
            m = &m * b1 + &g * (1.0 - b1);
            v = &v * b2 + g.square() * (1.0 - b2);
            let mh = &m / (1.0 - b1.powi(step as i32));
            let vh = &v / (1.0 - b2.powi(step as i32));
            let _ = w.f_sub_(&(mh / (vh.sqrt() + 1e-8) * cfg.lr));
        }
        let won: Vec<bool> = Vec::<bool>::try_from(&succeeded).expect("bool vector");
        for i in 0..p {
            if won[i] {
                upper[i] = upper[i].min(c[i]);
                c[i] = (lower[i] + upper[i]) / 2.0;
            } else {
                lower[i] = lower[i].max(c[i]);
                c[i] = if upper[i].is_finite() {
                    (lower[i] + upper[i]) / 2.0
                } else {
                    c[i] * 10.0
                };
            }
        }
    }
    let _guard = tch::no_grad_guard();
    let found = best_l2.isfinite();
    // Bisection on x1 + a (best - x1): hi is always a success (a = 1 is one by construction).
    let delta = &best - &x1;
    let (mut lo, mut hi) = (best_l2.zeros_like(), best_l2.ones_like());
    for _ in 0..cfg.refine {
        let mid = (&lo + &hi) / 2.0;
        let ok = distance(f, &(&x1 + &delta * bshape(&mid)), &target).le(t);
        hi = mid.where_self(&ok, &hi);
        lo = lo.where_self(&ok, &mid);
    }
    let adversarial = (&x1 + &delta * bshape(&hi)).where_self(&bshape(&found), &x1);
    let final_d = distance(f, &adversarial, &target);
    let final_l2 = l2(&(&adversarial - &x1));
    let found: Vec<bool> =
        Vec::<bool>::try_from(&found.logical_and(&final_d.le(t))).expect("bool vector");
    let final_l2: Vec<f64> =
        Vec::<f64>::try_from(final_l2.to_kind(Kind::Double)).expect("f64 vector");
    CwOutcome {
        adversarial,
        l2: found
            .iter()
            .zip(&final_l2)
            .map(|(&ok, &n)| ok.then_some(n))
            .collect(),
        distance: Vec::<f64>::try_from(final_d.to_kind(Kind::Double)).expect("f64 vector"),
        c,
    }
}
