//! The minimal-perturbation ensemble (AutoAttack's principle, Croce & Hein 2020): every pair
//! is bounded by bisection on the segment [x1, x2] (x2 itself is always accepted: D = 0 <= T),
//! so no pair is ever without a perturbation, then attacked by CW-L2 from x1 (when it is on)
//! and by DDN from three kinds of start: x1, the segment bound, and random points at the
//! segment bound's distance (a minimal-norm attack started only at x1 settles in the first
//! basin it meets);
//! each success is shrunk towards x1 by bisection on [x1, x~]. The smallest success,
//! re-checked by a fresh forward pass, is kept; PGD-L2 at that per-pair budget then checks it:
//! a PGD success below the budget is counted and taken. The kept point is also rounded to 8
//! bits: where the rounding loses the match, the perturbation is stretched (x1 + s delta,
//! s in (1, 4]) until the rounded point is accepted, and only if that fails is the 8-bit point
//! searched on the segment towards x2.
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{bisect, cw, ddn, l2, pgd, round8, to_f64, FeatureMap, Goal};
use crate::config::EnsembleConfig;
use crate::{Error, Result};

/// The attacks of the ensemble, in the order ties are broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    Cw,
    /// DDN from x1.
    Ddn,
    /// DDN from the segment bound.
    DdnSegment,
    /// DDN from random starts (the best over `restarts`).
    DdnRandom,
    Segment,
    Pgd,
}

impl Attack {
    pub const ALL: [Attack; 6] = [
        Attack::Cw,
        Attack::Ddn,
        Attack::DdnSegment,
        Attack::DdnRandom,
        Attack::Segment,
        Attack::Pgd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Attack::Cw => "cw",
            Attack::Ddn => "ddn",
            Attack::DdnSegment => "ddn-segment",
            Attack::DdnRandom => "ddn-random",
            Attack::Segment => "segment",
            Attack::Pgd => "pgd",
        }
    }
}

#[derive(Debug)]
pub struct EnsembleOutcome {
    /// The smallest verified success of every pair `[P, ...]`.
    pub adversarial: Tensor,
    pub l2: Vec<f64>,
    /// D(f(x~), f(x2)) of `adversarial` by a fresh forward pass (<= T on every pair).
    pub distance: Vec<f64>,
    pub winner: Vec<Attack>,
    /// Each member's verified L2 per pair (`None`: no success), in `Attack::ALL` order; PGD's
    /// is its success at the ensemble's budget, shrunk towards x1.
    pub members: Vec<(Attack, Vec<Option<f64>>)>,
    /// Pairs where PGD at the ensemble's budget succeeded more than 0.1% below it.
    pub pgd_below: usize,
    /// The kept point rounded to 8 bits (or the 8-bit point found towards x2), and its L2.
    pub adversarial_8bit: Tensor,
    pub l2_8bit: Vec<f64>,
    /// Gradient steps per pair: CW (all rounds), DDN (all starts), PGD.
    pub steps: [usize; 3],
}

