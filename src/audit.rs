//! The robustness audit: feature-space CW-L2 between sampled pairs of every ordered class
//! pair, H_{k,l} and RI (eq. 4, 17), and fixed-budget FGSM / PGD-L2 success rates on the
//! same pairs.
use std::time::Instant;

use rand::seq::IndexedRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::artifact::ModelCard;
use crate::attack::{self, cw, FeatureMap};
use crate::data::{to_input, Dataset};
use crate::metrics::robustness::{self, Robustness};
use crate::model::unit;
use crate::{Error, Result};

/// Which threshold T of the model card the attack must cross: the EER one or FMR = x.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum ThresholdAt {
    Eer,
    Fmr(f64),
}

impl std::str::FromStr for ThresholdAt {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s == "eer" {
            return Ok(ThresholdAt::Eer);
        }
        match s.strip_prefix("fmr=").map(str::parse::<f64>) {
            Some(Ok(f)) if f > 0.0 && f < 1.0 => Ok(ThresholdAt::Fmr(f)),
            _ => Err(Error::Invalid(format!(
                "threshold {s:?}: use eer or fmr=X with 0 < X < 1"
            ))),
        }
    }
}

impl std::fmt::Display for ThresholdAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ThresholdAt::Eer => write!(f, "eer"),
            ThresholdAt::Fmr(x) => write!(f, "fmr={x:e}"),
        }
    }
}

impl From<ThresholdAt> for String {
    fn from(t: ThresholdAt) -> String {
        t.to_string()
    }
}

