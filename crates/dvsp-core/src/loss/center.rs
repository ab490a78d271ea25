//! Softmax + center loss (Wen et al. 2016, "A Discriminative Feature Learning Approach for
//! Deep Face Recognition"): L = L_softmax + lambda/2 * mean_i ||f_i - c_{y_i}||^2, the centres
//! updated by c_j <- c_j - alpha * delta_j with
//! delta_j = sum_{i: y_i = j} (c_j - f_i) / (1 + n_j)   (their eq. 4).
use tch::Tensor;

use super::expect_2d;
use crate::Result;

/// lambda/2 * mean_i ||f_i - c_{y_i}||^2. `features`: `[B, k]`, `centers`: `[C, k]`, `labels`: `[B]`.
pub fn center_loss(
    features: &Tensor,
    centers: &Tensor,
    labels: &Tensor,
    lambda: f64,
) -> Result<Tensor> {
    expect_2d("center features", features, None, None)?;
    expect_2d("centers", centers, None, Some(features.size()[1]))?;
    let c = centers.index_select(0, labels);
    Ok((features - c)
        .square()
        .sum_dim_intlist(-1, false, None)
        .mean(None)
        * (lambda / 2.0))
}

/// The centre update of Wen et al. eq. 4, applied in place without gradients.
pub fn update_centers(centers: &mut Tensor, features: &Tensor, labels: &Tensor, alpha: f64) {
    tch::no_grad(|| {
        let classes = centers.size()[0];
        let onehot = labels.one_hot(classes).to_kind(features.kind()); // [B, C]
        let n = onehot.sum_dim_intlist(0, false, None).unsqueeze(-1); // [C, 1]
        let sum_f = onehot.tr().matmul(&features.detach()); // [C, k]
        let delta = (&*centers * &n - sum_f) / (n + 1.0);
        centers.copy_(&(&*centers - delta * alpha));
    });
}