/// Attacks the pairs (`x1[i]`, `x2[i]`) whose features are `goal.target`; `x1`, `x2`
/// `[P, ...]` in [0, 1]. Fails only when even x2 is not accepted (T below D(f(x2), f(x2))).
pub fn attack(
    f: &impl FeatureMap,
    x1: &Tensor,
    x2: &Tensor,
    goal: Goal,
    cfg: &EnsembleConfig,
) -> Result<EnsembleOutcome> {
    let x1 = x1.detach();
    let p = x1.size()[0];
    let dev = x1.device();
    let id = |x: Tensor| x;
    let all = Tensor::ones([p], (Kind::Bool, dev));
    let segment = bisect(f, goal, &x1, x2, &all, cfg.bisect, &id);
    let seg_delta = &segment - &x1;
    let seg_l2 = l2(&seg_delta);
    let shrunk = |(x, ok): (Tensor, Tensor)| bisect(f, goal, &x1, &x, &ok, cfg.bisect, &id);
    let mut candidates = Vec::new();
    let mut cw_steps = 0;
    if cfg.cw.search > 0 {
        let cw = cw::attack(f, &x1, goal, &cfg.cw);
        cw_steps = cw.steps;
        candidates.push((Attack::Cw, shrunk((cw.adversarial, cw.found))));
    }
    candidates.push((
        Attack::Ddn,
        shrunk(ddn::attack(f, &x1, &x1.zeros_like(), goal, &cfg.ddn)),
    ));
    candidates.push((
        Attack::DdnSegment,
        shrunk(ddn::attack(f, &x1, &seg_delta, goal, &cfg.ddn)),
    ));
    for _ in 0..cfg.ddn.restarts {
        // A uniformly random direction at the segment bound's distance from x1.
        let u = Tensor::randn_like(&x1);
        let start = &u * super::per_pair(&(&seg_l2 / l2(&u).clamp_min(1e-12)), &x1);
        candidates.push((
            Attack::DdnRandom,
            shrunk(ddn::attack(f, &x1, &start, goal, &cfg.ddn)),
        ));
    }
    candidates.push((Attack::Segment, segment.copy()));
    let _guard = tch::no_grad_guard();
    let inf = Tensor::full([p], f64::INFINITY, (Kind::Float, dev));
    // A member's verified size: its L2 where a fresh forward pass accepts it, else infinity.
    let verified = |x: &Tensor| l2(&(x - &x1)).where_self(&goal.accepted(f, x), &inf);
    let mut best = x1.copy();
    let mut best_l2 = inf.copy();
    let mut winner = Tensor::full([p], -1, (Kind::Int64, dev));
    // Each member's verified L2, the random restarts merged into one member (their minimum).
    let mut members: Vec<(Attack, Tensor)> = Vec::new();
    for (a, x) in &candidates {
        let n = verified(x);
        let better = n.lt_tensor(&best_l2);
        best = x.where_self(&super::per_pair(&better, &x1), &best);
        best_l2 = n.where_self(&better, &best_l2);
        let index = Attack::ALL.iter().position(|b| b == a).expect("a member") as i64;
        winner = winner.masked_fill(&better, index);
        match members.last_mut() {
            Some((b, m)) if b == a => *m = m.minimum(&n),
            _ => members.push((*a, n)),
        }
    }
    // A member that did not run (CW off, no random restarts) has no success on any pair.
    let mut members: Vec<(Attack, Tensor)> = Attack::ALL[..Attack::ALL.len() - 1]
        .iter()
        .map(|a| {
            let ran = members.iter().find(|(b, _)| b == a);
            (
                *a,
                ran.map_or_else(|| inf.copy(), |(_, m)| m.shallow_clone()),
            )
        })
        .collect();
    if best_l2.isinf().any().int64_value(&[]) == 1 {
        return Err(Error::Invalid(format!(
            "no accepted point on some pair, not even x2 itself: T = {} is below the \
             distance of an image to itself",
            goal.t
        )));
    }
    // The PGD check at each pair's budget.
    drop(_guard);
    let pgd_x = pgd::attack(
        f,
        &x1,
        goal.target,
        &best_l2,
        cfg.pgd_steps,
        pgd::Norm::L2,
        pgd::Aim::Impersonate,
    );
    let pgd_ok = goal.accepted(f, &pgd_x);
    let pgd_x = bisect(f, goal, &x1, &pgd_x, &pgd_ok, cfg.bisect, &id);
    let _guard = tch::no_grad_guard();
    let n = verified(&pgd_x);
    let pgd_below = n
        .lt_tensor(&(&best_l2 * (1.0 - 1e-3)))
        .sum(Kind::Int64)
        .int64_value(&[]) as usize;
    let better = n.lt_tensor(&best_l2);
    best = pgd_x.where_self(&super::per_pair(&better, &x1), &best);
    best_l2 = n.where_self(&better, &best_l2);
    winner = winner.masked_fill(&better, Attack::ALL.len() as i64 - 1);
    members.push((Attack::Pgd, n));
    let distance = goal.distance(f, &best);
    let (q, l2_8bit) = eight_bit(f, goal, &x1, x2, &best, cfg.bisect);
    if l2_8bit.isinf().any().int64_value(&[]) == 1 {
        return Err(Error::Invalid(
            "an 8-bit image of some x2 is not accepted as itself".into(),
        ));
    }
    let members = members
        .into_iter()
        .map(|(a, n)| {
            let v = to_f64(&n);
            (
                a,
                v.into_iter().map(|x| x.is_finite().then_some(x)).collect(),
            )
        })
        .collect();
    let winner = Vec::<i64>::try_from(&winner)
        .expect("i64 vector")
        .into_iter()
        .map(|w| Attack::ALL[w as usize])
        .collect();
    Ok(EnsembleOutcome {
        l2: to_f64(&best_l2),
        distance: to_f64(&distance),
        adversarial: best,
        winner,
        members,
        pgd_below,
        adversarial_8bit: q,
        l2_8bit: to_f64(&l2_8bit),
        steps: [
            cw_steps,
            cfg.ddn.steps * (2 + cfg.ddn.restarts),
            cfg.pgd_steps,
        ],
    })
}

/// The 8-bit point of the kept success `best` = x1 + delta and its verified L2: round8(best)
/// if it is accepted; else the least stretch x1 + s delta, s in (1, 4], whose rounded point is
/// accepted (bisection between s = 1 and the first accepted of s = 1.25, 2, 4); else the first
/// accepted rounded point on [best, x2]. Rounding moves each pixel by at most 1/510, a random
/// step of L2 about 0.03 on 784 pixels that lands on either side of the boundary the
/// continuous point sits on; stretching along delta crosses it for the least extra norm.
fn eight_bit(
    f: &impl FeatureMap,
    goal: Goal,
    x1: &Tensor,
    x2: &Tensor,
    best: &Tensor,
    steps: usize,
) -> (Tensor, Tensor) {
    let _guard = tch::no_grad_guard();
    let p = x1.size()[0];
    let dev = x1.device();
    let per = |m: &Tensor| super::per_pair(m, x1);
    let round = |x: Tensor| round8(x);
    let delta = best - x1;
    let rounded = round8(best.copy());
    let rounded_ok = goal.accepted(f, &rounded);
    let (to, stretched_ok) = super::stretch(f, goal, x1, &delta, &[1.25, 2.0, 4.0], &round);
    let along = bisect(f, goal, best, &to, &stretched_ok, steps, &round);
    let all = Tensor::ones([p], (Kind::Bool, dev));
    let towards_x2 = bisect(f, goal, best, x2, &all, steps, &round);
    let q = rounded.where_self(
        &per(&rounded_ok),
        &along.where_self(&per(&stretched_ok), &towards_x2),
    );
    let inf = Tensor::full([p], f64::INFINITY, (Kind::Float, dev));
    let n = l2(&(&q - x1)).where_self(&goal.accepted(f, &q), &inf);
    (q, n)
}
