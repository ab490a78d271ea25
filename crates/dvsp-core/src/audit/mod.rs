//! The robustness audit: the minimal-perturbation ensemble (`attack::ensemble`) between
//! sampled pairs of every ordered class pair, H_{k,l} and RI (eq. 4, 17) in float and at 8
//! bits, evidence that the attack converged (a subset re-attacked at 3x and 10x the budget),
//! and checks for gradient masking (success against budget, FGSM <= PGD <= ensemble at fixed
//! budgets, input-gradient norm).
use std::time::Instant;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::attack::ensemble::{self, Attack};
use crate::attack::{self, bisect, pgd, FeatureMap, Goal};
use crate::certify;
use crate::config::{AuditConfig, EnsembleConfig, ThresholdAt};
use crate::data::{to_input, Dataset};
use crate::metrics::robustness::{self, Robustness};
use crate::model::unit;
use crate::{Error, Result};

impl From<ThresholdAt> for String {
    fn from(t: ThresholdAt) -> String {
        t.to_string()
    }
}

/// Each attack's verified L2 on a pair (`None`: it found no success).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberL2 {
    pub cw: Option<f64>,
    /// DDN from x1, from the segment bound, and the best of its random starts.
    pub ddn: Option<f64>,
    pub ddn_segment: Option<f64>,
    pub ddn_random: Option<f64>,
    pub segment: Option<f64>,
    pub pgd: Option<f64>,
}

/// One attacked pair: test-set indices, classes and the smallest perturbation found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairRecord {
    pub source_class: usize,
    pub target_class: usize,
    pub source_index: usize,
    pub target_index: usize,
    /// ||x~ - x1||_2 of the smallest verified success over the ensemble (an upper bound of
    /// the true minimum; every pair has one).
    pub l2: f64,
    /// The same after rounding x~ to 8 bits.
    pub l2_8bit: f64,
    /// D(f(x~), f(x2)) rechecked by a fresh forward pass.
    pub distance: f64,
    pub winner: Attack,
    pub members: MemberL2,
    /// The certified lower bound of the pair's minimal perturbation (`crate::certify`), where
    /// the model has a Lipschitz constant: the true minimum lies in [certified, l2].
    pub certified: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetResult {
    pub attack: String,
    pub eps: f64,
    pub success_rate: f64,
}

/// RI of the convergence subset at one budget multiple.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetPoint {
    pub multiplier: usize,
    pub ri: f64,
    pub ri_8bit: f64,
    /// RI of each attack alone on the subset (`None` if it failed on a whole class pair).
    pub member_ri: Vec<(Attack, Option<f64>)>,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Convergence {
    /// Indices into `pairs` of the re-attacked subset.
    pub pairs: Vec<usize>,
    pub points: Vec<BudgetPoint>,
    /// RI at 1x over RI at the largest multiple, on the subset.
    pub ratio: f64,
    /// `ratio` is within 2% of 1 at a multiple above 1x (false without one: no evidence).
    pub converged: bool,
}

/// Checks for gradient masking (Athalye et al. 2018; Carlini et al. 2019).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskingChecks {
    /// (eps, share of pairs with a verified success at L2 <= eps): must reach 1.
    pub success_vs_budget: Vec<(f64, f64)>,
    /// At every fixed budget: FGSM <= PGD <= the ensemble's success rate.
    pub iterative_beats_single_step: bool,
    /// Mean ||grad_x D(f(x), f(x2))||_2 at x = x1 over the pairs.
    pub input_gradient_norm: f64,
}

/// Attack success rate against budget, as the face-robustness literature reports it (RobFR,
/// Yang et al. 2020), at the audit's threshold T, by PGD with `pgd_steps` steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuccessCurve {
    /// "impersonation" (an impostor pair pushed to D <= T) or "dodging" (a genuine pair that
    /// matched pushed to D > T).
    pub goal: String,
    /// "l2" or "linf".
    pub norm: String,
    /// The pairs attacked.
    pub pairs: usize,
    /// (budget, share of the pairs broken).
    pub points: Vec<(f64, f64)>,
}

