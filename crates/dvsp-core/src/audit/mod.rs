//! The robustness audit: the minimal-perturbation ensemble (`attack::ensemble`) between
//! sampled pairs of every ordered class pair, H_{k,l} and RI (eq. 4, 17) in float and at 8
//! bits, evidence that the attack converged (a subset re-attacked at 3x and 10x the budget),
//! and checks for gradient masking (success against budget, FGSM <= PGD <= ensemble at fixed
//! budgets, input-gradient norm).
use std::time::Instant;

use tch::{Kind, Tensor};

use crate::attack::ensemble::Attack;
use crate::attack::{self, pgd, FeatureMap, Goal};
use crate::config::{AuditConfig, ThresholdAt};
use crate::data::Dataset;
use crate::{Error, Result};

mod masking;
pub mod outputs;
mod pairs;
mod report;
mod transfer;

use masking::{genuine_pairs, success_curves};
pub use pairs::sample_pairs;
use pairs::{attack_all, batch, summarize_by, Attacked};
pub use report::*;
pub use transfer::transfer;

impl From<ThresholdAt> for String {
    fn from(t: ThresholdAt) -> String {
        t.to_string()
    }
}

fn member(r: &PairRecord, a: Attack) -> Option<f64> {
    match a {
        Attack::Cw => r.members.cw,
        Attack::Ddn => r.members.ddn,
        Attack::DdnSegment => r.members.ddn_segment,
        Attack::DdnRandom => r.members.ddn_random,
        Attack::Segment => r.members.segment,
        Attack::Pgd => r.members.pgd,
    }
}

/// A point of the convergence curve over `records`.
fn budget_point(
    classes: usize,
    multiplier: usize,
    records: &[&PairRecord],
    seconds: f64,
) -> BudgetPoint {
    let ri = |f: &dyn Fn(&PairRecord) -> Option<f64>| {
        summarize_by(classes, records, f).ri.unwrap_or(f64::NAN)
    };
    BudgetPoint {
        multiplier,
        ri: ri(&|r| Some(r.l2)),
        ri_8bit: ri(&|r| Some(r.l2_8bit)),
        member_ri: Attack::ALL[..Attack::ALL.len() - 1]
            .iter()
            .copied()
            .map(|a| {
                let rb = summarize_by(classes, records, |r| member(r, a));
                (
                    a,
                    rb.failures
                        .iter()
                        .flatten()
                        .all(|&f| f == 0)
                        .then_some(rb.ri)
                        .flatten(),
                )
            })
            .collect(),
        seconds,
    }
}

/// The convergence subset: the first `ceil(n / class pairs)` pairs of every class pair.
fn convergence_subset(
    records: &[PairRecord],
    per_class_pair: usize,
    n: usize,
    class_pairs: usize,
) -> Vec<usize> {
    let take = n.div_ceil(class_pairs.max(1)).min(per_class_pair);
    (0..records.len())
        .filter(|i| i % per_class_pair < take)
        .collect()
}

