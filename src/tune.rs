//! Hyperparameter selection on training data only. The paper selects beta and R "by 5-fold
//! cross-validation such that it achieves the best balance between EER and RI" (section 4.1).
//! Here every method gets the same budget, four candidate configurations, each trained on the
//! first 40,000 of the 50,000 training images and measured on the last 10,000 (the validation
//! split); the test split (training file 50,000..60,000) and the official t10k file are never
//! read. Balance rule: each candidate is ranked by validation EER (ascending) and by validation
//! RI (descending); the smallest rank sum wins, ties going to the lower EER.
use serde::{Deserialize, Serialize};

use crate::config::{Method, TrainConfig};
use crate::data::Dataset;
use crate::{Error, Result};

/// Validation images carved from the end of the training set.
pub const VALIDATION: usize = 10_000;

/// (fit, validation): the training set's last `n` images validate, the rest fit. Only the
/// training set goes in, so no test image can reach a tuning decision.
pub fn holdout(train: &Dataset, n: usize) -> Result<(Dataset, Dataset)> {
    let len = train.len();
    if n == 0 || n >= len {
        return Err(Error::Invalid(format!(
            "a validation split of {n} images needs a training set larger than that (it has {len})"
        )));
    }
    let fit = (len - n) as i64;
    Ok((
        train.head(fit as usize),
        Dataset {
            images: train.images.narrow(0, fit, n as i64),
            labels: train.labels.narrow(0, fit, n as i64),
            classes: train.classes,
        },
    ))
}

/// The four candidates of `method` around `base` (the same budget for every method):
/// DVSP one factor at a time around (R 1, beta 1e-3, eps 0.1); DVIB beta; center loss lambda;
/// SphereFace its margin m. Each comes with a short label for its directory.
pub fn grid(method: Method, base: &TrainConfig) -> Vec<(String, TrainConfig)> {
    let with = |f: &dyn Fn(&mut TrainConfig)| {
        let mut c = base.clone();
        c.method = method;
        f(&mut c);
        c
    };
    match method {
        Method::Dvsp => vec![
            (
                "r1-b1e-3-eps0.1".into(),
                with(&|c| (c.radius, c.beta, c.eps) = (1.0, 1e-3, Some(0.1))),
            ),
            (
                "r2-b1e-3-eps0.1".into(),
                with(&|c| (c.radius, c.beta, c.eps) = (2.0, 1e-3, Some(0.1))),
            ),
            (
                "r1-b1e-2-eps0.1".into(),
                with(&|c| (c.radius, c.beta, c.eps) = (1.0, 1e-2, Some(0.1))),
            ),
            (
                "r1-b1e-3-eps0.3".into(),
                with(&|c| (c.radius, c.beta, c.eps) = (1.0, 1e-3, Some(0.3))),
            ),
        ],
        Method::Dvib => [1e-4, 1e-3, 1e-2, 1e-1]
            .map(|b| (format!("b{b:e}"), with(&|c| c.beta = b)))
            .into(),
        Method::Center => [1e-3, 1e-2, 1e-1, 1.0]
            .map(|l| (format!("l{l:e}"), with(&|c| c.center_lambda = l)))
            .into(),
        Method::Sphereface => [1, 2, 3, 4]
            .map(|m| (format!("m{m}"), with(&|c| c.margin = m)))
            .into(),
        Method::Pretrained => Vec::new(),
    }
}

/// One candidate measured on the validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub label: String,
    pub config: TrainConfig,
    pub validation_eer: f64,
    /// RI of the audit on validation pairs, T at the validation EER threshold.
    pub validation_ri: f64,
}

/// `tune.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuneReport {
    pub method: Method,
    pub split: String,
    pub rule: String,
    pub candidates: Vec<Candidate>,
    /// Index into `candidates`.
    pub chosen: usize,
}

/// The balance rule: the smallest sum of the EER rank (ascending) and the RI rank
/// (descending), ties to the lower EER.
pub fn choose(c: &[Candidate]) -> Option<usize> {
    let rank = |key: &dyn Fn(&Candidate) -> f64| -> Vec<usize> {
        let mut order: Vec<usize> = (0..c.len()).collect();
        order.sort_by(|&a, &b| key(&c[a]).total_cmp(&key(&c[b])));
        let mut r = vec![0; c.len()];
        for (pos, &i) in order.iter().enumerate() {
            r[i] = pos;
        }
        r
    };
    let (by_eer, by_ri) = (rank(&|x| x.validation_eer), rank(&|x| -x.validation_ri));
    (0..c.len()).min_by(|&a, &b| {
        (by_eer[a] + by_ri[a])
            .cmp(&(by_eer[b] + by_ri[b]))
            .then(c[a].validation_eer.total_cmp(&c[b].validation_eer))
    })
}
