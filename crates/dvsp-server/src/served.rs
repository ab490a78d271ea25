//! The models a replica serves with: the serving model with the index of its
//! templates, and the model that served before it, kept loaded so that a subject whose
//! templates are all of it is still verified (with it, and the answer says so) until it is
//! re-embedded (`dvsp reembed`) or enrolled again. A request takes the lineup once, at its
//! start (`App::lineup`), and finishes on it: a switch never changes the model under a request.
//!
//! `watch` follows the registry (`--models-dir`): PostgreSQL's `dvsp_models` notification and
//! a poll (the only signal on SQLite). A newly promoted model is loaded beside the serving one
//! (its card checked against the registered hash, its weights against the card, its gallery
//! index loaded from the store), and only then switched in; a model that fails to load is
//! logged and counted, and the old one keeps serving.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use super::index::Index;
use super::metrics::Metrics;
use super::worker::Worker;
use super::{App, Batching};
use dvsp_core::artifact::ModelCard;
use dvsp_core::config::ThresholdAt;
use dvsp_core::model::Precision;
use dvsp_custody::store::{ModelRow, SealedRow, Store};

/// Where every model's threshold T comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OperatingPoint {
    /// The model card's threshold at this false match rate (each model its own T).
    Fmr(f64),
    /// One explicit T (`serve --model` only: it belongs to one model).
    Explicit(f64),
}

impl OperatingPoint {
    pub fn threshold(&self, card: &ModelCard) -> anyhow::Result<f64> {
        Ok(match *self {
            OperatingPoint::Fmr(f) => ThresholdAt::Fmr(f).from_card(card)?,
            OperatingPoint::Explicit(t) => t,
        })
    }

    /// How `/v1/model` names it, e.g. "fmr=1e-3" or "explicit".
    pub fn name(&self) -> String {
        match self {
            OperatingPoint::Fmr(f) => format!("fmr={f:e}"),
            OperatingPoint::Explicit(_) => "explicit".into(),
        }
    }
}

/// How every model of a replica is loaded and run.
#[derive(Debug, Clone, Copy)]
pub struct Loading {
    pub operating_point: OperatingPoint,
    pub batching: Batching,
    pub precision: Precision,
    /// `serve --max-uncertainty`: a model without a posterior spread r(x) cannot serve.
    pub max_uncertainty: Option<f64>,
}

/// A loaded model: its card and directory, its threshold T, its inference thread and, for a
/// face model, its face detector.
pub struct Served {
    pub card: ModelCard,
    /// Its directory, whose plots (`*.png` from `eval` and `audit`) the console shows.
    pub dir: PathBuf,
    /// Decision threshold T on the cosine distance (match when D <= T, eq. 1).
    pub threshold: f64,
    pub worker: Worker,
    pub faces: Option<Arc<Mutex<dvsp_core::face::FaceApi>>>,
}

impl Served {
    /// Loads the model in `dir` (blocking: run it off the async runtime) and starts its
    /// inference thread.
    pub fn load(dir: &Path, how: &Loading, metrics: Arc<Metrics>) -> anyhow::Result<Served> {
        let mut model = dvsp_core::artifact::load(dir, dvsp_core::device())?;
        model.net.set_precision(&mut model.vs, how.precision);
        let method = model.card.training.config.method;
        anyhow::ensure!(
            how.max_uncertainty.is_none() || method.variational(),
            "--max-uncertainty needs a dvsp or dvib model (its posterior spread r(x)); model {} is {}",
            model.card.model_id,
            method.name()
        );
        let threshold = how.operating_point.threshold(&model.card)?;
        let faces = match model.card.net.input.face {
            Some(_) => Some(Arc::new(Mutex::new(dvsp_core::face::photo::load_for(dir)?))),
            None => None,
        };
        let (card, dir) = (model.card.clone(), dir.to_path_buf());
        let cuda = model.vs.device().is_cuda();
        let b = how.batching;
        let worker = Worker::start(
            model,
            b.max_batch.unwrap_or(if cuda { 128 } else { 32 }).max(1),
            b.max_wait
                .unwrap_or(Duration::from_millis(if cuda { 2 } else { 0 })),
            b.queue.max(1),
            metrics,
        );
        Ok(Served {
            card,
            dir,
            threshold,
            worker,
            faces,
        })
    }

    /// Loads the registry's model `row` from the models directory `root`: the card must be
    /// the one registered (an audit or eval may not have rewritten it since), the weights
    /// the card's.
    pub fn load_registered(
        root: &Path,
        row: &ModelRow,
        how: &Loading,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Served> {
        let dir = dvsp_core::registry::model_dir(root, &row.id);
        let card = std::fs::read(dir.join(dvsp_core::artifact::CARD))
            .with_context(|| format!("the registry's model {}", row.id))?;
        anyhow::ensure!(
            dvsp_core::registry::sha256_hex(&card) == row.card_sha256,
            "{}: the card of model {} changed since it was registered",
            dir.display(),
            row.id
        );
        let served = Served::load(&dir, how, metrics)?;
        anyhow::ensure!(
            served.card.model_id == row.id,
            "{}: holds model {}, not {}",
            dir.display(),
            served.card.model_id,
            row.id
        );
        Ok(served)
    }
}

/// What a replica serves with at one moment.
pub struct Lineup {
    pub serving: Arc<Served>,
    /// The serving model's templates, by gallery (`index::sync` keeps it in step).
    pub index: Arc<Index>,
    /// The model served before, for subjects that have only its templates.
    pub previous: Option<Arc<Served>>,
}

impl Lineup {
    pub fn new(serving: Served, previous: Option<Served>) -> Lineup {
        Lineup {
            serving: Arc::new(serving),
            index: Arc::default(),
            previous: previous.map(Arc::new),
        }
    }

