//! The robustness index: H_{k,l} (eq. 4), the mean minimal L2 perturbation that makes an
//! image of identity k match identity l, and RI (eq. 17), its mean over class pairs.
//!
//! Eq. 17 sums H over the n_c (n_c - 1) / 2 unordered pairs; with H measured in both
//! directions we average over all n_c (n_c - 1) ordered pairs, which is the same as averaging
//! (H_{k,l} + H_{l,k}) / 2 over unordered pairs. Attacks that never succeed have no finite
//! perturbation: they are counted per class pair and never averaged in.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Robustness {
    pub classes: usize,
    /// `h[k][l]`: mean L2 over the successful attacks from class k to class l; `None` on the
    /// diagonal and where no attack succeeded.
    pub h: Vec<Vec<Option<f64>>>,
    /// Attempts per ordered class pair.
    pub attempts: Vec<Vec<usize>>,
    /// Failed attempts per ordered class pair.
    pub failures: Vec<Vec<usize>>,
    /// RI of eq. 17 over the class pairs with at least one success.
    pub ri: Option<f64>,
    pub success_rate: f64,
    pub median_l2: Option<f64>,
    pub mean_l2: Option<f64>,
}

/// Summarises attack results `(source class, target class, minimal L2 or None)`.
pub fn summarize(classes: usize, results: &[(usize, usize, Option<f64>)]) -> Robustness {
    let mut sum = vec![vec![0.0; classes]; classes];
    let mut attempts = vec![vec![0usize; classes]; classes];
    let mut failures = vec![vec![0usize; classes]; classes];
    let mut l2s: Vec<f64> = Vec::new();
    for &(k, l, d) in results {
        attempts[k][l] += 1;
        match d {
            Some(d) => {
                sum[k][l] += d;
                l2s.push(d);
            }
            None => failures[k][l] += 1,
        }
    }
    let h: Vec<Vec<Option<f64>>> = (0..classes)
        .map(|k| {
            (0..classes)
                .map(|l| {
                    let ok = attempts[k][l] - failures[k][l];
                    (k != l && ok > 0).then(|| sum[k][l] / ok as f64)
                })
                .collect()
        })
        .collect();
    let defined: Vec<f64> = h.iter().flatten().flatten().copied().collect();
    let ri = (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64);
    l2s.sort_by(f64::total_cmp);
    let median_l2 = (!l2s.is_empty()).then(|| {
        let n = l2s.len();
        if n % 2 == 1 {
            l2s[n / 2]
        } else {
            (l2s[n / 2 - 1] + l2s[n / 2]) / 2.0
        }
    });
    Robustness {
        classes,
        success_rate: if results.is_empty() {
            0.0
        } else {
            l2s.len() as f64 / results.len() as f64
        },
        mean_l2: (!l2s.is_empty()).then(|| l2s.iter().sum::<f64>() / l2s.len() as f64),
        median_l2,
        h,
        attempts,
        failures,
        ri,
    }
}
