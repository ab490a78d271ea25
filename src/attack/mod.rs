//! Feature-space attacks (section 2.2). Every attack works on any map from an input batch
//! `[P, ...]` in [0, 1] to features `[P, k]`, compared by cosine distance
//! D(a, b) = 1 - cos(a, b); the model is frozen (only the input is optimised).
pub mod cw;
pub mod pgd;

use tch::Tensor;

/// A feature extractor under attack.
pub trait FeatureMap {
    /// `[P, ...]` inputs in [0, 1] -> `[P, k]` features.
    fn features(&self, x: &Tensor) -> Tensor;
}

impl FeatureMap for crate::model::Net {
    fn features(&self, x: &Tensor) -> Tensor {
        crate::model::Net::features(self, x)
    }
}

/// Cosine distance `[P]` between the features of `x` and the unit-norm `target` `[P, k]`.
pub fn distance(f: &impl FeatureMap, x: &Tensor, target: &Tensor) -> Tensor {
    1.0 - (crate::model::unit(&f.features(x)) * target).sum_dim_intlist(-1, false, None)
}

/// Per-pair L2 norm `[P]` of `d` `[P, ...]`.
pub fn l2(d: &Tensor) -> Tensor {
    d.flatten(1, -1).norm_scalaropt_dim(2, [1], false)
}
