//! `dvsp retrain`: the admin retraining job in one command (a Kubernetes Job or CronJob):
//! train on the configured data, evaluate on its held-out split, audit robustness with the
//! serving model's audit settings (so both RIs come from the same pairs and attacks), register
//! the candidate, then apply the promotion gate against the serving model and promote it when
//! it passes (with `--reembed`, after re-embedding every retained enrollment image with it).
//! A refused candidate is a finished job (exit 0, the refusal recorded), not a
//! failed one a Job controller would retry.
use anyhow::Context;
use clap::Parser;

use crate::registry::{actor, apply, judge, register, serving_card, GateArgs};
use dvsp_custody::store::Store;

#[derive(Debug, clap::Args)]
#[group(skip)]
pub struct Args {
    /// What to train and where (`--out` is the job's working model directory).
    #[command(flatten)]
    pub train: dvsp_core::train::TrainArgs,
    #[command(flatten)]
    pub gate: GateArgs,
    /// Promote even when a gate check fails (recorded).
    #[arg(long)]
    pub force: bool,
    /// Skip the audit (the gate then refuses the candidate if the serving model has one).
    #[arg(long)]
    pub no_audit: bool,
    /// The store: sqlite://PATH or postgres://... (the service's database).
    #[arg(long, env = "DVSP_DB", default_value = "sqlite://dvsp.db")]
    pub db: String,
    /// Where registered models' files live, one directory per model id.
    #[arg(long, env = "DVSP_MODELS_DIR", default_value = "models")]
    pub models_dir: std::path::PathBuf,
    /// Who acts, recorded with the registration and the gate's decision (default: $USER).
    #[arg(long, env = "DVSP_ACTOR")]
    pub by: Option<String>,
    /// When the gate passes, re-embed every retained enrollment image with the candidate
    /// (`dvsp reembed`) before promoting it, so replicas switch to a model every such subject
    /// already has a template of. Needs the template keys.
    #[arg(long, env = "DVSP_RETRAIN_REEMBED")]
    pub reembed: bool,
    #[command(flatten)]
    pub keys: dvsp_server::config::KeyringArgs,
}

#[derive(Parser)]
struct AuditDefaults {
    #[command(flatten)]
    audit: dvsp_core::audit::outputs::AuditArgs,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let who = actor(&a.by)?;
    let store = Store::connect_existing(&a.db).await?;
    let serving = serving_card(&store).await?;
    let dir = a.train.out.clone();
    // The models directory must take the candidate: find out before hours of training.
    std::fs::create_dir_all(&a.models_dir)?;
    tempfile::tempfile_in(&a.models_dir)
        .with_context(|| format!("--models-dir {} is not writable", a.models_dir.display()))?;
    tracing::info!(stage = "train", out = %dir.display(), "retrain");
    let card = tokio::task::block_in_place(|| dvsp_core::train::train_job(&a.train))?;
    tracing::info!(stage = "eval", model = %card.model_id, "retrain");
    tokio::task::block_in_place(|| {
        dvsp_core::eval::evaluate(&dir, &a.train.data, dvsp_core::model::Precision::Fp32)
    })?;
    if a.no_audit {
        println!("audit skipped (--no-audit)");
    } else {
        // The serving model's audit settings when it recorded them, else the defaults.
        let cfg = serving
            .as_ref()
            .and_then(|s| s.robustness.as_ref())
            .and_then(|r| r.config.clone())
            .unwrap_or_else(|| AuditDefaults::parse_from(["audit"]).audit.config());
        tracing::info!(stage = "audit", model = %card.model_id, pairs = cfg.pairs, "retrain");
        let report = tokio::task::block_in_place(|| {
            dvsp_core::audit::outputs::audit(&dir, &a.train.data, &cfg, None)
        })?;
        println!(
            "audit: RI {}",
            report
                .robustness
                .ri
                .map_or("-".into(), |r| format!("{r:.4}"))
        );
    }
    tracing::info!(stage = "register", model = %card.model_id, "retrain");
    // Training is deterministic: the same data and settings give the same weights, an id
    // registered before. That is a finished job too: gated again unless it serves.
    let id = match store.model(&card.model_id).await? {
        None => register(&store, &dir, &a.models_dir, &who).await?,
        Some(row) if row.state == dvsp_custody::store::ModelState::Serving => {
            println!(
                "{}: the retrained weights are the serving model's; nothing to do",
                row.id
            );
            return Ok(());
        }
        Some(row) => {
            println!(
                "{} is registered already ({}): gating it again",
                row.id,
                row.state.name()
            );
            row.id
        }
    };
    tracing::info!(stage = "gate", model = %id, "retrain");
    let judged = judge(&store, &id, &a.gate, a.force).await?;
    if a.reembed && judged.report.promoted() {
        tracing::info!(stage = "reembed", model = %id, "retrain");
        crate::reembed::reembed(crate::reembed::Args {
            to: id.clone(),
            db: a.db.clone(),
            models_dir: a.models_dir.clone(),
            keys: a.keys.clone(),
            batch: 64,
            max_pixels: dvsp_server::decode::MAX_PIXELS,
            by: Some(who.clone()),
            measure: false,
        })
        .await?;
    }
    apply(&store, &id, &judged, &who).await?;
    tracing::info!(stage = "done", model = %id, promoted = judged.report.promoted(), "retrain");
    Ok(())
}
