//! `dvsp models register|list|show|promote|retire|pending`: the model registry in the store, the
//! weights in the models directory, every action recorded with who and when.
use std::path::PathBuf;

use anyhow::Context;
use dvsp_core::registry::{measured, GatePolicy};
use dvsp_custody::store::StoreError;
use dvsp_ops::registry::{actor, card_of, decide, num, pct, register, GateArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store: sqlite://PATH or postgres://... (the service's database).
    #[arg(
        long,
        env = "DVSP_DB",
        default_value = "sqlite://dvsp.db",
        global = true
    )]
    pub db: String,
    /// Where registered models' files live, one directory per model id (a volume in k8s).
    #[arg(long, env = "DVSP_MODELS_DIR", default_value = "models", global = true)]
    pub models_dir: PathBuf,
    /// Who acts, recorded with every action (default: $USER).
    #[arg(long, env = "DVSP_ACTOR", global = true)]
    pub by: Option<String>,
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Copy a trained (and evaluated) model directory into the models directory and register
    /// it as a candidate.
    Register {
        /// The model directory (weights and an evaluated card, as `dvsp eval` leaves it).
        #[arg(long)]
        model: PathBuf,
    },
    /// Every registered model with its state and figures.
    List,
    /// A model's card summary, last gate report and history, as JSON.
    Show {
        /// The model's id.
        id: String,
    },
    /// Apply the promotion gate against the serving model; promote when it passes (or with
    /// --force, recorded). Exits non-zero when refused.
    Promote {
        /// The candidate's id.
        id: String,
        #[command(flatten)]
        gate: GateArgs,
        /// Promote even when a check fails (recorded in the report and the history).
        #[arg(long)]
        force: bool,
    },
    /// Retire a model that does not serve.
    Retire {
        /// The model's id.
        id: String,
    },
    /// Template migration to a model (default: the serving one): how many subjects and
    /// retained images still lack a template of it (`dvsp reembed` does those), and the
    /// subjects that have no retained image, which must be enrolled again.
    Pending {
        /// The model migrated to (default: the serving one).
        id: Option<String>,
        /// The most subjects listed.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let store = super::open_store(&a.db).await?;
    match a.action {
        Action::Register { model } => {
            register(&store, &model, &a.models_dir, &actor(&a.by)?).await?;
        }
        Action::List => {
            let policy = GatePolicy {
                fmr: 1e-3,
                test_set: "test".into(),
                max_fnmr_loss: 0.0,
                max_ri_loss: 0.0,
            };
            println!(
                "{:<18} {:<10} {:<11} {:>9} {:>14} {:>8}  registered",
                "id", "state", "method", "EER", "FNMR@1e-3", "RI"
            );
            for row in store.models().await? {
                let m = card_of(&row).map(|c| measured(&c, &policy));
                let (method, eer, fnmr, ri) = match &m {
                    Ok(m) => (m.method.clone(), pct(m.eer), pct(m.fnmr), num(m.ri)),
                    Err(_) => ("?".into(), "-".into(), "-".into(), "-".into()),
                };
                println!(
                    "{:<18} {:<10} {:<11} {:>9} {:>14} {:>8}  {} by {}",
                    row.id,
                    row.state.name(),
                    method,
                    eer,
                    fnmr,
                    ri,
                    chrono::DateTime::from_timestamp_millis(row.registered_at)
                        .map_or("-".into(), |t| t.to_rfc3339()),
                    row.registered_by
                );
            }
        }
        Action::Show { id } => {
            let row = store
                .model(&id)
                .await?
                .with_context(|| format!("no registered model {id:?}"))?;
            let events = store.model_events(&id).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({ "model": row, "history": events })
                )?
            );
        }
        Action::Promote { id, gate: g, force } => {
            let report = decide(&store, &id, &g, force, &actor(&a.by)?).await?;
            anyhow::ensure!(
                report.promoted(),
                "the gate refused {id}: {}",
                report.reason
            );
        }
        Action::Retire { id } => match store.retire_model(&id, &actor(&a.by)?).await {
            Ok(()) => println!("retired {id}"),
            Err(StoreError::Conflict) => {
                anyhow::bail!("model {id} serves: promote another model first")
            }
            Err(StoreError::Missing) => anyhow::bail!("no registered model {id:?}"),
            Err(e) => return Err(e.into()),
        },
        Action::Pending { id, limit } => {
            anyhow::ensure!(limit >= 0, "--limit must be at least 0");
            let id = match id {
                Some(id) => {
                    store
                        .model(&id)
                        .await?
                        .with_context(|| format!("no registered model {id:?}"))?
                        .id
                }
                None => {
                    store
                        .serving_model()
                        .await?
                        .context("no model serves: name one")?
                        .id
                }
            };
            let without = store.count_subjects_without(&id).await?;
            let images = store.count_images_to_reembed(&id).await?;
            let (subjects, n) = store.pending_subjects(&id, limit).await?;
            println!(
                "model {id}: {without} subjects have no template of it; {images} retained images \
                 can be re-embedded (`dvsp reembed --to {id}`); {n} subjects have no retained \
                 image and must be enrolled again:"
            );
            println!("{:<24} {:<40} {:>9}", "gallery", "subject", "templates");
            for p in &subjects {
                println!(
                    "{:<24} {:<40} {:>9}",
                    p.gallery_id, p.subject_id, p.templates
                );
            }
            if (subjects.len() as i64) < n {
                println!("... and {} more (--limit)", n - subjects.len() as i64);
            }
        }
    }
    Ok(())
}
