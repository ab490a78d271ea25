//! LFW's standard verification protocol: `pairs.txt` (View 2) and 10-fold cross-validation.
//!
//! `pairs.txt` starts with `<folds> <pairs per fold>`; each fold then lists that many
//! matched pairs `name n1 n2` followed by as many mismatched pairs `name1 n1 name2 n2`, where
//! `n` is the 1-based image number (`ROOT/name/name_0001.jpg`). For each fold the threshold
//! that maximises accuracy on the other folds is applied to it (decision rule of eq. 1: match
//! when D <= T); the report gives the mean, sample standard deviation and standard error of
//! the ten accuracies (LFW results are quoted as mean +- SE) and the EER over all pairs.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::eer::Scores;
use crate::{Error, Result};

/// One image of a pair: identity folder and 1-based image number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Image {
    pub name: String,
    pub number: u32,
}

impl Image {
    /// `root/name/name_0001.jpg`, or the same stem with another image extension if that is
    /// what the folder holds (aligned copies are written as PNG).
    pub fn path(&self, root: &Path) -> PathBuf {
        let stem = format!("{}_{:04}", self.name, self.number);
        let dir = root.join(&self.name);
        ["jpg", "png", "jpeg", "bmp", "webp"]
            .iter()
            .map(|e| dir.join(format!("{stem}.{e}")))
            .find(|p| p.exists())
            .unwrap_or_else(|| dir.join(format!("{stem}.jpg")))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub a: Image,
    pub b: Image,
    pub same: bool,
    /// 0-based fold.
    pub fold: usize,
}

fn bad(line: usize, message: String) -> Error {
    Error::Invalid(format!("pairs.txt line {line}: {message}"))
}

fn number(line: usize, field: &str) -> Result<u32> {
    match field.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(bad(
            line,
            format!("{field:?} is not an image number (1, 2, ...)"),
        )),
    }
}

