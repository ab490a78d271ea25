//! `dvsp reproduce table1`: trains (or reuses) the four methods and two ablations on MNIST
//! over several seeds, evaluates and audits each (RI at the EER threshold and at FMR 1e-3),
//! and prints Table 1 of the paper next to the measured values with mean +- std over seeds and
//! bootstrap 95% intervals. Resumable: every finished model, evaluation and audit is reused.
use std::path::{Path, PathBuf};

use serde::Serialize;

use dvsp_core::artifact;
use dvsp_core::audit::outputs::{output_name, AuditArgs};
use dvsp_core::audit::AuditReport;
use dvsp_core::config::ThresholdAt;
use dvsp_core::config::{Method, TrainConfig};
use dvsp_core::data::DataArgs;
use dvsp_core::data::DataSpec;
use dvsp_core::metrics::bootstrap;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Table {
    /// MNIST: EER and RI of DVIB, Center-loss, SphereFace, DVSP (paper Table 1) and the two
    /// eq. 15 ablations.
    Table1,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The table to reproduce.
    #[arg(value_enum)]
    pub table: Table,
    /// Folder for the model directories (OUT/ROW/seedS) and table1.{md,json}.
    #[arg(long, default_value = "runs/table1")]
    pub out: PathBuf,
    /// Training epochs for every row.
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    pub epochs: usize,
    /// Train on only the first N training images (0 = all 50,000).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Seeds 0..N for every row.
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// The hyperparameters chosen by `dvsp tune --out DIR` (every method must be tuned);
    /// without it, the defaults of `dvsp train`.
    #[arg(long)]
    pub tuned: Option<PathBuf>,
    /// Bootstrap resamples of the 95% intervals (seed 0's models).
    #[arg(long, default_value_t = 200)]
    pub bootstrap: usize,
    /// Retrain even when a model with the same configuration exists.
    #[arg(long)]
    pub retrain: bool,
    #[command(flatten)]
    pub data: DataArgs,
    /// The audit (its convergence re-attack runs on seed 0 only).
    #[command(flatten)]
    pub audit: AuditArgs,
}

/// A row of the table: a method, with the eq. 15 step as tuned or switched for an ablation.
struct Variant {
    name: &'static str,
    method: Method,
    eq15: Eq15,
}

/// The eq. 15 step of a row. Each ablation swaps one ingredient: DVSP without the step, and
/// DVIB with DVSP's very step (its tuned or default eps), so the two differ from their
/// method only in eq. 15.
#[derive(Clone, Copy, PartialEq)]
enum Eq15 {
    AsTuned,
    Off,
    AsDvsp,
}

const ROWS: [Variant; 6] = [
    Variant {
        name: "dvib",
        method: Method::Dvib,
        eq15: Eq15::AsTuned,
    },
    Variant {
        name: "center",
        method: Method::Center,
        eq15: Eq15::AsTuned,
    },
    Variant {
        name: "sphereface",
        method: Method::Sphereface,
        eq15: Eq15::AsTuned,
    },
    Variant {
        name: "dvsp",
        method: Method::Dvsp,
        eq15: Eq15::AsTuned,
    },
    Variant {
        name: "dvsp-no-eq15",
        method: Method::Dvsp,
        eq15: Eq15::Off,
    },
    Variant {
        name: "dvib-eq15",
        method: Method::Dvib,
        eq15: Eq15::AsDvsp,
    },
];

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

/// Mean and (sample) standard deviation.
#[derive(Debug, Clone, Copy, Serialize)]
struct Stat {
    mean: f64,
    std: f64,
}

impl Stat {
    fn of(v: &[f64]) -> Stat {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        Stat {
            mean,
            std: var.sqrt(),
        }
    }
}

/// One model of a row.
#[derive(Debug, Serialize)]
struct Run {
    seed: u64,
    model: PathBuf,
    eer_percent: f64,
    eer_t10k_percent: Option<f64>,
    fnmr_at_fmr_1e3_percent: f64,
    ri_eer: f64,
    ri_eer_8bit: f64,
    ri_fmr_1e3: f64,
    /// The certified lower bound of the RI at the EER threshold (`dvsp_core::certify`).
    ri_certified: f64,
    train_seconds: f64,
    audit_seconds: f64,
}

