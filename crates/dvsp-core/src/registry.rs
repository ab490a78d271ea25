//! The model registry's two pieces that are not SQL: the models directory (`--models-dir`,
//! one sub-directory per registered model id, written once) and the promotion gate, which
//! decides from two model cards whether a candidate may replace the serving model.
//!
//! The gate compares what was measured the same way on both models, and refuses otherwise:
//! FNMR at the serving FMR on the same held-out pairs (same data set and split, same pair
//! counts, as `dvsp eval` wrote them), and RI (eq. 17) from audits with equal settings (the
//! same pairs, seed and attacks, as `dvsp audit` recorded them). A candidate whose audit did
//! not converge is refused: its RI is only a loose upper bound.
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::artifact::ModelCard;
use crate::{Error, Result};

/// The gate's tolerances.
#[derive(Debug, Clone, Serialize)]
pub struct GatePolicy {
    /// The operating point both models are compared at (the service's `--fmr`).
    pub fmr: f64,
    /// The held-out set of the cards' metrics compared (`test`: the split `eval` holds out).
    pub test_set: String,
    /// How much higher the candidate's FNMR may be, absolute (0.005 = half a point).
    pub max_fnmr_loss: f64,
    /// How much lower its RI may be, relative to the serving model's (0.05 = 5%).
    pub max_ri_loss: f64,
}

/// One model's side of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub model_id: String,
    pub method: String,
    pub dataset: String,
    /// EER on the test set.
    pub eer: Option<f64>,
    /// FNMR at the policy's FMR on the test set, and the threshold T there.
    pub fnmr: Option<f64>,
    pub threshold: Option<f64>,
    pub ri: Option<f64>,
    pub ri_converged: Option<bool>,
}

/// One condition of the gate.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub passed: bool,
    pub detail: String,
}

/// The gate's decision on a candidate, stored with it and printed.
#[derive(Debug, Clone, Serialize)]
pub struct GateReport {
    pub candidate: Measured,
    pub serving: Option<Measured>,
    pub policy: GatePolicy,
    pub checks: Vec<Check>,
    /// Every check passed.
    pub passed: bool,
    /// Promoted in spite of a failed check (`--force`).
    pub forced: bool,
    pub reason: String,
}

impl GateReport {
    pub fn promoted(&self) -> bool {
        self.passed || self.forced
    }
}

/// What `card` says of itself under `policy` (its EER, FNMR at the policy's FMR, RI).
pub fn measured(card: &ModelCard, policy: &GatePolicy) -> Measured {
    let report = card.metrics.get(&policy.test_set);
    let point = report.and_then(|r| {
        r.at_fmr
            .iter()
            .find(|p| (p.target - policy.fmr).abs() <= 1e-9 * policy.fmr.abs().max(1e-12))
    });
    Measured {
        model_id: card.model_id.clone(),
        method: card.net.method.name().to_string(),
        dataset: format!("{} ({})", card.training.dataset, card.training.split),
        eer: report.map(|r| r.eer),
        fnmr: point.map(|p| p.fnmr),
        threshold: point.map(|p| p.threshold),
        ri: card.robustness.as_ref().and_then(|r| r.ri),
        ri_converged: card.robustness.as_ref().and_then(|r| r.converged),
    }
}

fn check(what: &str, passed: bool, detail: String) -> Check {
    Check {
        what: what.to_string(),
        passed,
        detail,
    }
}