/// `audit.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    pub model_id: String,
    pub config: AuditConfig,
    pub threshold: f64,
    pub robustness: Robustness,
    /// The same with every x~ rounded to 8 bits.
    pub robustness_8bit: Robustness,
    /// Pairs on which each attack gave the kept (smallest) perturbation.
    pub wins: Vec<(Attack, usize)>,
    /// Pairs where PGD-L2 at the ensemble's per-pair budget succeeded more than 0.1% below
    /// it (its point is then kept).
    pub pgd_below_budget: usize,
    pub convergence: Convergence,
    pub baselines: Vec<BudgetResult>,
    pub masking: MaskingChecks,
    /// Impersonation on the convergence subset, dodging on as many genuine pairs that match.
    pub success_curves: Vec<SuccessCurve>,
    /// Wall time of the whole audit and of the 1x attack.
    pub seconds: f64,
    pub attack_seconds: f64,
    /// Gradient steps per pair at 1x: CW (all rounds, after early stops), DDN, PGD check.
    pub steps_per_pair: [usize; 3],
    /// The global L2 Lipschitz constant of the certified bound, and RI over the pairs'
    /// certified radii (a lower bound of the true RI, as `robustness` is an upper bound).
    pub lipschitz: Option<f64>,
    pub robustness_certified: Option<Robustness>,
    /// The transfer check (`dvsp audit --transfer-from`), when one was run.
    pub transfer: Option<TransferCheck>,
    pub pairs: Vec<PairRecord>,
}

/// A transfer attack (gradient-masking check, Athalye et al. 2018): the pairs attacked by
/// the ensemble on another model at that model's threshold, each perturbation then scaled
/// along its direction by the least factor in (0, 4] the audited model accepts. If it beats
/// the white-box ensemble, the audited model's gradients mislead its own attack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferCheck {
    pub source_model_id: String,
    pub source_threshold: f64,
    /// The source model's own RI on these pairs.
    pub source_ri: Option<f64>,
    /// Share of the pairs whose source adversarial the audited model accepts unchanged.
    pub success_unscaled: f64,
    /// Pairs with an accepted point along the transferred direction (scale <= 4).
    pub found: usize,
    /// Pairs where that point is more than 0.1% below the white-box ensemble's: must be 0.
    pub below_white_box: usize,
    /// Median over the found pairs of its L2 over the white-box L2.
    pub median_ratio: Option<f64>,
    /// Per pair (in `pairs` order), the transferred L2 (`None`: not accepted up to scale 4).
    pub l2: Vec<Option<f64>>,
}

/// The indices of each class's images.
fn by_class(labels: &[i64], classes: usize) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        if let Some(c) = usize::try_from(l).ok().and_then(|l| out.get_mut(l)) {
            c.push(i);
        }
    }
    out
}

/// Samples `n` (source, target) index pairs for every ordered class pair k != l, seeded.
pub fn sample_pairs(
    labels: &[i64],
    classes: usize,
    n: usize,
    seed: u64,
) -> Vec<(usize, usize, usize, usize)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let by_class = by_class(labels, classes);
    let mut out = Vec::new();
    for k in 0..classes {
        for l in 0..classes {
            if k == l || by_class[k].is_empty() || by_class[l].is_empty() {
                continue;
            }
            for _ in 0..n {
                out.push((
                    k,
                    l,
                    *by_class[k].choose(&mut rng).unwrap(),
                    *by_class[l].choose(&mut rng).unwrap(),
                ));
            }
        }
    }
    out
}