#[derive(Debug, Serialize)]
struct Row {
    name: &'static str,
    config: TrainConfig,
    paper_eer_percent: Option<f64>,
    paper_ri: Option<f64>,
    runs: Vec<Run>,
    eer: Stat,
    ri_eer: Stat,
    ri_eer_8bit: Stat,
    ri_fmr_1e3: Stat,
    ri_certified: Stat,
    fnmr_at_fmr_1e3: Stat,
    /// Bootstrap 95% intervals on seed 0's model.
    eer_ci_percent: (f64, f64),
    ri_eer_ci: (f64, f64),
    ri_fmr_1e3_ci: (f64, f64),
    /// Seed 0's audit at the EER threshold: RI at 1x over RI at the largest budget, and the
    /// pairs each attack won.
    convergence_ratio: f64,
    converged: bool,
    wins: Vec<(dvsp_core::attack::ensemble::Attack, usize)>,
    pgd_below_budget: usize,
    /// Seed 0's transfer check from another row's seed-0 model (`transfer_source`).
    transfer: Option<Transfer>,
}

#[derive(Debug, Serialize)]
struct Transfer {
    from: &'static str,
    found: usize,
    pairs: usize,
    below_white_box: usize,
    median_ratio: Option<f64>,
}

/// The row whose seed-0 perturbations a row's seed-0 model is checked against: DVIB's for the
/// DVSP rows, DVSP's for the others.
fn transfer_source(row: &str) -> &'static str {
    match row {
        "dvsp" | "dvsp-no-eq15" => "dvib",
        _ => "dvsp",
    }
}

