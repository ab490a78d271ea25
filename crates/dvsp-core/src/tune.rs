//! Hyperparameter selection on training data only. The paper selects beta and R "by 5-fold
//! cross-validation such that it achieves the best balance between EER and RI" (section 4.1).
//! Here every method gets the same budget, four candidate configurations, each trained on the
//! first 40,000 of the 50,000 training images and measured on the last 10,000 (the validation
//! split); the test split (training file 50,000..60,000) and the official t10k file are never
//! read. Balance rule: each candidate is ranked by validation EER (ascending) and by validation
//! RI (descending); the smallest rank sum wins, ties going to the lower EER.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{AuditConfig, ThresholdAt};
use crate::config::{Method, TrainConfig};
use crate::data::{DataSpec, Dataset, Split};
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

#[derive(Debug, clap::Args)]
pub struct TuneArgs {
    /// The method to tune: dvsp, dvib, center or sphereface.
    #[arg(long, value_enum)]
    pub method: Method,
    /// Folder for the candidates (OUT/METHOD/LABEL) and OUT/METHOD/tune.{json,md}.
    #[arg(long, default_value = "runs/tune")]
    pub out: PathBuf,
    /// Training epochs of every candidate.
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    /// Seed of every candidate's training.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fit on only the first N of the 40,000 fitting images (0 = all; for quick runs).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Audit pairs per ordered class pair on the validation split.
    #[arg(long, default_value_t = 2)]
    pub audit_pairs: usize,
    #[command(flatten)]
    pub data: crate::data::DataArgs,
}

/// Trains (or reuses) one candidate and measures it on the validation split.
fn measure(
    dir: &Path,
    label: &str,
    config: &TrainConfig,
    spec: &DataSpec,
    fit: &Dataset,
    val: &Dataset,
    audit_pairs: usize,
) -> Result<Candidate> {
    let saved = dir.join("candidate.json");
    if let Some(c) = std::fs::read(&saved)
        .ok()
        .and_then(|b| serde_json::from_slice::<Candidate>(&b).ok())
        .filter(|c| c.config == *config)
    {
        return Ok(c);
    }
    let device = crate::device();
    let split = Split {
        train: fit.head(usize::MAX),
        test: val.head(usize::MAX),
        extra_test: None,
        description: format!(
            "tuning: fit on training images 0..{}, validation on {}..{} (the test split is not read)",
            fit.len(),
            fit.len(),
            fit.len() + val.len()
        ),
    };
    crate::train::train(config, spec, &split, dir, device)?;
    let model = crate::artifact::load(dir, device)?;
    let report = crate::eval::score_set(&model.net, val, device)?.report(&[]);
    let cfg = AuditConfig {
        pairs: audit_pairs,
        threshold_at: ThresholdAt::Eer,
        attack: Default::default(),
        budgets: Vec::new(),
        pgd_steps: 0,
        batch: 600,
        seed: 0,
        convergence_pairs: 0,
        convergence_budgets: Vec::new(),
    };
    let (audit, _) = crate::audit::run(
        &model.net,
        &model.card.model_id,
        report.eer_threshold,
        val,
        &cfg,
    )?;
    let c = Candidate {
        label: label.to_string(),
        config: config.clone(),
        validation_eer: report.eer,
        validation_ri: audit.robustness.ri.unwrap_or(f64::NAN),
    };
    crate::artifact::write_atomic(&saved, serde_json::to_string_pretty(&c)?.as_bytes())?;
    Ok(c)
}

/// Tunes `a.method` on the validation split: trains (or reuses) every candidate of its grid,
/// chooses by the rule below, writes `OUT/METHOD/tune.{json,md}`; returns the report and its
/// markdown.
pub fn tune_job(a: &TuneArgs) -> Result<(TuneReport, String)> {
    let spec = a.data.data.clone().unwrap_or(DataSpec::Mnist);
    if !matches!(spec, DataSpec::Mnist | DataSpec::FashionMnist) {
        return Err(Error::Invalid(format!(
            "dvsp tune carves its validation split from MNIST's or Fashion-MNIST's 50,000 training images; {spec} is not supported"
        )));
    }
    let grid = grid(
        a.method,
        &TrainConfig {
            epochs: a.epochs,
            seed: a.seed,
            limit: a.limit,
            ..TrainConfig::default()
        },
    );
    if grid.is_empty() {
        return Err(Error::Invalid(format!(
            "{} cannot be tuned",
            a.method.name()
        )));
    }
    let train = spec.load(&a.data.root(), None)?.train;
    let (fit, val) = holdout(&train, VALIDATION)?;
    let root = a.out.join(a.method.name());
    let mut candidates = Vec::new();
    for (label, config) in &grid {
        let c = measure(
            &root.join(label),
            label,
            config,
            &spec,
            &fit,
            &val,
            a.audit_pairs,
        )?;
        tracing::info!(
            method = a.method.name(),
            candidate = %label,
            validation_eer = c.validation_eer,
            validation_ri = c.validation_ri,
            "tuning candidate measured"
        );
        candidates.push(c);
    }
    let chosen = choose(&candidates).expect("a non-empty grid");
    let report = TuneReport {
        method: a.method,
        split: format!(
            "{spec}: fit on training images 0..{}, validation on {}..{}; the test split and t10k are not read",
            fit.len(),
            fit.len(),
            train.len()
        ),
        rule: "smallest sum of the validation-EER rank (ascending) and the validation-RI rank (descending); ties to the lower EER".into(),
        candidates,
        chosen,
    };
    let mut md = format!(
        "# tune {}\n\n{}\n\nRule: {}.\n\n| candidate | validation EER (%) | validation RI | chosen |\n|---|---|---|---|\n",
        a.method.name(),
        report.split,
        report.rule
    );
    for (i, c) in report.candidates.iter().enumerate() {
        md += &format!(
            "| {} | {:.3} | {:.3} | {} |\n",
            c.label,
            c.validation_eer * 100.0,
            c.validation_ri,
            if i == chosen { "yes" } else { "" }
        );
    }
    crate::artifact::write_atomic(&root.join("tune.md"), md.as_bytes())?;
    crate::artifact::write_atomic(
        &root.join("tune.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    Ok((report, md))
}

/// The chosen configuration of `method` from `dvsp tune --out dir`.
pub fn tuned(dir: &Path, method: Method) -> Result<TrainConfig> {
    let path = dir.join(method.name()).join("tune.json");
    let bytes = std::fs::read(&path).map_err(|e| {
        Error::Invalid(format!(
            "{}: {e}; run `dvsp tune --method {} --out {}` first",
            path.display(),
            method.name(),
            dir.display()
        ))
    })?;
    let r: TuneReport = serde_json::from_slice(&bytes)?;
    Ok(r.candidates[r.chosen].config.clone())
}