    /// The model to verify a subject with, and its rows of it: the serving model's rows when
    /// there are any (rows of other models are ignored), else the previous model's; else
    /// `None`: no loaded model can compare with them.
    pub fn usable(&self, rows: Vec<SealedRow>) -> Option<(Arc<Served>, Vec<SealedRow>)> {
        for m in std::iter::once(&self.serving).chain(&self.previous) {
            let of: Vec<SealedRow> = rows
                .iter()
                .filter(|r| r.model_id == m.card.model_id)
                .cloned()
                .collect();
            if !of.is_empty() {
                return Some((m.clone(), of));
            }
        }
        None
    }

    pub(super) fn publish(&self, metrics: &Metrics) {
        metrics.models.reset();
        metrics
            .models
            .with_label_values(&[&self.serving.card.model_id, "serving"])
            .set(1);
        if let Some(p) = &self.previous {
            metrics
                .models
                .with_label_values(&[&p.card.model_id, "previous"])
                .set(1);
        }
    }
}

/// How long a model that failed to load is left before it is tried again.
const RETRY_FAILED: Duration = Duration::from_secs(60);

impl App {
    /// The models serving now; a request takes it once and keeps it to its end.
    pub fn lineup(&self) -> Arc<Lineup> {
        self.lineup.read().expect("lineup").clone()
    }

    /// Makes `lineup` the one served (at start, and by `switch`).
    pub(super) fn install(&self, lineup: Lineup) {
        lineup.publish(&self.metrics);
        *self.lineup.write().expect("lineup") = Arc::new(lineup);
    }

    /// Switches to the registry's serving model `row` from `root` if it is not the one
    /// serving: loads it and its index beside the serving model, then switches; the model
    /// serving until then becomes the previous one. Ok(false) when nothing changed.
    pub async fn switch(self: &Arc<Self>, root: &Path, row: &ModelRow) -> anyhow::Result<bool> {
        let _one = self.switching.lock().await;
        let current = self.lineup();
        if current.serving.card.model_id == row.id {
            return Ok(false);
        }
        let started = std::time::Instant::now();
        let (root, r, how, metrics) = (
            root.to_path_buf(),
            row.clone(),
            self.loading,
            self.metrics.clone(),
        );
        let served =
            tokio::task::spawn_blocking(move || Served::load_registered(&root, &r, &how, metrics))
                .await??;
        let next = Lineup {
            serving: Arc::new(served),
            index: Arc::default(),
            previous: Some(current.serving.clone()),
        };
        for g in self.store.list_galleries().await? {
            self.refresh_in(&next, &g.id).await?;
        }
        self.install(next);
        // Writes committed during the load are in the feed: the new index takes them in now.
        let now = self.lineup();
        for g in self.store.list_galleries().await? {
            self.refresh_in(&now, &g.id).await?;
        }
        tracing::info!(
            model = %row.id,
            previous = %current.serving.card.model_id,
            seconds = started.elapsed().as_secs_f64(),
            "switched to the newly promoted model"
        );
        Ok(true)
    }

    /// Follows the registry while the app lives (the task holds it weakly): on a
    /// `dvsp_models` notification (PostgreSQL) and every `poll`, the serving model is read
    /// and switched to when it changed.
    pub fn watch_registry(self: &Arc<Self>, root: PathBuf, poll: Duration) {
        let app = Arc::downgrade(self);
        let notified = Arc::new(tokio::sync::Notify::new());
        if let Store::Postgres(pool) = &self.store {
            let own = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect_lazy_with((*pool.connect_options()).clone());
            tokio::spawn(listen_models(app.clone(), own, notified.clone()));
        }
        tokio::spawn(async move {
            let mut failed: Option<(String, std::time::Instant)> = None;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = notified.notified() => {}
                }
                let Some(app) = app.upgrade() else { break };
                let row = match app.store.serving_model().await {
                    Ok(Some(row)) => row,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the registry failed");
                        continue;
                    }
                };
                if failed
                    .as_ref()
                    .is_some_and(|(id, at)| *id == row.id && at.elapsed() < RETRY_FAILED)
                {
                    continue;
                }
                match app.switch(&root, &row).await {
                    Ok(true) => {
                        failed = None;
                        app.metrics
                            .model_switches
                            .with_label_values(&["switched"])
                            .inc();
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(model = %row.id, error = %format!("{e:#}"), "the promoted model did not load; the current one keeps serving");
                        app.metrics
                            .model_switches
                            .with_label_values(&["failed"])
                            .inc();
                        failed = Some((row.id, std::time::Instant::now()));
                    }
                }
            }
        });
    }
}

/// Wakes the registry watch on each `dvsp_models` notification; reconnects after a lost
/// connection (the poll covers what was missed meanwhile). Ends with the app.
async fn listen_models(
    app: std::sync::Weak<App>,
    pool: sqlx::PgPool,
    notified: Arc<tokio::sync::Notify>,
) {
    while app.strong_count() > 0 {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "registry listener: connect failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen("dvsp_models").await {
            tracing::warn!(error = %e, "registry listener: LISTEN failed");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        while listener.recv().await.is_ok() {
            if app.strong_count() == 0 {
                return;
            }
            notified.notify_one();
        }
        tracing::warn!("registry listener: connection lost");
    }
}
