//! Deep variational sphere projection, section 3.2 of the paper.
//!
//! Reading of eq. 11 and 14 used here (see README, method notes): the shell centre is the
//! sphere projection (eq. 11) of the posterior mean, c(x) = R * mu(x) / ||mu(x)||, so it lies
//! on the radius-R sphere; the shell radius is r(x) = (1/k) sum_i Lambda_ii(x) (eq. 14). With
//! the centre on the unit sphere instead, R would appear nowhere in training or testing.
use tch::nn::Module;
use tch::{nn, Tensor};

use super::dvib::{kl_standard_normal, LossOut};
use super::{expect_2d, sampled_cross_entropy};
use crate::Result;

/// Sphere projection, eq. 11: z' = R * z / ||z|| row-wise. `z`: `[B, k]`.
pub fn project(z: &Tensor, radius: f64) -> Tensor {
    z / z.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12) * radius
}

/// Shell centre c(x) (eq. 11 applied to mu) `[B, k]` and radius r(x) (eq. 14) `[B]`.
pub fn shell(mu: &Tensor, lambda: &Tensor, radius: f64) -> Result<(Tensor, Tensor)> {
    expect_2d("shell mu", mu, None, None)?;
    expect_2d(
        "shell lambda",
        lambda,
        Some(mu.size()[0]),
        Some(mu.size()[1]),
    )?;
    Ok((project(mu, radius), lambda.mean_dim(-1, false, None)))
}

/// `n` x `k` samples u ~ U_sphere(0, 1): v ~ N(0, I), u = v / ||v|| (section 3.2).
pub fn sphere_samples(shape: &[i64], options: (tch::Kind, tch::Device)) -> Tensor {
    let v = Tensor::randn(shape, options);
    &v / v.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12)
}

/// Negative bound (13): -(1/m) sum_l log q(y | r(x) u_l + c(x)) + beta * KL[p(z|x) || q(z)].
/// `mu`, `lambda`: `[B, k]`; `labels`: `[B]`.
pub fn loss(
    mu: &Tensor,
    lambda: &Tensor,
    decoder: &nn::Linear,
    labels: &Tensor,
    beta: f64,
    radius: f64,
    m: i64,
) -> Result<LossOut> {
    let (c, r) = shell(mu, lambda, radius)?;
    let (b, k) = (mu.size()[0], mu.size()[1]);
    let u = sphere_samples(&[m, b, k], (mu.kind(), mu.device()));
    // Reparameterised shell samples z' = r(x) u + c(x): [m, B, k].
    let z = u * r.view([1, b, 1]) + c.unsqueeze(0);
    let logits = decoder.forward(&z);
    let kl = kl_standard_normal(mu, lambda)?;
    let loss = sampled_cross_entropy(&logits, labels) + kl.mean(None) * beta;
    Ok(LossOut { loss, logits })
}

/// The adversarial sample of eq. 15, x' = x + eps * grad / ||grad||, with the L2 norm taken
/// per sample over all of its pixels. `x`, `grad`: `[B, ...]` of the same shape.
pub fn adversarial_step(x: &Tensor, grad: &Tensor, eps: f64) -> Tensor {
    let b = grad.size()[0];
    let norm = grad
        .reshape([b, -1])
        .norm_scalaropt_dim(2, [1], false)
        .clamp_min(1e-12);
    let mut shape = vec![b];
    shape.resize(grad.dim(), 1);
    x + grad / norm.view(shape.as_slice()) * eps
}