/// The transfer check of `row`'s seed-0 audit at the EER threshold, run once and kept in its
/// audit.json (rerun when the source model changed).
fn transfer_of(out: &Path, row: &str, test: &dvsp_core::data::Dataset) -> anyhow::Result<Transfer> {
    let device = dvsp_core::device();
    let dir = out.join(row).join("seed0");
    let from = transfer_source(row);
    let source = artifact::load(&out.join(from).join("seed0"), device)?;
    let path = dir.join(output_name("audit", "json", ThresholdAt::Eer));
    let mut report: AuditReport = serde_json::from_slice(&std::fs::read(&path)?)?;
    if report
        .transfer
        .as_ref()
        .is_none_or(|t| t.source_model_id != source.card.model_id)
    {
        let model = artifact::load(&dir, device)?;
        let threshold = ThresholdAt::Eer.from_card(&source.card)?;
        report.transfer = Some(dvsp_core::audit::transfer(
            &model.net,
            &source.net,
            &source.card.model_id,
            threshold,
            test,
            &report,
        )?);
        artifact::write_atomic(&path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    let t = report.transfer.expect("set above");
    Ok(Transfer {
        from,
        found: t.found,
        pairs: t.l2.len(),
        below_white_box: t.below_white_box,
        median_ratio: t.median_ratio,
    })
}

/// The audit of `dir` at `t` (reused when its model and configuration match).
fn audit_at(
    dir: &Path,
    model_id: &str,
    data: &DataArgs,
    args: &AuditArgs,
) -> anyhow::Result<AuditReport> {
    let path = dir.join(output_name("audit", "json", args.threshold_at));
    let previous: Option<AuditReport> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    match previous {
        Some(r) if r.model_id == model_id && r.config == args.config() => Ok(r),
        _ => dvsp_core::audit::outputs::audit(dir, data, &args.config(), None).map_err(Into::into),
    }
}

fn ri_ci(r: &AuditReport, reps: usize) -> (f64, f64) {
    let results: Vec<(usize, usize, f64)> = r
        .pairs
        .iter()
        .map(|p| (p.source_class, p.target_class, p.l2))
        .collect();
    bootstrap::ri_interval(r.robustness.classes, &results, reps, 0)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let Table::Table1 = a.table;
    anyhow::ensure!(a.seeds >= 1, "--seeds must be at least 1");
    let data = DataArgs {
        data: Some(DataSpec::Mnist),
        data_dir: a.data.data_dir.clone(),
    };
    let split = DataSpec::Mnist.load(&data.root(), None)?;
    let labels: Vec<i64> = Vec::<i64>::try_from(&split.test.labels)?;
    let mut rows = Vec::new();
    let mut heatmaps = Vec::new();
    let config = |method: Method| -> anyhow::Result<TrainConfig> {
        Ok(match &a.tuned {
            Some(dir) => dvsp_core::tune::tuned(dir, method)?,
            None => TrainConfig {
                method,
                ..TrainConfig::default()
            },
        })
    };
    let dvsp_eps = config(Method::Dvsp)?.eps();
    for v in &ROWS {
        let mut cfg = config(v.method)?;
        (cfg.epochs, cfg.limit) = (a.epochs, a.limit);
        match v.eq15 {
            Eq15::AsTuned => {}
            Eq15::Off => cfg.eps = Some(0.0),
            Eq15::AsDvsp => cfg.eps = Some(dvsp_eps),
        }
        let mut runs = Vec::new();
        let mut seed0 = None;
        for seed in 0..a.seeds {
            cfg.seed = seed;
            let dir = a.out.join(v.name).join(format!("seed{seed}"));
            let reuse =
                !a.retrain && artifact::read_card(&dir).is_ok_and(|c| c.training.config == cfg);
            if !reuse {
                dvsp_core::train::train(&cfg, &DataSpec::Mnist, &split, &dir, dvsp_core::device())?;
            }
            let card = match artifact::read_card(&dir)? {
                c if c.metrics.contains_key("test") && c.metrics.contains_key("t10k") => c,
                _ => dvsp_core::eval::evaluate(&dir, &data, dvsp_core::model::Precision::Fp32)?,
            };
            let mut at_eer = a.audit.clone();
            at_eer.threshold_at = ThresholdAt::Eer;
            if seed > 0 {
                at_eer.convergence_budgets.clear();
            }
            let mut at_fmr = at_eer.clone();
            at_fmr.threshold_at = ThresholdAt::Fmr(1e-3);
            at_fmr.convergence_budgets.clear();
            let eer_audit = audit_at(&dir, &card.model_id, &data, &at_eer)?;
            let fmr_audit = audit_at(&dir, &card.model_id, &data, &at_fmr)?;
            let test = &card.metrics["test"];
            runs.push(Run {
                seed,
                model: dir.clone(),
                eer_percent: test.eer * 100.0,
                eer_t10k_percent: card.metrics.get("t10k").map(|r| r.eer * 100.0),
                fnmr_at_fmr_1e3_percent: test
                    .at_fmr
                    .iter()
                    .find(|p| p.target == 1e-3)
                    .map_or(f64::NAN, |p| p.fnmr * 100.0),
                ri_eer: eer_audit.robustness.ri.unwrap_or(f64::NAN),
                ri_eer_8bit: eer_audit.robustness_8bit.ri.unwrap_or(f64::NAN),
                ri_fmr_1e3: fmr_audit.robustness.ri.unwrap_or(f64::NAN),
                ri_certified: eer_audit
                    .robustness_certified
                    .as_ref()
                    .and_then(|c| c.ri)
                    .unwrap_or(f64::NAN),
                train_seconds: card.training.seconds,
                audit_seconds: eer_audit.seconds + fmr_audit.seconds,
            });
            if seed == 0 {
                seed0 = Some((dir, eer_audit, fmr_audit));
            }
        }
        let (dir0, eer0, fmr0) = seed0.expect("seed 0 runs first");
        let model = artifact::load(&dir0, dvsp_core::device())?;
        let emb = dvsp_core::model::embed(&model.net, &split.test.images, 500, dvsp_core::device());
        let (lo, hi) = bootstrap::PairTable::new(&emb, &labels)?.eer_interval(a.bootstrap, 0);
        let stat = |f: &dyn Fn(&Run) -> f64| Stat::of(&runs.iter().map(f).collect::<Vec<_>>());
        heatmaps.push((v.name.to_string(), eer0.robustness.h.clone()));
        let paper = (v.eq15 == Eq15::AsTuned).then(|| paper(v.method)).flatten();
        rows.push(Row {
            name: v.name,
            config: TrainConfig { seed: 0, ..cfg },
            paper_eer_percent: paper.map(|p| p.0),
            paper_ri: paper.map(|p| p.1),
            eer: stat(&|r| r.eer_percent),
            ri_eer: stat(&|r| r.ri_eer),
            ri_eer_8bit: stat(&|r| r.ri_eer_8bit),
            ri_fmr_1e3: stat(&|r| r.ri_fmr_1e3),
            ri_certified: stat(&|r| r.ri_certified),
            fnmr_at_fmr_1e3: stat(&|r| r.fnmr_at_fmr_1e3_percent),
            eer_ci_percent: (lo * 100.0, hi * 100.0),
            ri_eer_ci: ri_ci(&eer0, a.bootstrap),
            ri_fmr_1e3_ci: ri_ci(&fmr0, a.bootstrap),
            convergence_ratio: eer0.convergence.ratio,
            converged: eer0.convergence.converged,
            wins: eer0.wins.clone(),
            pgd_below_budget: eer0.pgd_below_budget,
            transfer: None,
            runs,
        });
    }
    // Every row's seed-0 model exists only now.
    for row in &mut rows {
        row.transfer = Some(transfer_of(&a.out, row.name, &split.test)?);
    }
    let md = markdown(&rows, &a);
    print!("{md}");
    std::fs::create_dir_all(&a.out)?;
    let panels: Vec<(String, &[Vec<Option<f64>>])> = heatmaps
        .iter()
        .map(|(m, h)| (m.clone(), h.as_slice()))
        .collect();
    dvsp_core::plot::heatmap(&a.out.join("heatmaps"), &panels)?;
    std::fs::write(a.out.join("table1.md"), &md)?;
    std::fs::write(
        a.out.join("table1.json"),
        serde_json::to_string_pretty(&rows)?,
    )?;
    println!("wrote {}", a.out.join("table1.md").display());
    Ok(())
}

fn markdown(rows: &[Row], a: &Args) -> String {
    let mut md = format!(
        "Table 1 on MNIST: {} epochs, {} seeds (0 to {}), hyperparameters {}; audit {} pair(s) per ordered class pair; mean +- std over seeds, [bootstrap 95% interval of seed 0's model, {} resamples: EER over test images, RI over class pairs then their attacked pairs].\n\n| |",
        a.epochs,
        a.seeds,
        a.seeds - 1,
        a.tuned
            .as_ref()
            .map_or("the train defaults (not tuned)".into(), |d| format!(
                "tuned on a validation split ({})",
                d.display()
            )),
        a.audit.pairs,
        a.bootstrap
    );
    for r in rows {
        md += &format!(" {} |", r.name);
    }
    md += &format!("\n|{}\n", "---|".repeat(rows.len() + 1));
    let mut line = |name: &str, f: &dyn Fn(&Row) -> String| {
        md += &format!(
            "| {name} | {} |\n",
            rows.iter().map(f).collect::<Vec<_>>().join(" | ")
        );
    };
    let pm = |s: &Stat| format!("{:.3} +- {:.3}", s.mean, s.std);
    let ci = |c: (f64, f64)| format!("[{:.3}, {:.3}]", c.0, c.1);
    let or_dash = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
    line("EER (x0.01), paper", &|r| or_dash(r.paper_eer_percent));
    line("EER (x0.01), measured", &|r| {
        format!("{} {}", pm(&r.eer), ci(r.eer_ci_percent))
    });
    line("FNMR at FMR 1e-3 (%)", &|r| pm(&r.fnmr_at_fmr_1e3));
    line("RI, paper", &|r| or_dash(r.paper_ri));
    line("RI at the EER threshold", &|r| {
        format!("{} {}", pm(&r.ri_eer), ci(r.ri_eer_ci))
    });
    line("RI at the EER threshold, 8 bits", &|r| pm(&r.ri_eer_8bit));
    line(
        "RI at the EER threshold, certified lower bound (global Lipschitz)",
        &|r| format!("{:.5} +- {:.5}", r.ri_certified.mean, r.ri_certified.std),
    );
    line("RI at FMR 1e-3", &|r| {
        format!("{} {}", pm(&r.ri_fmr_1e3), ci(r.ri_fmr_1e3_ci))
    });
    line("RI 1x / 10x budget (seed 0)", &|r| {
        format!(
            "{:.4}{}",
            r.convergence_ratio,
            if r.converged { "" } else { " NOT CONVERGED" }
        )
    });
    line(
        "pairs won cw/ddn/ddn-segment/ddn-random/segment/pgd (seed 0)",
        &|r| {
            r.wins
                .iter()
                .map(|w| w.1.to_string())
                .collect::<Vec<_>>()
                .join("/")
        },
    );
    line("PGD below the ensemble (seed 0)", &|r| {
        r.pgd_below_budget.to_string()
    });
    line(
        "transfer (seed 0): from, pairs found / attacked, below white-box, median L2 ratio",
        &|r| match &r.transfer {
            Some(t) => format!(
                "{}: {}/{}, {}, {}",
                t.from,
                t.found,
                t.pairs,
                t.below_white_box,
                t.median_ratio.map_or("-".into(), |m| format!("{m:.2}"))
            ),
            None => "-".into(),
        },
    );
    line("train + audit wall time (s, mean)", &|r| {
        let n = r.runs.len() as f64;
        format!(
            "{:.0} + {:.0}",
            r.runs.iter().map(|x| x.train_seconds).sum::<f64>() / n,
            r.runs.iter().map(|x| x.audit_seconds).sum::<f64>() / n
        )
    });
    md
}
