//! Feature-space attacks (section 2.2). Every attack works on any map from an input batch
//! `[P, ...]` in [0, 1] to features `[P, k]`, compared by cosine distance
//! D(a, b) = 1 - cos(a, b); the model is frozen (only the input is optimised). An attack on
//! the pair (x1, x2) succeeds at x~ when D(f(x~), f(x2)) <= T (eq. 3); its size is
//! ||x~ - x1||_2, and the smallest one found is an upper bound of the true minimum.
pub mod cw;
pub mod ddn;
pub mod ensemble;
pub mod pgd;

use tch::{Kind, Tensor};

/// A feature extractor under attack.
pub trait FeatureMap {
    /// `[P, ...]` inputs in [0, 1] -> `[P, k]` features.
    fn features(&self, x: &Tensor) -> Tensor;

    /// A map g with the cosines of `features` (the feature before any projection onto a
    /// sphere), for the certified bound (`crate::certify`).
    fn unprojected(&self, x: &Tensor) -> Tensor {
        self.features(x)
    }

    /// A global L2 Lipschitz constant of `unprojected`, when one is known.
    fn lipschitz(&self) -> Option<f64> {
        None
    }
}

impl FeatureMap for crate::model::Net {
    fn features(&self, x: &Tensor) -> Tensor {
        crate::model::Net::features(self, x)
    }

    fn unprojected(&self, x: &Tensor) -> Tensor {
        crate::model::Net::unprojected(self, x)
    }

    fn lipschitz(&self) -> Option<f64> {
        crate::model::Net::lipschitz(self)
    }
}

/// Cosine distance `[P]` between the features of `x` and the unit-norm `target` `[P, k]`.
pub fn distance(f: &impl FeatureMap, x: &Tensor, target: &Tensor) -> Tensor {
    1.0 - (crate::model::unit(&f.features(x)) * target).sum_dim_intlist(-1, false, None)
}

/// A `[P]` tensor as f64 values.
pub fn to_f64(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double)).expect("f64 vector")
}

/// Per-pair L2 norm `[P]` of `d` `[P, ...]`.
pub fn l2(d: &Tensor) -> Tensor {
    d.flatten(1, -1).norm_scalaropt_dim(2, [1], false)
}

/// `v` `[P]` viewed as `[P, 1, 1, ...]` to broadcast over inputs shaped like `like`.
pub fn per_pair(v: &Tensor, like: &Tensor) -> Tensor {
    let mut s = vec![v.size()[0]];
    s.resize(like.dim(), 1);
    v.view(s.as_slice())
}

/// What an attack must reach: D(f(x~), f(x2)) <= t for the unit-norm features `target`
/// `[P, k]` of the x2.
#[derive(Debug, Clone, Copy)]
pub struct Goal<'a> {
    pub target: &'a Tensor,
    pub t: f64,
}

impl Goal<'_> {
    /// D(f(x), f(x2)) `[P]` (differentiable).
    pub fn distance(&self, f: &impl FeatureMap, x: &Tensor) -> Tensor {
        distance(f, x, self.target)
    }

    /// Successes `[P]` (bool), by a fresh forward pass.
    pub fn accepted(&self, f: &impl FeatureMap, x: &Tensor) -> Tensor {
        tch::no_grad(|| distance(f, x, self.target).le(self.t))
    }
}

/// Bisection on the segment `from + a (to - from)`, a in [0, 1], for the smallest a that is
/// still accepted, for the pairs where `to` is accepted (`ok`); `from` is returned elsewhere.
/// The invariant keeps `hi` accepted, so every returned point of an `ok` pair is a success
/// (the acceptance region need not be convex: this is a bound, not the segment's minimum).
/// `round` maps points before they are checked (8-bit quantisation, or the identity).
pub fn bisect(
    f: &impl FeatureMap,
    goal: Goal,
    from: &Tensor,
    to: &Tensor,
    ok: &Tensor,
    steps: usize,
    round: &dyn Fn(Tensor) -> Tensor,
) -> Tensor {
    let _guard = tch::no_grad_guard();
    let delta = to - from;
    let at = |a: &Tensor| round(from + &delta * per_pair(a, from));
    let p = from.size()[0];
    let (mut lo, mut hi) = (
        Tensor::zeros([p], (Kind::Float, from.device())),
        Tensor::ones([p], (Kind::Float, from.device())),
    );
    for _ in 0..steps {
        let mid = (&lo + &hi) / 2.0;
        let won = goal.accepted(f, &at(&mid));
        hi = mid.where_self(&won, &hi);
        lo = lo.where_self(&won, &mid);
    }
    at(&hi).where_self(&per_pair(ok, from), from)
}

/// The first of `x1 + s delta` (clipped to the box) over the increasing `scales` whose
/// `round`ed point is accepted, per pair: the points `[P, ...]` (`x1` where none was) and
/// `[P]` bool. Bisection on [x1 or the kept point, it] then finds the least scale.
pub fn stretch(
    f: &impl FeatureMap,
    goal: Goal,
    x1: &Tensor,
    delta: &Tensor,
    scales: &[f64],
    round: &dyn Fn(Tensor) -> Tensor,
) -> (Tensor, Tensor) {
    let _guard = tch::no_grad_guard();
    let mut to = x1.copy();
    let mut found = Tensor::zeros([x1.size()[0]], (Kind::Bool, x1.device()));
    for &s in scales {
        let stretched = (x1 + delta * s).clamp(0.0, 1.0);
        let ok = goal
            .accepted(f, &round(stretched.copy()))
            .logical_and(&found.logical_not());
        to = stretched.where_self(&per_pair(&ok, x1), &to);
        found = found.logical_or(&ok);
    }
    (to, found)
}

/// The image rounded to 8 bits per pixel value (k / 255), as a camera or a PNG would store it.
pub fn round8(x: Tensor) -> Tensor {
    (x * 255.0).round() / 255.0
}
