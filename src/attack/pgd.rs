//! Fixed-budget baselines in feature space: PGD-L2 (Madry et al. 2018) and FGSM (Goodfellow et
//! al. 2014, here its L2 form: PGD with one step of size eps). Each step moves x along
//! -grad D(f(x), f(x2)) / ||grad|| by 2.5 eps / steps (Madry's choice), then projects onto the
//! L2 ball of radius eps around x1 and the pixel box [0, 1]. Budgets are per pair.
use tch::{Kind, Tensor};

use super::{distance, l2, per_pair, FeatureMap};

/// Returns x~ `[P, ...]` after `steps` steps within the L2 budget `eps` `[P]`.
pub fn attack(
    f: &impl FeatureMap,
    x1: &Tensor,
    target: &Tensor,
    eps: &Tensor,
    steps: usize,
) -> Tensor {
    let x1 = x1.detach();
    let mut x = x1.copy();
    let eps = per_pair(&eps.to_kind(Kind::Float).to_device(x1.device()), &x1);
    let step = &eps * (2.5 / steps as f64);
    for _ in 0..steps {
        let xg = x.detach().set_requires_grad(true);
        let d = distance(f, &xg, target).sum(Kind::Float);
        let g = Tensor::run_backward(&[&d], &[&xg], false, false).remove(0);
        let _guard = tch::no_grad_guard();
        let moved = &x - &g / per_pair(&l2(&g).clamp_min(1e-12), &x1) * &step;
        let delta = &moved - &x1;
        let scale = (&eps / per_pair(&l2(&delta).clamp_min(1e-12), &x1)).clamp_max(1.0);
        x = (&x1 + delta * scale).clamp(0.0, 1.0);
    }
    x
}

/// One budget for every pair.
pub fn budget(x1: &Tensor, eps: f64) -> Tensor {
    Tensor::full([x1.size()[0]], eps, (Kind::Float, x1.device()))
}

/// FGSM in its L2 form: one step of size eps.
pub fn fgsm(f: &impl FeatureMap, x1: &Tensor, target: &Tensor, eps: &Tensor) -> Tensor {
    let x1 = x1.detach();
    let xg = x1.copy().set_requires_grad(true);
    let d = distance(f, &xg, target).sum(Kind::Float);
    let g = Tensor::run_backward(&[&d], &[&xg], false, false).remove(0);
    let _guard = tch::no_grad_guard();
    let eps = per_pair(&eps.to_kind(Kind::Float).to_device(x1.device()), &x1);
    (&x1 - &g / per_pair(&l2(&g).clamp_min(1e-12), &x1) * eps).clamp(0.0, 1.0)
}