/// Runs the audit of `net` on `test`; also returns the adversarial images of the pairs in
/// record order (`[P, C, H, W]` in [0, 1]) for figures.
pub fn run(
    net: &impl FeatureMap,
    model_id: &str,
    threshold: f64,
    test: &Dataset,
    cfg: &AuditConfig,
) -> Result<(AuditReport, Tensor)> {
    if cfg.pairs == 0 || cfg.batch == 0 {
        return Err(Error::Invalid(
            "--pairs and the batch size must be at least 1".into(),
        ));
    }
    if cfg.convergence_pairs == 0 && !cfg.convergence_budgets.is_empty() {
        return Err(Error::Invalid(
            "--convergence-pairs must be at least 1 to re-attack at --convergence-budgets \
             (give --convergence-budgets no value to skip the re-attack)"
                .into(),
        ));
    }
    if let Some(m) = cfg.convergence_budgets.iter().find(|&&m| m < 2) {
        return Err(Error::Invalid(format!(
            "--convergence-budgets: {m}x is no evidence of convergence; every multiple must \
             be at least 2"
        )));
    }
    let labels: Vec<i64> = Vec::<i64>::try_from(&test.labels)?;
    let sampled = sample_pairs(&labels, test.classes, cfg.pairs, cfg.seed);
    if sampled.is_empty() {
        return Err(Error::Invalid(format!(
            "no pairs of different classes to attack in a test set of {} images and {} classes",
            labels.len(),
            test.classes
        )));
    }
    // The random starts of DDN (and of PGD-L2's checks) are drawn from torch's generator.
    tch::manual_seed(cfg.seed as i64);
    let start = Instant::now();
    let lipschitz = net.lipschitz();
    let Attacked {
        records,
        adversarial: advs,
        steps: steps_per_pair,
        pgd_below,
    } = attack_all(
        net,
        test,
        &sampled,
        threshold,
        &cfg.attack,
        cfg,
        lipschitz,
        "audit: ensemble",
    )?;
    let attack_seconds = start.elapsed().as_secs_f64();
    let device = crate::device();
    // Fixed-budget baselines and the input-gradient norm, on the same pairs.
    let mut budget_hits = vec![[0usize; 2]; cfg.budgets.len()];
    let mut grad_sum = 0.0;
    for chunk in sampled.chunks(cfg.batch) {
        let (x1, _, target) = batch(net, test, chunk, device);
        let xg = x1.copy().set_requires_grad(true);
        let d = attack::distance(net, &xg, &target).sum(Kind::Float);
        let g = Tensor::run_backward(&[&d], &[&xg], false, false).remove(0);
        grad_sum += attack::l2(&g).sum(Kind::Double).double_value(&[]);
        let goal = Goal {
            target: &target,
            t: threshold,
        };
        for (b, &eps) in cfg.budgets.iter().enumerate() {
            let eps = pgd::budget(&x1, eps);
            let fg = pgd::fgsm(net, &x1, &target, &eps);
            let pg = pgd::attack(
                net,
                &x1,
                &target,
                &eps,
                cfg.pgd_steps,
                pgd::Norm::L2,
                pgd::Aim::Impersonate,
            );
            for (j, x) in [fg, pg].iter().enumerate() {
                budget_hits[b][j] +=
                    goal.accepted(net, x).sum(Kind::Int64).int64_value(&[]) as usize;
            }
        }
    }
    let n = records.len() as f64;
    let within = |eps: f64| records.iter().filter(|r| r.l2 <= eps).count() as f64 / n;
    let mut baselines = Vec::new();
    let mut ordered = true;
    for (&eps, hits) in cfg.budgets.iter().zip(&budget_hits) {
        let (fgsm, pgd_rate) = (hits[0] as f64 / n, hits[1] as f64 / n);
        ordered &= fgsm <= pgd_rate && pgd_rate <= within(eps);
        for (attack, success_rate) in [
            ("fgsm".to_string(), fgsm),
            (format!("pgd-l2/{}", cfg.pgd_steps), pgd_rate),
            ("ensemble".to_string(), within(eps)),
        ] {
            baselines.push(BudgetResult {
                attack,
                eps,
                success_rate,
            });
        }
    }
    let max_l2 = records.iter().map(|r| r.l2).fold(0.0, f64::max);
    let success_vs_budget = (1..=20)
        .map(|i| {
            let eps = max_l2 * i as f64 / 20.0;
            (eps, within(eps))
        })
        .collect();
    // Convergence: the subset again at every budget multiple.
    let class_pairs = test.classes * (test.classes - 1);
    let subset = convergence_subset(&records, cfg.pairs, cfg.convergence_pairs, class_pairs);
    let sub_records: Vec<&PairRecord> = subset.iter().map(|&i| &records[i]).collect();
    let mut points = vec![budget_point(
        test.classes,
        1,
        &sub_records,
        attack_seconds * subset.len() as f64 / n,
    )];
    let sub_pairs: Vec<_> = subset.iter().map(|&i| sampled[i]).collect();
    for &m in &cfg.convergence_budgets {
        let t0 = Instant::now();
        let again = attack_all(
            net,
            test,
            &sub_pairs,
            threshold,
            &cfg.attack.scaled(m),
            cfg,
            None,
            &format!("audit: convergence at {m}x"),
        )?;
        let again: Vec<&PairRecord> = again.records.iter().collect();
        points.push(budget_point(
            test.classes,
            m,
            &again,
            t0.elapsed().as_secs_f64(),
        ));
    }
    let genuine = genuine_pairs(
        &labels,
        test.classes,
        sub_pairs.len().div_ceil(test.classes),
        cfg.seed,
    );
    let success_curves = success_curves(net, test, &sub_pairs, &genuine, threshold, cfg);
    let last = points.last().expect("the 1x point").ri;
    let ratio = points[0].ri / last;
    let wins = Attack::ALL
        .into_iter()
        .map(|a| (a, records.iter().filter(|r| r.winner == a).count()))
        .collect();
    let all: Vec<&PairRecord> = records.iter().collect();
    let report = AuditReport {
        model_id: model_id.to_string(),
        config: cfg.clone(),
        threshold,
        robustness: summarize_by(test.classes, &all, |r| Some(r.l2)),
        robustness_8bit: summarize_by(test.classes, &all, |r| Some(r.l2_8bit)),
        wins,
        pgd_below_budget: pgd_below,
        convergence: Convergence {
            pairs: subset,
            points,
            ratio,
            converged: !cfg.convergence_budgets.is_empty() && (ratio - 1.0).abs() <= 0.02,
        },
        baselines,
        masking: MaskingChecks {
            success_vs_budget,
            iterative_beats_single_step: ordered,
            input_gradient_norm: grad_sum / n,
        },
        success_curves,
        seconds: start.elapsed().as_secs_f64(),
        attack_seconds,
        steps_per_pair,
        lipschitz,
        robustness_certified: lipschitz.map(|_| summarize_by(test.classes, &all, |r| r.certified)),
        transfer: None,
        pairs: records,
    };
    Ok((report, advs))
}
