//! The gradient-masking checks beside RI: attack success against the budget (L2 and Linf,
//! impersonation and dodging) on the audited pairs and on genuine pairs.
use tch::Kind;

use rand::{Rng, SeedableRng};

use super::pairs::{batch, by_class};
use super::report::SuccessCurve;
use crate::attack::{self, pgd, FeatureMap};
use crate::config::AuditConfig;
use crate::data::Dataset;

/// L2 and L-infinity budgets of the success curves.
const L2_BUDGETS: [f64; 4] = [0.5, 1.0, 2.0, 3.0];

const LINF_BUDGETS: [f64; 4] = [2.0 / 255.0, 4.0 / 255.0, 8.0 / 255.0, 16.0 / 255.0];

/// Genuine pairs (two images of one class), `n` per class, seeded.
pub(super) fn genuine_pairs(
    labels: &[i64],
    classes: usize,
    n: usize,
    seed: u64,
) -> Vec<(usize, usize, usize, usize)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for (c, idx) in by_class(labels, classes).iter().enumerate() {
        if idx.len() < 2 {
            continue;
        }
        for _ in 0..n {
            // Two distinct positions: the second skips over the first.
            let i = rng.random_range(0..idx.len());
            let j = rng.random_range(0..idx.len() - 1);
            out.push((c, c, idx[i], idx[j + usize::from(j >= i)]));
        }
    }
    out
}

/// PGD success rates against L2 and L-infinity budgets for impersonation (`impostors`) and
/// dodging (`genuine`, keeping the pairs that match before the attack).
pub(super) fn success_curves(
    net: &impl FeatureMap,
    test: &Dataset,
    impostors: &[(usize, usize, usize, usize)],
    genuine: &[(usize, usize, usize, usize)],
    threshold: f64,
    cfg: &AuditConfig,
) -> Vec<SuccessCurve> {
    let device = crate::device();
    let mut curves = Vec::new();
    for (aim, pairs) in [
        (pgd::Aim::Impersonate, impostors),
        (pgd::Aim::Dodge, genuine),
    ] {
        if pairs.is_empty() {
            continue;
        }
        let (x1, _, target) = batch(net, test, pairs, device);
        let d0 = tch::no_grad(|| attack::distance(net, &x1, &target));
        // Dodging starts from genuine pairs that match; impersonation from impostors that do not.
        let keep = match aim {
            pgd::Aim::Impersonate => d0.gt(threshold),
            pgd::Aim::Dodge => d0.le(threshold),
        }
        .nonzero()
        .squeeze_dim(1);
        let (x1, target) = (x1.index_select(0, &keep), target.index_select(0, &keep));
        let n = x1.size()[0];
        for (norm, budgets) in [(pgd::Norm::L2, L2_BUDGETS), (pgd::Norm::Linf, LINF_BUDGETS)] {
            let points = budgets
                .iter()
                .map(|&eps| {
                    if n == 0 {
                        return (eps, f64::NAN);
                    }
                    let x = pgd::attack(
                        net,
                        &x1,
                        &target,
                        &pgd::budget(&x1, eps),
                        cfg.pgd_steps,
                        norm,
                        aim,
                    );
                    let d = tch::no_grad(|| attack::distance(net, &x, &target));
                    let broken = match aim {
                        pgd::Aim::Impersonate => d.le(threshold),
                        pgd::Aim::Dodge => d.gt(threshold),
                    };
                    (
                        eps,
                        broken.sum(Kind::Int64).int64_value(&[]) as f64 / n as f64,
                    )
                })
                .collect();
            curves.push(SuccessCurve {
                goal: match aim {
                    pgd::Aim::Impersonate => "impersonation",
                    pgd::Aim::Dodge => "dodging",
                }
                .into(),
                norm: match norm {
                    pgd::Norm::L2 => "l2",
                    pgd::Norm::Linf => "linf",
                }
                .into(),
                pairs: n as usize,
                points,
            });
        }
    }
    curves
}
