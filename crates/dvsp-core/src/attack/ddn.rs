//! Decoupled Direction and Norm (Rony et al. 2019) adapted to the feature-space objective:
//! the direction descends D(f(x~), f(x2)) (normalised gradient step of size alpha), the norm
//! is decided apart from it: the perturbation is rescaled to the L2 radius eps, which shrinks
//! by a factor (1 - gamma) after a step that was a success and grows by (1 + gamma) after one
//! that was not, so eps settles on the boundary of the acceptance region {D <= T}. As in FMN
//! (Pintor et al. 2021), alpha and gamma both decay by a cosine to 1/100 of their start, so
//! the last steps resolve the boundary finely; the smallest success seen is kept. The attack
//! may start from any point: x1 itself, an accepted point (the segment bound) or a random one;
//! eps_0 is the start's distance from x1 (`init_norm` when it starts at x1).
use tch::{Kind, Tensor};

use super::{l2, per_pair, FeatureMap, Goal};
use crate::config::DdnConfig;

/// The smallest success of every pair `[P, ...]` (x1 where there was none) and `[P]` bool,
/// starting from `x1 + start` (`start` `[P, ...]`, zero to start at x1).
pub fn attack(
    f: &impl FeatureMap,
    x1: &Tensor,
    start: &Tensor,
    goal: Goal,
    cfg: &DdnConfig,
) -> (Tensor, Tensor) {
    let x1 = x1.detach();
    let p = x1.size()[0];
    let dev = x1.device();
    let mut delta = ((&x1 + start.detach()).clamp(0.0, 1.0)) - &x1;
    let n0 = l2(&delta);
    let mut eps = n0.where_self(
        &n0.gt(0.0),
        &Tensor::full([p], cfg.init_norm, (Kind::Float, dev)),
    );
    let mut best_l2 = Tensor::full([p], f64::INFINITY, (Kind::Float, dev));
    let mut best = x1.copy();
    for k in 0..cfg.steps {
        let decay =
            0.01 + 0.99 * 0.5 * (1.0 + (std::f64::consts::PI * k as f64 / cfg.steps as f64).cos());
        let (alpha, gamma) = (cfg.alpha * decay, cfg.gamma * decay);
        let xg = (&x1 + &delta).set_requires_grad(true);
        let d = goal.distance(f, &xg);
        let g = Tensor::run_backward(&[&d.sum(Kind::Float)], &[&xg], false, false).remove(0);
        let _guard = tch::no_grad_guard();
        let ok = d.le(goal.t);
        let norm = l2(&delta);
        let better = ok.logical_and(&norm.lt_tensor(&best_l2));
        best_l2 = norm.where_self(&better, &best_l2);
        best = xg.detach().where_self(&per_pair(&better, &x1), &best);
        // eps_{k+1} = eps_k (1 - gamma) after a success, eps_k (1 + gamma) otherwise; never
        // above the best success so far.
        let factor = Tensor::full([p], 1.0 + gamma, (Kind::Float, dev)).where_self(
            &ok.logical_not(),
            &Tensor::full([p], 1.0 - gamma, (Kind::Float, dev)),
        );
        eps = (&eps * factor).minimum(&best_l2);
        let step = &delta - &g / per_pair(&l2(&g).clamp_min(1e-12), &x1) * alpha;
        let scaled = &step * per_pair(&(&eps / l2(&step).clamp_min(1e-12)), &x1);
        delta = (&x1 + scaled).clamp(0.0, 1.0) - &x1;
    }
    // The last point is never checked inside the loop.
    let x = &x1 + &delta;
    let ok = goal.accepted(f, &x);
    let norm = l2(&delta);
    let better = ok.logical_and(&norm.lt_tensor(&best_l2));
    best_l2 = norm.where_self(&better, &best_l2);
    best = x.where_self(&per_pair(&better, &x1), &best);
    (best, best_l2.isfinite())
}
