//! Verification error rates (eq. 16) over cosine distances of genuine and impostor pairs.
//!
//! Decision rule (eq. 1): a pair matches when its distance D <= T. So at threshold T
//! FMR(T) = #{impostor D <= T} / n_impostor (the paper's FPR) and
//! FNMR(T) = #{genuine D > T} / n_genuine (the paper's FNR).
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Genuine and impostor distances, sorted ascending.
#[derive(Debug, Clone)]
pub struct Scores {
    genuine: Vec<f32>,
    impostor: Vec<f32>,
}

/// Error rates at one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OperatingPoint {
    /// The FMR asked for (for an EER point: the EER itself).
    pub target: f64,
    /// The distance threshold T (match when D <= T).
    pub threshold: f64,
    pub fmr: f64,
    pub fnmr: f64,
}

/// EER and FNMR at FMR targets, with their thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationReport {
    pub genuine_pairs: u64,
    pub impostor_pairs: u64,
    /// Equal error rate: (FMR + FNMR) / 2 at the threshold where |FMR - FNMR| is smallest.
    pub eer: f64,
    pub eer_threshold: f64,
    pub at_fmr: Vec<OperatingPoint>,
}

impl Scores {
    /// Sorts the distances; refuses empty sets and NaN.
    pub fn new(mut genuine: Vec<f32>, mut impostor: Vec<f32>) -> Result<Scores> {
        if genuine.is_empty() || impostor.is_empty() {
            return Err(Error::Invalid(format!(
                "need genuine and impostor pairs, got {} genuine and {} impostor",
                genuine.len(),
                impostor.len()
            )));
        }
        if genuine.iter().chain(&impostor).any(|d| d.is_nan()) {
            return Err(Error::Invalid("a distance is NaN".into()));
        }
        genuine.sort_unstable_by(f32::total_cmp);
        impostor.sort_unstable_by(f32::total_cmp);
        Ok(Scores { genuine, impostor })
    }

    fn count_le(sorted: &[f32], t: f32) -> usize {
        sorted.partition_point(|&d| d <= t)
    }

    /// FMR and FNMR at threshold `t`.
    pub fn rates(&self, t: f32) -> (f64, f64) {
        let fmr = Self::count_le(&self.impostor, t) as f64 / self.impostor.len() as f64;
        let fnmr = (self.genuine.len() - Self::count_le(&self.genuine, t)) as f64
            / self.genuine.len() as f64;
        (fmr, fnmr)
    }

    /// Equal error rate: every distinct distance is a candidate threshold (plus one below
    /// all of them); at the candidate with the smallest |FMR - FNMR| the EER is their mean.
    pub fn eer(&self) -> OperatingPoint {
        let below_all = self.genuine[0].min(self.impostor[0]).next_down();
        let mut best = (f64::INFINITY, below_all, 0.0, 1.0);
        let (ng, ni) = (self.genuine.len(), self.impostor.len());
        let (mut ig, mut ii) = (0usize, 0usize);
        let mut candidate = |t: f32, ig: usize, ii: usize| {
            let (fmr, fnmr) = (ii as f64 / ni as f64, (ng - ig) as f64 / ng as f64);
            if (fmr - fnmr).abs() < best.0 {
                best = ((fmr - fnmr).abs(), t, fmr, fnmr);
            }
        };
        candidate(below_all, 0, 0);
        while ig < ng || ii < ni {
            let t = match (self.genuine.get(ig), self.impostor.get(ii)) {
                (Some(&g), Some(&i)) => g.min(i),
                (Some(&g), None) => g,
                (None, Some(&i)) => i,
                (None, None) => unreachable!(),
            };
            while ig < ng && self.genuine[ig] <= t {
                ig += 1;
            }
            while ii < ni && self.impostor[ii] <= t {
                ii += 1;
            }
            candidate(t, ig, ii);
        }
        let (_, t, fmr, fnmr) = best;
        OperatingPoint {
            target: (fmr + fnmr) / 2.0,
            threshold: t as f64,
            fmr,
            fnmr,
        }
    }

    /// The largest threshold whose FMR does not exceed `target`, and the FNMR there.
    pub fn at_fmr(&self, target: f64) -> OperatingPoint {
        let ni = self.impostor.len();
        let allowed = ((target * ni as f64) + 1e-9).floor() as usize;
        let t = if allowed >= ni {
            f32::MAX
        } else {
            self.impostor[allowed].next_down()
        };
        let (fmr, fnmr) = self.rates(t);
        OperatingPoint {
            target,
            threshold: t as f64,
            fmr,
            fnmr,
        }
    }

    /// EER and the operating points at `targets`.
    pub fn report(&self, targets: &[f64]) -> VerificationReport {
        let e = self.eer();
        VerificationReport {
            genuine_pairs: self.genuine.len() as u64,
            impostor_pairs: self.impostor.len() as u64,
            eer: e.target,
            eer_threshold: e.threshold,
            at_fmr: targets.iter().map(|&t| self.at_fmr(t)).collect(),
        }
    }

    /// `points` (FMR, FNMR) pairs of the DET curve, FMR log-spaced from 1/n_impostor to 1.
    pub fn det(&self, points: usize) -> Vec<(f64, f64)> {
        let lo = (1.0 / self.impostor.len() as f64).log10();
        (0..points)
            .map(|i| {
                let f = 10f64.powf(lo * (1.0 - i as f64 / (points - 1).max(1) as f64));
                let p = self.at_fmr(f);
                (p.fmr, p.fnmr)
            })
            .collect()
    }
}
