//! The attacked pairs: sampled per ordered class pair, attacked in batches by the ensemble,
//! summarised into RI (eq. 17).

use rand::seq::IndexedRandom;
use rand::SeedableRng;
use tch::{Device, Tensor};

use super::report::{MemberL2, PairRecord};
use crate::attack::ensemble::{self};
use crate::attack::{self, FeatureMap, Goal};
use crate::certify;
use crate::config::{AuditConfig, EnsembleConfig};
use crate::data::{to_input, Dataset};
use crate::metrics::robustness::{self, Robustness};
use crate::model::unit;
use crate::Result;

/// The indices of each class's images.
pub(super) fn by_class(labels: &[i64], classes: usize) -> Vec<Vec<usize>> {
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
pub(super) fn batch(
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

pub(super) struct Attacked {
    pub(super) records: Vec<PairRecord>,
    /// `[P, ...]` on the CPU.
    pub(super) adversarial: Tensor,
    /// Gradient steps per pair of the last batch (CW, DDN, PGD check).
    pub(super) steps: [usize; 3],
    pub(super) pgd_below: usize,
}

/// The ensemble over `pairs` in batches of `cfg.batch`, with a progress bar; with a
/// Lipschitz constant, also each pair's certified radius.
#[allow(clippy::too_many_arguments)]
pub(super) fn attack_all(
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

pub(super) fn summarize_by(
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
