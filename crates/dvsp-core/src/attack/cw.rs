//! Carlini-Wagner L2 in feature space (section 2.2, eq. 3):
//! minimise ||x~ - x1||_2^2 + c * max(0, D(f(x~), f(x2)) - T + kappa) over x~ in [0, 1]^n,
//! with a binary search over c for every pair (Carlini & Wagner 2017). Many pairs are
//! optimised at once, each with its own c.
//!
//! Departures from the original, each because it stalled the search:
//! - the box is kept by projection (Adam on delta = x~ - x1, then delta clipped to
//!   [-x1, 1 - x1]) instead of the tanh change of variables, whose start atanh(2 x1 - 1)
//!   parks pixels that are exactly 0 or 1 (most of MNIST) where tanh' ~ 0 and Adam cannot
//!   move them;
//! - every round after the first starts from the pair's best success so far (warm start), else
//!   from where the last round ended, not from x1;
//! - the learning rate decays over a round by a cosine from `lr` to `lr / 100`;
//! - a round stops early only on measured convergence: no pair's objective improved by more
//!   than `tol` (relative) for `patience` steps.
use tch::{Kind, Tensor};

use super::{per_pair, FeatureMap, Goal};
use crate::config::CwConfig;

/// Per-pair outcome: the smallest success of every pair (x1 where there was none).
#[derive(Debug)]
pub struct CwOutcome {
    /// `[P, ...]`
    pub adversarial: Tensor,
    /// `[P]` bool: the pair has a success.
    pub found: Tensor,
    /// Adam steps taken (over all rounds; early stops make it smaller than steps x search).
    pub steps: usize,
}

/// Runs the attack for the pairs (`x1[i]`, goal `target[i]`).
pub fn attack(f: &impl FeatureMap, x1: &Tensor, goal: Goal, cfg: &CwConfig) -> CwOutcome {
    let p = x1.size()[0] as usize;
    let x1 = x1.detach();
    let dev = x1.device();
    let (mut c, mut lower, mut upper) = (vec![cfg.c0; p], vec![0.0; p], vec![f64::INFINITY; p]);
    let mut best_l2 = Tensor::full([p as i64], f64::INFINITY, (Kind::Float, dev));
    let mut best = x1.copy();
    let mut start = x1.copy();
    let (b1, b2) = (0.9, 0.999);
    let mut taken = 0;
    for _ in 0..cfg.search {
        let ct = Tensor::from_slice(&c).to_kind(Kind::Float).to_device(dev);
        let mut delta = (&start - &x1).set_requires_grad(true);
        let (mut m, mut v) = (x1.zeros_like(), x1.zeros_like());
        let mut succeeded = Tensor::zeros([p as i64], (Kind::Bool, dev));
        let mut best_loss = Tensor::full([p as i64], f64::INFINITY, (Kind::Float, dev));
        let mut stale = 0;
        for step in 1..=cfg.steps {
            let x = &x1 + &delta;
            let d = goal.distance(f, &x);
            let l2sq = delta
                .flatten(1, -1)
                .square()
                .sum_dim_intlist(1, false, None);
            let obj = &l2sq + &ct * (&d - goal.t + cfg.kappa).clamp_min(0.0);
            let g =
                Tensor::run_backward(&[&obj.sum(Kind::Float)], &[&delta], false, false).remove(0);
            let _guard = tch::no_grad_guard();
            taken += 1;
            let ok = d.le(goal.t);
            let norm = l2sq.sqrt();
            let better = ok.logical_and(&norm.lt_tensor(&best_l2));
            best_l2 = norm.where_self(&better, &best_l2);
            best = x.detach().where_self(&per_pair(&better, &x1), &best);
            succeeded = succeeded.logical_or(&ok);
            let improved = obj.lt_tensor(&(&best_loss * (1.0 - cfg.tol)));
            best_loss = obj.minimum(&best_loss);
            stale = if improved.any().int64_value(&[]) == 1 {
                0
            } else {
                stale + 1
            };
            if stale >= cfg.patience {
                break;
            }
            // Adam on delta (bias-corrected), learning rate cosine-decayed to lr / 100.
            m = &m * b1 + &g * (1.0 - b1);
            v = &v * b2 + g.square() * (1.0 - b2);
            let mh = &m / (1.0 - b1.powi(step as i32));
            let vh = &v / (1.0 - b2.powi(step as i32));
            let progress = (step - 1) as f64 / cfg.steps as f64;
            let lr = cfg.lr * (0.01 + 0.99 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
            let moved = &delta - mh / (vh.sqrt() + 1e-8) * lr;
            // Projection onto the box: x1 + delta in [0, 1].
            delta.copy_(&((&x1 + moved).clamp(0.0, 1.0) - &x1));
        }
        let won: Vec<bool> = Vec::<bool>::try_from(&succeeded).expect("bool vector");
        let has_best: Vec<bool> = Vec::<bool>::try_from(&best_l2.isfinite()).expect("bool vector");
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
        // Warm start: the best success so far, else where this round ended.
        let ended = (&x1 + delta.detach()).clamp(0.0, 1.0);
        let has_best = Tensor::from_slice(&has_best).to_device(dev);
        start = best.where_self(&per_pair(&has_best, &x1), &ended);
    }
    let found = best_l2.isfinite();
    CwOutcome {
        adversarial: best,
        found,
        steps: taken,
    }
}