/// Parses `pairs.txt`; every malformed line is an error naming its 1-based line number.
pub fn parse_pairs(text: &str) -> Result<Vec<Pair>> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty());
    let (hl, header) = lines
        .next()
        .ok_or_else(|| bad(1, "empty file; expected `<folds> <pairs per fold>`".into()))?;
    let head: Vec<&str> = header.split_whitespace().collect();
    let (folds, per_fold) = match head[..] {
        [f, p] => match (f.parse::<usize>(), p.parse::<usize>()) {
            (Ok(f), Ok(p)) if f >= 2 && p >= 1 => (f, p),
            _ => {
                return Err(bad(
                    hl,
                    format!(
                    "header {header:?}: expected two counts `<folds> <pairs per fold>`, folds >= 2"
                ),
                ))
            }
        },
        _ => {
            return Err(bad(
                hl,
                format!("header {header:?}: expected `<folds> <pairs per fold>`"),
            ))
        }
    };
    let mut pairs = Vec::with_capacity(folds * per_fold * 2);
    for fold in 0..folds {
        for k in 0..2 * per_fold {
            let same = k < per_fold;
            let (ln, line) = lines.next().ok_or_else(|| {
                bad(
                    text.lines().count() + 1,
                    format!(
                        "file ends in fold {} after {k} of its {} pairs",
                        fold + 1,
                        2 * per_fold
                    ),
                )
            })?;
            let f: Vec<&str> = line.split_whitespace().collect();
            // (name a, number a, name b, number b) of either line form.
            let (name_a, n_a, name_b, n_b) = match (same, &f[..]) {
                (true, [name, n1, n2]) => (*name, *n1, *name, *n2),
                (false, [name1, n1, name2, n2]) => (*name1, *n1, *name2, *n2),
                (true, _) => {
                    return Err(bad(
                        ln,
                        format!("expected a matched pair `name n1 n2`, got {line:?}"),
                    ))
                }
                (false, _) => {
                    return Err(bad(
                        ln,
                        format!("expected a mismatched pair `name1 n1 name2 n2`, got {line:?}"),
                    ))
                }
            };
            pairs.push(Pair {
                a: Image {
                    name: name_a.to_string(),
                    number: number(ln, n_a)?,
                },
                b: Image {
                    name: name_b.to_string(),
                    number: number(ln, n_b)?,
                },
                same,
                fold,
            });
        }
    }
    if let Some((ln, line)) = lines.next() {
        return Err(bad(
            ln,
            format!(
                "{folds} folds of {per_fold}+{per_fold} pairs are complete; unexpected {line:?}"
            ),
        ));
    }
    Ok(pairs)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fold {
    /// Chosen on the other folds.
    pub threshold: f64,
    /// On this fold.
    pub accuracy: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LfwReport {
    pub folds: Vec<Fold>,
    pub accuracy_mean: f64,
    /// Sample standard deviation of the fold accuracies (n - 1).
    pub accuracy_std: f64,
    /// Standard error of the mean, std / sqrt(folds): LFW's "mean +- SE".
    pub accuracy_se: f64,
    /// EER over all pairs, and its threshold.
    pub eer: f64,
    pub eer_threshold: f64,
    pub pairs: usize,
}

/// Accuracy of threshold `t` on `(distance, same)` pairs.
fn accuracy(pairs: &[(f32, bool)], t: f32) -> f64 {
    let right = pairs.iter().filter(|(d, s)| (*d <= t) == *s).count();
    right as f64 / pairs.len() as f64
}

/// The threshold maximising accuracy: candidates are midpoints between consecutive distinct
/// distances (and just below / above the extremes); the first best wins.
fn best_threshold(pairs: &[(f32, bool)]) -> f32 {
    let mut d: Vec<f32> = pairs.iter().map(|p| p.0).collect();
    d.sort_by(f32::total_cmp);
    d.dedup();
    let mut candidates = vec![d[0] - 1.0];
    candidates.extend(d.windows(2).map(|w| (w[0] + w[1]) / 2.0));
    candidates.push(d[d.len() - 1] + 1.0);
    let mut best = (f64::MIN, candidates[0]);
    for t in candidates {
        let a = accuracy(pairs, t);
        if a > best.0 {
            best = (a, t);
        }
    }
    best.1
}

/// 10-fold (or `folds`-fold) protocol over `(distance, same, fold)`.
pub fn cross_validate(scored: &[(f32, bool, usize)], folds: usize) -> Result<LfwReport> {
    if scored.iter().any(|s| s.0.is_nan()) {
        return Err(Error::Invalid("a distance is NaN".into()));
    }
    let mut out = Vec::with_capacity(folds);
    for k in 0..folds {
        let (test, train): (Vec<_>, Vec<_>) = scored.iter().partition(|s| s.2 == k);
        if test.is_empty() || train.is_empty() {
            return Err(Error::Invalid(format!("fold {} has no pairs", k + 1)));
        }
        let pairs = |v: Vec<&(f32, bool, usize)>| -> Vec<(f32, bool)> {
            v.into_iter().map(|s| (s.0, s.1)).collect()
        };
        let t = best_threshold(&pairs(train));
        out.push(Fold {
            threshold: t as f64,
            accuracy: accuracy(&pairs(test), t),
        });
    }
    let n = out.len() as f64;
    let mean = out.iter().map(|f| f.accuracy).sum::<f64>() / n;
    let var = out.iter().map(|f| (f.accuracy - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let (genuine, impostor): (Vec<&(f32, bool, usize)>, Vec<_>) = scored.iter().partition(|s| s.1);
    let scores = Scores::new(
        genuine.iter().map(|s| s.0).collect(),
        impostor.iter().map(|s| s.0).collect(),
    )?;
    let e = scores.eer();
    Ok(LfwReport {
        folds: out,
        accuracy_mean: mean,
        accuracy_std: var.sqrt(),
        accuracy_se: (var / n).sqrt(),
        eer: e.target,
        eer_threshold: e.threshold,
        pairs: scored.len(),
    })
}
