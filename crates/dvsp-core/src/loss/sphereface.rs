//! A-Softmax (Liu et al. 2017, "SphereFace"): class weights normalised, no bias; the target
//! logit ||x|| cos(theta_y) is replaced by ||x|| psi(theta_y) with
//! psi(theta) = (-1)^k cos(m theta) - 2k for theta in [k pi / m, (k + 1) pi / m], k in 0..m,
//! annealed as (lambda ||x|| cos theta + ||x|| psi(theta)) / (1 + lambda) with
//! lambda = max(LAMBDA_MIN, LAMBDA_BASE * (1 + GAMMA * iter)^-1), their released schedule.
use tch::Tensor;

use super::expect_2d;
use crate::Result;

pub const LAMBDA_BASE: f64 = 1000.0;
pub const LAMBDA_GAMMA: f64 = 0.12;
pub const LAMBDA_MIN: f64 = 5.0;

/// The annealing weight lambda at training iteration `iter`.
pub fn lambda_at(iter: usize) -> f64 {
    (LAMBDA_BASE / (1.0 + LAMBDA_GAMMA * iter as f64)).max(LAMBDA_MIN)
}

/// cos(m theta) from cos(theta) by the Chebyshev recurrence T_m(c), so no acos gradient is needed.
fn cos_m_theta(cos: &Tensor, m: i64) -> Tensor {
    let (mut prev, mut cur) = (cos.ones_like(), cos.shallow_clone());
    for _ in 1..m {
        let next = &cur * cos * 2.0 - &prev;
        prev = cur;
        cur = next;
    }
    if m == 0 {
        prev
    } else {
        cur
    }
}

/// psi(theta) of A-Softmax from `cos` = cos(theta) (any shape), margin `m` >= 1.
pub fn psi(cos: &Tensor, m: i64) -> Tensor {
    let cos = cos.clamp(-1.0, 1.0);
    // k = floor(m theta / pi), clamped to m - 1 so that theta = pi stays in the last piece.
    let k = tch::no_grad(|| {
        (cos.acos() * (m as f64) / std::f64::consts::PI)
            .floor()
            .clamp(0.0, (m - 1) as f64)
    });
    let sign = 1.0 - k.remainder(2.0) * 2.0; // (-1)^k
    cos_m_theta(&cos, m) * sign - k * 2.0
}

/// A-Softmax loss and logits. `features`: `[B, k]`, `weight`: `[C, k]`, `labels`: `[B]`.
pub fn loss(
    features: &Tensor,
    weight: &Tensor,
    labels: &Tensor,
    m: i64,
    lambda: f64,
) -> Result<(Tensor, Tensor)> {
    expect_2d("a-softmax features", features, None, None)?;
    expect_2d("a-softmax weight", weight, None, Some(features.size()[1]))?;
    let xnorm = features.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12); // [B, 1]
    let w = weight / weight.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12);
    let cos = features.matmul(&w.tr()) / &xnorm; // [B, C]
    let cos_y = cos.gather(1, &labels.unsqueeze(1), false); // [B, 1]
    let target = (&cos_y * lambda + psi(&cos_y, m)) / (1.0 + lambda);
    let onehot = labels.one_hot(weight.size()[0]).to_kind(cos.kind());
    let logits = (&cos + (target - &cos_y) * &onehot) * &xnorm;
    Ok((logits.cross_entropy_for_logits(labels), cos * xnorm))
}
