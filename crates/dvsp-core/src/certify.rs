//! A certified lower bound of each pair's minimal perturbation, so the true
//! minimum lies in [certified, attacked].
//!
//! Let g be the map whose cosine the verifier compares (for dvsp the mean mu(x) before the
//! projection R mu/||mu|| of eq. 11, which leaves every cosine unchanged) and L a global L2
//! Lipschitz constant of g: ||g(x) - g(x1)|| <= L ||x - x1||. A perturbation of size r moves
//! g(x1) by at most rho = L r, which turns it by at most asin(rho / ||g(x1)||). The attack
//! succeeds when the angle between g(x~) and the target feature t drops to theta_T =
//! acos(1 - T) (D = 1 - cos <= T), so no perturbation below
//!
//!   r = ||g(x1)|| sin(min(phi - theta_T, pi/2)) / L,   phi = angle(g(x1), t),
//!
//! succeeds: that is the distance from g(x1) to the cone {angle <= theta_T} (or to its apex),
//! divided by L. For an isometry (L = 1) it is the exact minimum where the pixel box [0, 1]
//! does not bind (the closed-form case of `tests/attack.rs`). L is the product of the layers'
//! exact spectral norms (each linear map's largest singular value, from its explicit matrix),
//! so the bound is sound but loose: a product of per-layer norms ignores how the layers
//! align.
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// The exact spectral norm (largest singular value) of the linear map `apply` on inputs of
/// shape `input` (without the batch dimension), from its explicit matrix in f64: the map is
/// applied to every basis vector at once. `apply` must be linear (no bias).
pub fn operator_norm(apply: &dyn Fn(&Tensor) -> Tensor, input: &[i64]) -> Result<f64> {
    let _guard = tch::no_grad_guard();
    let n: i64 = input.iter().product();
    if n <= 0 || n > 8192 {
        return Err(Error::Invalid(format!(
            "an operator on {n} inputs is outside what its explicit matrix can hold here (1..=8192)"
        )));
    }
    let mut shape = vec![n];
    shape.extend_from_slice(input);
    let basis = Tensor::eye(n, (Kind::Double, tch::Device::Cpu)).view(shape.as_slice());
    // Row i is the image of basis vector i: the matrix's transpose, same singular values.
    let m = apply(&basis).flatten(1, -1);
    // The largest eigenvalue of the smaller Gram matrix is the squared spectral norm.
    let gram = if m.size()[0] <= m.size()[1] {
        m.matmul(&m.tr())
    } else {
        m.tr().matmul(&m)
    };
    let top = gram.linalg_eigvalsh("L").max().double_value(&[]);
    Ok(top.max(0.0).sqrt())
}

/// The certified radius `[P]` of each pair: no x with ||x - x1||_2 below it reaches
/// D(g(x), t) <= `threshold`. `g1` `[P, k]` is g(x1), `target` `[P, k]` the unit target
/// features, `lipschitz` a global L2 Lipschitz constant of g. Zero where x1 is already
/// accepted.
pub fn radius(g1: &Tensor, target: &Tensor, threshold: f64, lipschitz: f64) -> Tensor {
    let _guard = tch::no_grad_guard();
    let g1 = g1.to_kind(Kind::Double);
    let norm = g1.norm_scalaropt_dim(2, [-1], false);
    let cos = ((&g1 * target.to_kind(Kind::Double)).sum_dim_intlist(-1, false, None)
        / norm.clamp_min(1e-300))
    .clamp(-1.0, 1.0);
    let theta_t = (1.0 - threshold).clamp(-1.0, 1.0).acos();
    let margin = (cos.acos() - theta_t).clamp(0.0, std::f64::consts::FRAC_PI_2);
    norm * margin.sin() / lipschitz
}
