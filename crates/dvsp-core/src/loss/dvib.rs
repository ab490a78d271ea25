//! Deep variational information bottleneck (Alemi et al. 2017), eq. 6-10 of the paper.
//!
//! p(z|x) = N(mu(x), Lambda(x)) with diagonal Lambda, prior q(z) = N(0, I) (eq. 7); the decoder
//! q(y|z) is a softmax over g(z) (eq. 8, 10). The loss is the negative of the bound (6):
//! -E_{p(z|x)}[log q(y|z)] + beta * KL[p(z|x) || q(z)], the expectation estimated with m
//! reparameterised samples z = mu + sqrt(Lambda) * eps, eps ~ N(0, I).
use tch::nn::Module;
use tch::{nn, Tensor};

use super::{expect_2d, sampled_cross_entropy};
use crate::Result;

/// KL[N(mu, diag(lambda)) || N(0, I)] per row, in closed form:
/// 1/2 * sum_l (lambda_l + mu_l^2 - 1 - log lambda_l). `mu`, `lambda`: `[B, k]` -> `[B]`.
///
/// (The paper's gradient line prints `+ log det Lambda`; the KL of two Gaussians has
/// `- log det Lambda`, which is what is computed here.)
pub fn kl_standard_normal(mu: &Tensor, lambda: &Tensor) -> Result<Tensor> {
    expect_2d("kl mu", mu, None, None)?;
    expect_2d("kl lambda", lambda, Some(mu.size()[0]), Some(mu.size()[1]))?;
    Ok(((lambda + mu.square() - 1.0 - lambda.log()).sum_dim_intlist(-1, false, None)) * 0.5)
}

/// Output of a variational loss: the scalar loss and `[m, B, C]` logits of the samples.
pub struct LossOut {
    pub loss: Tensor,
    pub logits: Tensor,
}

/// Negative bound (6). `mu`, `lambda`: `[B, k]`; `labels`: `[B]`; `m` samples.
pub fn loss(
    mu: &Tensor,
    lambda: &Tensor,
    decoder: &nn::Linear,
    labels: &Tensor,
    beta: f64,
    m: i64,
) -> Result<LossOut> {
    let kl = kl_standard_normal(mu, lambda)?;
    let eps = Tensor::randn([m, mu.size()[0], mu.size()[1]], (mu.kind(), mu.device()));
    let z = mu.unsqueeze(0) + lambda.sqrt().unsqueeze(0) * eps;
    let logits = decoder.forward(&z);
    let loss = sampled_cross_entropy(&logits, labels) + kl.mean(None) * beta;
    Ok(LossOut { loss, logits })
}
