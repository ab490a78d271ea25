//! `dvsp audit`: the feature-space CW-L2 robustness audit of a model (RI, eq. 17), with the
//! heat map of H_{k,l} (Figure 4) and a grid of adversarial samples (Figure 5).
use std::path::{Path, PathBuf};

use super::DataArgs;
use crate::artifact::{self, RobustnessSummary};
use crate::attack::cw::CwConfig;
use crate::audit::{AuditConfig, AuditReport, ThresholdAt};

#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Sampled pairs per ordered class pair (90 class pairs on MNIST).
    #[arg(long, default_value_t = 20)]
    pub pairs: usize,
    /// Adam steps per binary-search round.
    #[arg(long, default_value_t = CwConfig::default().steps)]
    pub steps: usize,
    /// Binary-search rounds over c.
    #[arg(long, default_value_t = CwConfig::default().search)]
    pub search: usize,
    /// The threshold to cross: eer, or fmr=X for a target of the model card.
    #[arg(long, default_value = "eer")]
    pub threshold_at: ThresholdAt,
    /// L2 budgets for the FGSM and PGD-L2 baselines, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub budgets: Vec<f64>,
    /// Pairs optimised at once.
    #[arg(long, default_value_t = 600)]
    pub batch: usize,
    /// Seed for sampling the attacked pairs.
    #[arg(long, default_value_t = 0)]
    pub audit_seed: u64,
}

impl AuditArgs {
    pub fn config(&self) -> AuditConfig {
        AuditConfig {
            pairs: self.pairs,
            threshold_at: self.threshold_at,
            cw: CwConfig {
                steps: self.steps,
                search: self.search,
                ..CwConfig::default()
            },
            budgets: self.budgets.clone(),
            pgd_steps: 10,
            batch: self.batch,
            seed: self.audit_seed,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory (evaluated: the threshold comes from its card).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub audit: AuditArgs,
}

/// Audits the model in `dir`; writes audit.json, heatmap.{png,svg}, adversarial.png and the
/// summary into model.json. Returns the report.
pub fn audit(dir: &Path, data: &DataArgs, args: &AuditArgs) -> anyhow::Result<AuditReport> {
    let device = crate::device();
    let mut model = artifact::load(dir, device)?;
    let cfg = args.config();
    let threshold = cfg.threshold_at.from_card(&model.card)?;
    let (_, split) = data.load_for(&model.card)?;
    let (report, adv) = crate::audit::run(
        &model.net,
        &model.card.model_id,
        threshold,
        &split.test,
        &cfg,
        device,
    )?;
    artifact::write_atomic(
        &dir.join("audit.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    let title = format!(
        "{}: H(k,l), RI {}",
        model.card.net.method.name(),
        report
            .robustness
            .ri
            .map_or("-".into(), |r| format!("{r:.3}"))
    );
    crate::plot::heatmap(&dir.join("heatmap"), &[(title, &report.robustness.h)])?;
    // Figure 5: the first successful pair from each source class.
    let mut rows = Vec::new();
    for k in 0..split.test.classes {
        if let Some((i, r)) = report
            .pairs
            .iter()
            .enumerate()
            .find(|(_, r)| r.source_class == k && r.l2.is_some())
        {
            let img = |j: usize| {
                crate::data::to_input(&split.test.images.get(j as i64), tch::Device::Cpu)
            };
            rows.push([img(r.source_index), adv.get(i as i64), img(r.target_index)]);
        }
    }
    if !rows.is_empty() {
        crate::plot::attack_grid(&dir.join("adversarial.png"), &rows, 4)?;
    }
    model.card.robustness = Some(RobustnessSummary {
        ri: report.robustness.ri,
        success_rate: report.robustness.success_rate,
        threshold,
        threshold_at: cfg.threshold_at.to_string(),
        pairs_per_class_pair: cfg.pairs,
        seconds: report.seconds,
    });
    artifact::write_card(dir, &model.card)?;
    Ok(report)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let r = audit(&a.model, &a.data, &a.audit)?;
    let rb = &r.robustness;
    let failed: usize = rb.failures.iter().flatten().sum();
    println!(
        "{}: RI {} at T = {:.4} ({}), success {:.1}% ({} of {} pairs failed), L2 median {} mean {}, {:.0}s, {:.0} pair-steps/s",
        a.model.display(),
        rb.ri.map_or("-".into(), |v| format!("{v:.3}")),
        r.threshold,
        r.config.threshold_at,
        rb.success_rate * 100.0,
        failed,
        r.pairs.len(),
        rb.median_l2.map_or("-".into(), |v| format!("{v:.3}")),
        rb.mean_l2.map_or("-".into(), |v| format!("{v:.3}")),
        r.seconds,
        r.pair_steps_per_second
    );
    for b in &r.baselines {
        println!(
            "    {} at eps {}: success {:.1}%",
            b.attack,
            b.eps,
            b.success_rate * 100.0
        );
    }
    println!(
        "wrote audit.json, heatmap.png/svg, adversarial.png in {}",
        a.model.display()
    );
    Ok(())
}
