//! Fixed-budget baselines in feature space: PGD-L2 (Madry et al. 2018) and FGSM (Goodfellow et
//! al. 2014, here its L2 form: PGD with one step of size eps). Each step moves x along
//! -grad D(f(x), f(x2)) / ||grad||, then projects onto the L2 ball of radius eps around x1
//! and the pixel box [0, 1].
use tch::Tensor;

use super::{distance, l2, FeatureMap};

/// Returns x~ `[P, ...]` after `steps` steps of size `step` within L2 budget `eps`.
pub fn attack(
    f: &impl FeatureMap,
    x1: &Tensor,
    target: &Tensor,
    eps: f64,
    steps: usize,
    step: f64,
) -> Tensor {
    let x1 = x1.detach();
    let mut x = x1.copy();
    let p = x1.size()[0];
    let mut shape = vec![p];
    shape.resize(x1.dim(), 1);
    for _ in 0..steps {
        let xg = x.detach().set_requires_grad(true);
        let d = distance(f, &xg, target).sum(tch::Kind::Float);
        let g = Tensor::run_backward(&[&d], &[&xg], false, false).remove(0);
        let _guard = tch::no_grad_guard();
        let moved = &x - &g / l2(&g).clamp_min(1e-12).view(shape.as_slice()) * step;
        let delta = &moved - &x1;
        let scale = (eps / l2(&delta).clamp_min(1e-12)).clamp_max(1.0);
        x = (&x1 + delta * scale.view(shape.as_slice())).clamp(0.0, 1.0);
    }
    x
}

/// FGSM in its L2 form: one step of size eps.
pub fn fgsm(f: &impl FeatureMap, x1: &Tensor, target: &Tensor, eps: f64) -> Tensor {
    attack(f, x1, target, eps, 1, eps)
}