/// Whether `candidate` may replace `serving` (`None`: nothing serves yet) under `policy`.
pub fn gate(
    serving: Option<&ModelCard>,
    candidate: &ModelCard,
    policy: &GatePolicy,
    force: bool,
) -> GateReport {
    let c = measured(candidate, policy);
    let s = serving.map(|s| measured(s, policy));
    let set = &policy.test_set;
    let mut checks = vec![check(
        "candidate evaluated",
        c.fnmr.is_some(),
        match c.fnmr {
            Some(f) => format!("FNMR {:.3}% at FMR {} on {set}", 100.0 * f, policy.fmr),
            None => format!(
                "no FNMR at FMR {} on {set} in its card (`dvsp eval` writes FMR 1e-2, 1e-3 and 1e-4)",
                policy.fmr
            ),
        },
    )];
    if serving.is_none() {
        checks.push(check(
            "a serving model to compare with",
            false,
            "nothing serves yet: a first promotion is the operator's decision (--force, recorded)"
                .into(),
        ));
    }
    if let (Some(serving), Some(s)) = (serving, &s) {
        let (cr, sr) = (
            candidate.metrics.get(set.as_str()),
            serving.metrics.get(set.as_str()),
        );
        let same_data = candidate.training.dataset == serving.training.dataset
            && candidate.training.split == serving.training.split
            && match (cr, sr) {
                (Some(a), Some(b)) => {
                    (a.genuine_pairs, a.impostor_pairs) == (b.genuine_pairs, b.impostor_pairs)
                }
                _ => false,
            };
        checks.push(check(
            "same held-out data",
            same_data,
            format!(
                "{set}: candidate {} with {}, serving {} with {}",
                c.dataset,
                cr.map_or("no metrics".into(), |r| format!(
                    "{} genuine / {} impostor pairs",
                    r.genuine_pairs, r.impostor_pairs
                )),
                s.dataset,
                sr.map_or("no metrics".into(), |r| format!(
                    "{} genuine / {} impostor pairs",
                    r.genuine_pairs, r.impostor_pairs
                )),
            ),
        ));
        checks.push(match (c.fnmr, s.fnmr) {
            (Some(cf), Some(sf)) => check(
                "FNMR at the serving FMR",
                // A loss of exactly the tolerance passes, whatever the rounding.
                cf - sf <= policy.max_fnmr_loss + 1e-12,
                format!(
                    "candidate {:.3}% vs serving {:.3}% (change {:+.3} points, at most +{:.3} allowed)",
                    100.0 * cf,
                    100.0 * sf,
                    100.0 * (cf - sf),
                    100.0 * policy.max_fnmr_loss
                ),
            ),
            (_, None) => check(
                "FNMR at the serving FMR",
                false,
                format!(
                    "the serving model has no FNMR at FMR {} on {set}: evaluate it first",
                    policy.fmr
                ),
            ),
            (None, _) => check(
                "FNMR at the serving FMR",
                false,
                "the candidate has none".into(),
            ),
        });
        checks.push(ri_check(serving, candidate, &c, s, policy));
    }
    let failed: Vec<&Check> = checks.iter().filter(|c| !c.passed).collect();
    let passed = failed.is_empty();
    let reason = match (passed, force) {
        (true, _) => "every check passed".to_string(),
        (false, f) => format!(
            "{}{}",
            if f {
                "forced past failed checks: "
            } else {
                "refused: "
            },
            failed
                .iter()
                .map(|c| format!("{} ({})", c.what, c.detail))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    GateReport {
        candidate: c,
        serving: s,
        policy: policy.clone(),
        checks,
        passed,
        forced: force && !passed,
        reason,
    }
}

/// RI: compared only between audits with the same settings; not compared when the serving
/// model was never audited (there is no figure to lose).
fn ri_check(
    serving: &ModelCard,
    candidate: &ModelCard,
    c: &Measured,
    s: &Measured,
    policy: &GatePolicy,
) -> Check {
    let what = "RI (eq. 17) on the same audit pairs";
    let Some(s_ri) = s.ri else {
        return check(
            what,
            true,
            "not compared: the serving model has no audit".into(),
        );
    };
    let (Some(sa), Some(ca)) = (&serving.robustness, &candidate.robustness) else {
        return check(
            what,
            false,
            "the serving model was audited, the candidate not: run `dvsp audit` with the same settings".into(),
        );
    };
    if sa.config.is_none() || sa.config != ca.config || sa.threshold_at != ca.threshold_at {
        return check(
            what,
            false,
            "the two audits' settings differ (or were not recorded): audit the candidate with the serving model's settings".into(),
        );
    }
    if c.ri_converged == Some(false) {
        return check(
            what,
            false,
            "the candidate's audit did not converge (its RI is a loose upper bound)".into(),
        );
    }
    match c.ri {
        Some(c_ri) => check(
            what,
            c_ri >= s_ri * (1.0 - policy.max_ri_loss) - 1e-12,
            format!(
                "candidate {c_ri:.4} vs serving {s_ri:.4} ({:+.1}%, at most -{:.1}% allowed)",
                100.0 * (c_ri / s_ri - 1.0),
                100.0 * policy.max_ri_loss
            ),
        ),
        None => check(what, false, "the candidate's audit has no RI".into()),
    }
}

/// Lower-case hex of the SHA-256 of `bytes` (a registered card's fingerprint).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where a registered model's files are: `<models_dir>/<id>`.
pub fn model_dir(models_dir: &Path, id: &str) -> PathBuf {
    models_dir.join(id)
}

/// Copies the model directory `from` into `<models_dir>/<id>` (files and sub-directories;
/// a symbolic link is refused), through a fresh temporary directory beside it and a rename,
/// so a reader never sees half a model, then loads the copy (hash, shapes) to check it. A
/// directory already there is kept if it holds these weights and this card (a registration
/// retried), refused otherwise.
pub fn store_files(from: &Path, models_dir: &Path, id: &str) -> Result<PathBuf> {
    use crate::artifact::{CARD, WEIGHTS};
    let to = model_dir(models_dir, id);
    let same = |name: &str| {
        std::fs::read(to.join(name))
            .ok()
            .zip(std::fs::read(from.join(name)).ok())
            .is_some_and(|(a, b)| a == b)
    };
    if to.exists() {
        return if same(WEIGHTS) && same(CARD) {
            Ok(to)
        } else {
            Err(Error::Invalid(format!(
                "{} exists with other weights or another card; move it away first",
                to.display()
            )))
        };
    }
    std::fs::create_dir_all(models_dir).map_err(Error::io(models_dir))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{id}.tmp-"))
        .tempdir_in(models_dir)
        .map_err(Error::io(models_dir))?;
    copy_tree(from, tmp.path())?;
    std::fs::rename(tmp.path(), &to).map_err(Error::io(&to))?;
    // Renamed away: nothing left for the guard to remove.
    let _ = tmp.keep();
    crate::artifact::load(&to, tch::Device::Cpu)?;
    Ok(to)
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(Error::io(to))?;
    for entry in std::fs::read_dir(from).map_err(Error::io(from))? {
        let entry = entry.map_err(Error::io(from))?;
        let kind = entry.file_type().map_err(Error::io(entry.path()))?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            let mut src = std::fs::File::open(entry.path()).map_err(Error::io(entry.path()))?;
            let mut dst = std::fs::File::create(&target).map_err(Error::io(&target))?;
            std::io::copy(&mut src, &mut dst).map_err(Error::io(&target))?;
            // On disk before the rename makes the directory visible.
            dst.sync_all().map_err(Error::io(&target))?;
        } else {
            return Err(Error::Invalid(format!(
                "{}: a symbolic link or special file; a model directory holds plain files",
                entry.path().display()
            )));
        }
    }
    Ok(())
}
