//! `dvsp tune --method M`: hyperparameters chosen on a validation split carved from the
//! training images (`crate::tune`), never on the test split; writes `OUT/M/tune.json` and
//! `tune.md`, which `dvsp reproduce --tuned OUT` reads.
use std::path::{Path, PathBuf};

use super::DataArgs;
use crate::audit::{AuditConfig, ThresholdAt};
use crate::config::{Method, TrainConfig};
use crate::data::{DataSpec, Dataset, Split};
use crate::tune::{self, Candidate, TuneReport};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The method to tune: dvsp, dvib, center or sphereface.
    #[arg(long, value_enum)]
    pub method: Method,
    /// Folder for the candidates (OUT/METHOD/LABEL) and OUT/METHOD/tune.{json,md}.
    #[arg(long, default_value = "runs/tune")]
    pub out: PathBuf,
    /// Training epochs of every candidate.
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fit on only the first N of the 40,000 fitting images (0 = all; for quick runs).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Audit pairs per ordered class pair on the validation split.
    #[arg(long, default_value_t = 2)]
    pub audit_pairs: usize,
    #[command(flatten)]
    pub data: DataArgs,
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
) -> anyhow::Result<Candidate> {
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

pub fn run(a: Args) -> anyhow::Result<()> {
    let spec = a.data.data.clone().unwrap_or(DataSpec::Mnist);
    anyhow::ensure!(
        matches!(spec, DataSpec::Mnist | DataSpec::FashionMnist),
        "dvsp tune carves its validation split from MNIST's or Fashion-MNIST's 50,000 training images; {spec} is not supported"
    );
    let grid = tune::grid(
        a.method,
        &TrainConfig {
            epochs: a.epochs,
            seed: a.seed,
            limit: a.limit,
            ..TrainConfig::default()
        },
    );
    anyhow::ensure!(!grid.is_empty(), "{} cannot be tuned", a.method.name());
    let train = spec.load(&a.data.root(), None)?.train;
    let (fit, val) = tune::holdout(&train, tune::VALIDATION)?;
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
        println!(
            "{} {label}: validation EER {:.3}%, RI {:.3}",
            a.method.name(),
            c.validation_eer * 100.0,
            c.validation_ri
        );
        candidates.push(c);
    }
    let chosen = tune::choose(&candidates).expect("a non-empty grid");
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
    std::fs::write(root.join("tune.md"), &md)?;
    crate::artifact::write_atomic(
        &root.join("tune.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    print!("{md}");
    Ok(())
}

/// The chosen configuration of `method` from `dvsp tune --out dir`.
pub fn tuned(dir: &Path, method: Method) -> anyhow::Result<TrainConfig> {
    let path = dir.join(method.name()).join("tune.json");
    let bytes = std::fs::read(&path).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}; run `dvsp tune --method {} --out {}` first",
            path.display(),
            method.name(),
            dir.display()
        )
    })?;
    let r: TuneReport = serde_json::from_slice(&bytes)?;
    Ok(r.candidates[r.chosen].config.clone())
}