/// The pairs' inputs x1, x2 and the unit features of x2.
fn batch(
    net: &impl FeatureMap,
    test: &Dataset,
    pairs: &[(usize, usize, usize, usize)],
    device: Device,
) -> (Tensor, Tensor, Tensor) {
    let idx = |f: fn(&(usize, usize, usize, usize)) -> usize| {
        Tensor::from_slice(&pairs.iter().map(|p| f(p) as i64).collect::<Vec<_>>())
    };
    let x1 = to_input(&test.images.index_select(0, &idx(|p| p.2)), device);
    let x2 = to_input(&test.images.index_select(0, &idx(|p| p.3)), device);
    let target = tch::no_grad(|| unit(&net.features(&x2)));
    (x1, x2, target)
}

struct Attacked {
    records: Vec<PairRecord>,
    /// `[P, ...]` on the CPU.
    adversarial: Tensor,
    /// Gradient steps per pair of the last batch (CW, DDN, PGD check).
    steps: [usize; 3],
    pgd_below: usize,
}

/// The ensemble over `pairs` in batches of `cfg.batch`, with a progress bar; with a
/// Lipschitz constant, also each pair's certified radius.
#[allow(clippy::too_many_arguments)]
fn attack_all(
    net: &impl FeatureMap,
    test: &Dataset,
    pairs: &[(usize, usize, usize, usize)],
    threshold: f64,
    attack: &EnsembleConfig,
    cfg: &AuditConfig,
    lipschitz: Option<f64>,
    label: &str,
) -> Result<Attacked> {
    let device = crate::device();
    let pb = crate::progress::progress_bar(pairs.len() as u64, label);
    let mut records = Vec::with_capacity(pairs.len());
    let mut advs = Vec::new();
    let mut steps = [0usize; 3];
    let mut pgd_below = 0;
    for chunk in pairs.chunks(cfg.batch) {
        let (x1, x2, target) = batch(net, test, chunk, device);
        let goal = Goal {
            target: &target,
            t: threshold,
        };
        let out = ensemble::attack(net, &x1, &x2, goal, attack)?;
        let certified = lipschitz.map(|lip| {
            let g1 = tch::no_grad(|| net.unprojected(&x1));
            attack::to_f64(&certify::radius(&g1, &target, threshold, lip))
        });
        for (i, &(k, l, si, ti)) in chunk.iter().enumerate() {
            let m = |a: usize| out.members[a].1[i];
            records.push(PairRecord {
                source_class: k,
                target_class: l,
                source_index: si,
                target_index: ti,
                l2: out.l2[i],
                l2_8bit: out.l2_8bit[i],
                distance: out.distance[i],
                winner: out.winner[i],
                members: MemberL2 {
                    cw: m(0),
                    ddn: m(1),
                    ddn_segment: m(2),
                    ddn_random: m(3),
                    segment: m(4),
                    pgd: m(5),
                },
                certified: certified.as_ref().map(|c| c[i]),
            });
        }
        steps = out.steps;
        pgd_below += out.pgd_below;
        advs.push(out.adversarial.to_device(Device::Cpu));
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(Attacked {
        records,
        adversarial: Tensor::cat(&advs, 0),
        steps,
        pgd_below,
    })
}

fn summarize_by(
    classes: usize,
    records: &[&PairRecord],
    l2: impl Fn(&PairRecord) -> Option<f64>,
) -> Robustness {
    let results: Vec<(usize, usize, Option<f64>)> = records
        .iter()
        .map(|r| (r.source_class, r.target_class, l2(r)))
        .collect();
    robustness::summarize(classes, &results)
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

/// L2 and L-infinity budgets of the success curves.
const L2_BUDGETS: [f64; 4] = [0.5, 1.0, 2.0, 3.0];
const LINF_BUDGETS: [f64; 4] = [2.0 / 255.0, 4.0 / 255.0, 8.0 / 255.0, 16.0 / 255.0];

/// Genuine pairs (two images of one class), `n` per class, seeded.
fn genuine_pairs(
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
fn success_curves(
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
pub mod outputs;
