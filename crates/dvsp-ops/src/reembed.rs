//! `dvsp reembed --to MODEL`: template migration. Every retained enrollment image
//! (`serve --retain-images`) without a template of MODEL is embedded with it, in batches (one
//! inference pass and one store transaction each), while the replicas keep serving the old
//! model. It resumes by construction: a run reads only the images that have no template of
//! MODEL yet, so a killed run started again does the rest. The run is recorded in MODEL's
//! history (who, when, how many, how fast).
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use dvsp_custody::store::{ModelState, Store};
use dvsp_server::served::{Loading, OperatingPoint, Served};
use dvsp_server::{self as server, Batching, Limits};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The registered model to embed with (`dvsp models list`), a candidate or the serving one.
    #[arg(long)]
    pub to: String,
    /// The store: sqlite://PATH or postgres://... (the service's database).
    #[arg(long, env = "DVSP_DB", default_value = "sqlite://dvsp.db")]
    pub db: String,
    /// The models directory the model's files are in.
    #[arg(long, env = "DVSP_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,
    /// The keys the images and templates are sealed with.
    #[command(flatten)]
    pub keys: dvsp_server::config::KeyringArgs,
    /// Images per batch.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub batch: u64,
    /// Largest image decoded, in pixels (the service's --max-pixels).
    #[arg(long, env = "DVSP_MAX_PIXELS", default_value_t = dvsp_server::decode::MAX_PIXELS)]
    pub max_pixels: u64,
    /// Who runs it, recorded in the model's history (default: $USER).
    #[arg(long, env = "DVSP_ACTOR")]
    pub by: Option<String>,
    /// Afterwards, measure the model's bare batched embedding rate (the images of the last
    /// full batch, inference only, for about 3 s) and print the run's rate as a ratio of it.
    #[arg(long)]
    pub measure: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(reembed(a))
}

/// The run `a` describes (also the last stage of `dvsp retrain --reembed`).
pub async fn reembed(a: Args) -> anyhow::Result<()> {
    let actor = crate::registry::actor(&a.by)?;
    let store = Store::connect_existing(&a.db)
        .await
        .with_context(|| format!("opening the store {}", dvsp_custody::store::redact(&a.db)))?;
    let row = store
        .model(&a.to)
        .await?
        .with_context(|| format!("no model {:?} is registered (`dvsp models list`)", a.to))?;
    anyhow::ensure!(
        row.state != ModelState::Retired,
        "model {} is retired: promote it again before re-embedding to it",
        row.id
    );
    let keyring = a.keys.load()?;
    let loading = Loading {
        // Re-embedding decides nothing: no threshold is used.
        operating_point: OperatingPoint::Explicit(f64::NAN),
        batching: Batching {
            max_batch: Some(a.batch as usize),
            max_wait: Some(Duration::ZERO),
            queue: 4,
        },
        precision: dvsp_core::model::Precision::Fp32,
        max_uncertainty: None,
    };
    let metrics = Arc::new(server::metrics::Metrics::new());
    let served = Served::load_registered(&a.models_dir, &row, &loading, metrics.clone())?;
    let setup = server::Setup {
        store: store.clone(),
        keyring,
        loading,
        limits: Limits {
            max_body_bytes: 0,
            max_pixels: a.max_pixels,
            max_uncertainty: None,
            max_attempts: 0,
            max_subject_attempts: 0,
            max_key_probes: 0,
            attempt_window: Duration::ZERO,
            timeout: Duration::ZERO,
            header_timeout: Duration::ZERO,
            max_connections: 0,
            max_in_flight: 0,
        },
        retain_images: false,
    };
    let app = server::App::new(setup, metrics, served, None);
    let total = store.count_images_to_reembed(&row.id).await?;
    println!(
        "reembed: {total} retained images have no template of model {} yet",
        row.id
    );
    let bar = dvsp_core::progress::progress_bar(total as u64, "reembed");
    let started = Instant::now();
    let (mut stored, mut undecodable, mut after) = (0u64, 0u64, String::new());
    let mut last = Vec::new();
    loop {
        let images = store
            .images_to_reembed(&row.id, &after, a.batch as i64)
            .await?;
        let Some(end) = images.last() else { break };
        after = end.id.clone();
        let done = app.reembed(&images).await.map_err(|e| {
            anyhow::anyhow!("{e}: the templates stored so far are kept; run again to resume")
        })?;
        stored += done.stored;
        undecodable += done.undecodable;
        bar.inc(images.len() as u64);
        let rate = stored as f64 / started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!("{rate:.0} templates/s"));
        // The reference is measured at the run's batch size: the last full batch.
        if images.len() >= last.len() {
            last = images;
        }
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let rate = stored as f64 / seconds.max(1e-9);
    println!(
        "reembed: {stored} templates of model {} stored in {seconds:.2} s ({rate:.0} templates/s), {undecodable} images did not decode for it",
        row.id
    );
    let left = store.count_images_to_reembed(&row.id).await?;
    let (_, n_pending) = store.pending_subjects(&row.id, 0).await?;
    println!(
        "reembed: {left} images still without a template of it; {n_pending} subjects have no retained image and must be enrolled again (`dvsp models pending`)"
    );
    store
        .record_model_event(
            &row.id,
            "reembed",
            &actor,
            &serde_json::json!({
                "stored": stored,
                "undecodable": undecodable,
                "left": left,
                "seconds": seconds,
            }),
        )
        .await?;
    if a.measure && !last.is_empty() {
        let limit = app.embedding_limit(&last, Duration::from_secs(3)).await?;
        println!(
            "reembed: the model's batched embedding limit on this machine is {limit:.0} images/s (batches of {}); the run reached {:.2} of it",
            last.len(),
            rate / limit
        );
    }
    Ok(())
}
