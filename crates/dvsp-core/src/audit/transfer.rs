//! The transfer check: the same pairs attacked on another model, its perturbations measured on
//! the audited one (a white-box attack that does worse than transfer hints at masking).
use tch::Kind;

use super::pairs::{attack_all, batch, summarize_by};
use super::report::{AuditReport, PairRecord, TransferCheck};
use crate::attack::{self, bisect, FeatureMap, Goal};
use crate::data::Dataset;
use crate::Result;

/// The transfer check of `report` (an audit of `net` on `test`): the same pairs attacked by
/// the ensemble on `source` at its threshold `source_threshold` (the audit's attack settings),
/// each source perturbation delta then scaled on `net`: the least s in (0, 4] with
/// x1 + s delta accepted (the first accepted of s = 1, 2, 4, then bisection on [0, s]).
pub fn transfer(
    net: &impl FeatureMap,
    source: &impl FeatureMap,
    source_model_id: &str,
    source_threshold: f64,
    test: &Dataset,
    report: &AuditReport,
) -> Result<TransferCheck> {
    let cfg = &report.config;
    let pairs: Vec<_> = report
        .pairs
        .iter()
        .map(|r| {
            (
                r.source_class,
                r.target_class,
                r.source_index,
                r.target_index,
            )
        })
        .collect();
    tch::manual_seed(cfg.seed as i64);
    let on_source = attack_all(
        source,
        test,
        &pairs,
        source_threshold,
        &cfg.attack,
        cfg,
        None,
        "audit: transfer source",
    )?;
    let device = crate::device();
    let mut l2 = Vec::with_capacity(pairs.len());
    let mut unscaled = 0;
    let mut offset = 0;
    for chunk in pairs.chunks(cfg.batch) {
        let (x1, _, target) = batch(net, test, chunk, device);
        let goal = Goal {
            target: &target,
            t: report.threshold,
        };
        let n = chunk.len() as i64;
        let adv = on_source.adversarial.narrow(0, offset, n).to_device(device);
        offset += n;
        unscaled += goal.accepted(net, &adv).sum(Kind::Int64).int64_value(&[]) as usize;
        let (to, ok) = attack::stretch(net, goal, &x1, &(&adv - &x1), &[1.0, 2.0, 4.0], &|x| x);
        let found = bisect(net, goal, &x1, &to, &ok, cfg.attack.bisect, &|x| x);
        let accepted = goal.accepted(net, &found).logical_and(&ok);
        let norms = attack::to_f64(&attack::l2(&(&found - &x1)));
        let accepted = Vec::<bool>::try_from(&accepted).expect("bool vector");
        l2.extend(norms.into_iter().zip(accepted).map(|(v, a)| a.then_some(v)));
    }
    let mut ratios: Vec<f64> = l2
        .iter()
        .zip(&report.pairs)
        .filter_map(|(t, r)| t.map(|t| t / r.l2))
        .filter(|r| r.is_finite())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let all: Vec<&PairRecord> = on_source.records.iter().collect();
    Ok(TransferCheck {
        source_model_id: source_model_id.to_string(),
        source_threshold,
        source_ri: summarize_by(test.classes, &all, |r| Some(r.l2)).ri,
        success_unscaled: unscaled as f64 / pairs.len() as f64,
        found: l2.iter().flatten().count(),
        below_white_box: l2
            .iter()
            .zip(&report.pairs)
            .filter(|(t, r)| t.is_some_and(|t| t < r.l2 * (1.0 - 1e-3)))
            .count(),
        median_ratio: ratios.get(ratios.len() / 2).copied(),
        l2,
    })
}
