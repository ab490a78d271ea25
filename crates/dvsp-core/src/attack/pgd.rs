//! Fixed-budget attacks in feature space: PGD (Madry et al. 2018) under an L2 or L-infinity
//! budget, and FGSM (Goodfellow et al. 2014, here its L2 form: one step of size eps). Each PGD
//! step moves x by 2.5 eps / steps (Madry's choice) along the normalised gradient (L2) or its
//! sign (L-infinity) of D(f(x), f(x2)), down to impersonate x2 (D <= T), up to dodge a genuine
//! match (D > T), then projects onto the budget ball around x1 and the pixel box [0, 1].
//! Budgets are per pair.
use tch::{Kind, Tensor};

use super::{distance, l2, per_pair, FeatureMap};

/// The budget's norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    L2,
    Linf,
}

/// What the attacker wants of D(f(x~), f(x2)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aim {
    /// Below T: accepted as x2.
    Impersonate,
    /// Above T: a genuine pair no longer matches.
    Dodge,
}

/// Returns x~ `[P, ...]` after `steps` steps within the budget `eps` `[P]`.
pub fn attack(
    f: &impl FeatureMap,
    x1: &Tensor,
    target: &Tensor,
    eps: &Tensor,
    steps: usize,
    norm: Norm,
    aim: Aim,
) -> Tensor {
    let x1 = x1.detach();
    let mut x = x1.copy();
    let eps = per_pair(&eps.to_kind(Kind::Float).to_device(x1.device()), &x1);
    let step = &eps * (2.5 / steps as f64);
    let sign = match aim {
        Aim::Impersonate => -1.0,
        Aim::Dodge => 1.0,
    };
    for _ in 0..steps {
        let xg = x.detach().set_requires_grad(true);
        let d = distance(f, &xg, target).sum(Kind::Float);
        let g = Tensor::run_backward(&[&d], &[&xg], false, false).remove(0) * sign;
        let _guard = tch::no_grad_guard();
        x = match norm {
            Norm::L2 => {
                let moved = &x + &g / per_pair(&l2(&g).clamp_min(1e-12), &x1) * &step;
                let delta = &moved - &x1;
                let scale = (&eps / per_pair(&l2(&delta).clamp_min(1e-12), &x1)).clamp_max(1.0);
                &x1 + delta * scale
            }
            Norm::Linf => {
                let moved = &x + g.sign() * &step;
                let delta = &moved - &x1;
                &x1 + delta.clamp_min_tensor(&-&eps).clamp_max_tensor(&eps)
            }
        }
        .clamp(0.0, 1.0);
    }
    x
}

/// One budget for every pair.
pub fn budget(x1: &Tensor, eps: f64) -> Tensor {
    Tensor::full([x1.size()[0]], eps, (Kind::Float, x1.device()))
}

/// FGSM in its L2 form: one step of size eps towards x2.
pub fn fgsm(f: &impl FeatureMap, x1: &Tensor, target: &Tensor, eps: &Tensor) -> Tensor {
    let x1 = x1.detach();
    let xg = x1.copy().set_requires_grad(true);
    let d = distance(f, &xg, target).sum(Kind::Float);
    let g = Tensor::run_backward(&[&d], &[&xg], false, false).remove(0);
    let _guard = tch::no_grad_guard();
    let eps = per_pair(&eps.to_kind(Kind::Float).to_device(x1.device()), &x1);
    (&x1 - &g / per_pair(&l2(&g).clamp_min(1e-12), &x1) * eps).clamp(0.0, 1.0)
}