impl TryFrom<String> for ThresholdAt {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl ThresholdAt {
    /// The threshold from the card's test-set metrics (written by `dvsp eval`).
    pub fn from_card(self, card: &ModelCard) -> Result<f64> {
        let m = card.metrics.get("test").ok_or_else(|| {
            Error::Invalid(
                "the model card has no test metrics: run `dvsp eval --model DIR` first".into(),
            )
        })?;
        match self {
            ThresholdAt::Eer => Ok(m.eer_threshold),
            ThresholdAt::Fmr(f) => m
                .at_fmr
                .iter()
                .find(|p| (p.target - f).abs() <= 1e-12 * f)
                .map(|p| p.threshold)
                .ok_or_else(|| {
                    let have: Vec<String> =
                        m.at_fmr.iter().map(|p| format!("{:e}", p.target)).collect();
                    Error::Invalid(format!(
                        "no threshold at FMR {f:e} in the card (it has {})",
                        have.join(", ")
                    ))
                }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditConfig {
    /// Sampled (x1, x2) pairs per ordered class pair.
    pub pairs: usize,
    pub threshold_at: ThresholdAt,
    pub cw: cw::CwConfig,
    /// L2 budgets for the FGSM and PGD-L2 baselines.
    pub budgets: Vec<f64>,
    /// PGD steps (step size 2.5 eps / steps).
    pub pgd_steps: usize,
    /// Pairs optimised together.
    pub batch: usize,
    pub seed: u64,
}

/// One attacked pair: test-set indices, classes and the minimal perturbation found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairRecord {
    pub source_class: usize,
    pub target_class: usize,
    pub source_index: usize,
    pub target_index: usize,
    /// ||x~ - x1||_2 of the smallest success, `None` if the attack failed.
    pub l2: Option<f64>,
    /// D(f(x~), f(x2)) rechecked by a fresh forward pass.
    pub distance: f64,
    pub c: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetResult {
    pub attack: String,
    pub eps: f64,
    pub success_rate: f64,
}

/// `audit.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    pub model_id: String,
    pub config: AuditConfig,
    pub threshold: f64,
    pub robustness: Robustness,
    pub baselines: Vec<BudgetResult>,
    pub seconds: f64,
    /// CW pair-steps per second (pairs x steps x rounds / CW time).
    pub pair_steps_per_second: f64,
    pub pairs: Vec<PairRecord>,
}

/// Samples `n` (source, target) index pairs for every ordered class pair k != l, seeded.
pub fn sample_pairs(
    labels: &[i64],
    classes: usize,
    n: usize,
    seed: u64,
) -> Vec<(usize, usize, usize, usize)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let by_class: Vec<Vec<usize>> = (0..classes)
        .map(|c| {
            labels
                .iter()
                .enumerate()
                .filter(|(_, &l)| l == c as i64)
                .map(|(i, _)| i)
                .collect()
        })
        .collect();
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

/// Runs the audit of `net` on `test`; also returns the adversarial images of the pairs in
/// record order (`[P, C, H, W]` in [0, 1]) for figures.
pub fn run(
    net: &impl FeatureMap,
    model_id: &str,
    threshold: f64,
    test: &Dataset,
    cfg: &AuditConfig,
    device: Device,
) -> Result<(AuditReport, Tensor)> {
    if cfg.pairs == 0 || cfg.batch == 0 {
        return Err(Error::Invalid(
            "--pairs and the batch size must be at least 1".into(),
        ));
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
    let start = Instant::now();
    let pb = crate::train::progress_bar(sampled.len() as u64, "audit cw-l2 pairs");
    let mut records = Vec::with_capacity(sampled.len());
    let mut advs = Vec::new();
    let mut budget_hits = vec![[0usize; 2]; cfg.budgets.len()];
    let mut cw_seconds = 0.0;
    for chunk in sampled.chunks(cfg.batch) {
        let src = Tensor::from_slice(&chunk.iter().map(|c| c.2 as i64).collect::<Vec<_>>());
        let dst = Tensor::from_slice(&chunk.iter().map(|c| c.3 as i64).collect::<Vec<_>>());
        let x1 = to_input(&test.images.index_select(0, &src), device);
        let target = tch::no_grad(|| {
            unit(&net.features(&to_input(&test.images.index_select(0, &dst), device)))
        });
        let t0 = Instant::now();
        let out = cw::attack(net, &x1, &target, threshold, &cfg.cw);
        cw_seconds += t0.elapsed().as_secs_f64();
        for (i, &(k, l, si, ti)) in chunk.iter().enumerate() {
            records.push(PairRecord {
                source_class: k,
                target_class: l,
                source_index: si,
                target_index: ti,
                l2: out.l2[i],
                distance: out.distance[i],
                c: out.c[i],
            });
        }
        advs.push(out.adversarial.to_device(Device::Cpu));
        for (b, &eps) in cfg.budgets.iter().enumerate() {
            let fg = attack::pgd::fgsm(net, &x1, &target, eps);
            let pg = attack::pgd::attack(
                net,
                &x1,
                &target,
                eps,
                cfg.pgd_steps,
                2.5 * eps / cfg.pgd_steps as f64,
            );
            for (j, x) in [fg, pg].iter().enumerate() {
                let hit = tch::no_grad(|| {
                    attack::distance(net, x, &target)
                        .le(threshold)
                        .sum(Kind::Int64)
                        .int64_value(&[])
                });
                budget_hits[b][j] += hit as usize;
            }
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    let results: Vec<(usize, usize, Option<f64>)> = records
        .iter()
        .map(|r| (r.source_class, r.target_class, r.l2))
        .collect();
    let n = records.len() as f64;
    let baselines = cfg
        .budgets
        .iter()
        .zip(&budget_hits)
        .flat_map(|(&eps, hits)| {
            [
                ("fgsm", hits[0]),
                (&*format!("pgd-l2/{}", cfg.pgd_steps), hits[1]),
            ]
            .map(|(a, h)| BudgetResult {
                attack: a.to_string(),
                eps,
                success_rate: h as f64 / n,
            })
        })
        .collect();
    let report = AuditReport {
        model_id: model_id.to_string(),
        config: cfg.clone(),
        threshold,
        robustness: robustness::summarize(test.classes, &results),
        baselines,
        seconds: start.elapsed().as_secs_f64(),
        pair_steps_per_second: n * (cfg.cw.steps * cfg.cw.search) as f64 / cw_seconds,
        pairs: records,
    };
    Ok((report, Tensor::cat(&advs, 0)))
}
