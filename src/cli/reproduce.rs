//! `dvsp reproduce table1`: trains (or reuses) the four methods on MNIST with one command,
//! evaluates each and prints Table 1 of the paper next to the measured values.
use std::path::PathBuf;

use serde::Serialize;

use super::audit::AuditArgs;
use super::DataArgs;
use crate::artifact;
use crate::audit::AuditReport;
use crate::config::{Method, TrainConfig};
use crate::data::DataSpec;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Table {
    /// MNIST: EER and RI of DVIB, Center-loss, SphereFace, DVSP (paper Table 1).
    Table1,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(value_enum)]
    pub table: Table,
    /// Folder for the four model directories and table1.{md,json}.
    #[arg(long, default_value = "runs/table1")]
    pub out: PathBuf,
    /// Training epochs for every method.
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    pub epochs: usize,
    /// Train on only the first N training images (0 = all 50,000).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Retrain even when a model with the same configuration exists.
    #[arg(long)]
    pub retrain: bool,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub audit: AuditArgs,
}

/// The paper's Table 1: EER (x 0.01) and RI for each trained method.
pub fn paper(m: Method) -> Option<(f64, f64)> {
    match m {
        Method::Dvib => Some((1.267, 1.111)),
        Method::Center => Some((1.562, 1.245)),
        Method::Sphereface => Some((2.146, 1.299)),
        Method::Dvsp => Some((0.725, 2.292)),
        Method::Pretrained => None,
    }
}

#[derive(Debug, Serialize)]
struct Row {
    method: Method,
    model: PathBuf,
    paper_eer_percent: f64,
    eer_percent: f64,
    paper_ri: f64,
    ri: Option<f64>,
    ri_8bit: Option<f64>,
    convergence_ratio: f64,
    audit_seconds: f64,
    eer_t10k_percent: Option<f64>,
    fnmr_at_fmr_1e3_percent: f64,
    train_seconds: f64,
    eval_seconds: f64,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let Table::Table1 = a.table;
    let data = DataArgs {
        data: Some(DataSpec::Mnist),
        data_dir: a.data.data_dir.clone(),
    };
    let split = DataSpec::Mnist.load(&data.root(), None)?;
    let mut rows = Vec::new();
    let mut audits = Vec::new();
    for method in Method::ALL {
        let cfg = TrainConfig {
            method,
            epochs: a.epochs,
            limit: a.limit,
            seed: a.seed,
            ..TrainConfig::default()
        };
        let dir = a.out.join(method.name());
        let reuse = !a.retrain && artifact::read_card(&dir).is_ok_and(|c| c.training.config == cfg);
        if !reuse {
            crate::train::train(&cfg, &DataSpec::Mnist, &split, &dir, crate::device())?;
        }
        let t = std::time::Instant::now();
        let card = super::eval::evaluate(&dir, &data)?;
        let eval_seconds = t.elapsed().as_secs_f64();
        let previous: Option<AuditReport> = std::fs::read(dir.join("audit.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let audit = match previous {
            Some(r) if r.model_id == card.model_id && r.config == a.audit.config() => r,
            _ => super::audit::audit(&dir, &data, &a.audit)?,
        };
        let test = &card.metrics["test"];
        let (paper_eer, paper_ri) =
            paper(method).ok_or_else(|| anyhow::anyhow!("{} is not in Table 1", method.name()))?;
        audits.push((method, audit.robustness.h.clone()));
        rows.push(Row {
            method,
            model: dir,
            paper_eer_percent: paper_eer,
            eer_percent: test.eer * 100.0,
            paper_ri,
            ri: audit.robustness.ri,
            ri_8bit: audit.robustness_8bit.ri,
            convergence_ratio: audit.convergence.ratio,
            audit_seconds: audit.seconds,
            eer_t10k_percent: card.metrics.get("t10k").map(|r| r.eer * 100.0),
            fnmr_at_fmr_1e3_percent: test
                .at_fmr
                .iter()
                .find(|p| p.target == 1e-3)
                .map_or(f64::NAN, |p| p.fnmr * 100.0),
            train_seconds: card.training.seconds,
            eval_seconds,
        });
    }
    let mut md =
        String::from("| | DVIB | Center-loss | SphereFace | DVSP |\n|---|---|---|---|---|\n");
    let line = |name: &str, f: &dyn Fn(&Row) -> String| {
        format!(
            "| {name} | {} |\n",
            rows.iter().map(f).collect::<Vec<_>>().join(" | ")
        )
    };
    md += &line("EER (x0.01), paper", &|r| {
        format!("{:.3}", r.paper_eer_percent)
    });
    md += &line("EER (x0.01), measured", &|r| {
        format!("{:.3}", r.eer_percent)
    });
    md += &line("EER (x0.01), official t10k", &|r| {
        r.eer_t10k_percent.map_or("-".into(), |e| format!("{e:.3}"))
    });
    md += &line("RI, paper", &|r| format!("{:.3}", r.paper_ri));
    md += &line("RI, measured", &|r| {
        r.ri.map_or("-".into(), |v| format!("{v:.3}"))
    });
    md += &line("RI at 8 bits, measured", &|r| {
        r.ri_8bit.map_or("-".into(), |v| format!("{v:.3}"))
    });
    md += &line("RI 1x / 10x budget (converged if within 2%)", &|r| {
        format!("{:.4}", r.convergence_ratio)
    });
    md += &line("audit wall time (s)", &|r| {
        format!("{:.0}", r.audit_seconds)
    });
    md += &line("FNMR at FMR 1e-3 (%)", &|r| {
        format!("{:.3}", r.fnmr_at_fmr_1e3_percent)
    });
    md += &line("train wall time (s)", &|r| {
        format!("{:.0}", r.train_seconds)
    });
    print!("{md}");
    std::fs::create_dir_all(&a.out)?;
    let panels: Vec<(String, &[Vec<Option<f64>>])> = audits
        .iter()
        .map(|(m, h)| (m.name().to_string(), h.as_slice()))
        .collect();
    crate::plot::heatmap(&a.out.join("heatmaps"), &panels)?;
    std::fs::write(a.out.join("table1.md"), &md)?;
    std::fs::write(
        a.out.join("table1.json"),
        serde_json::to_string_pretty(&rows)?,
    )?;
    println!("wrote {}", a.out.join("table1.md").display());
    Ok(())
}
