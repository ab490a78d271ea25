//! Keeping a replica's index in step with the store. A gallery is loaded on its first use (or
//! at start) in pages, then caught up from the store's change feed: the changes after the
//! shard's version name templates, which are re-read and put in (served model) or taken out
//! (deleted, or of another model). A gap in the feed (pruned before this replica read it)
//! reloads the gallery. Catch-ups run after this replica's own enrolls and deletes (so its
//! next call sees them), on PostgreSQL's `dvsp_templates` notification from any replica, and
//! on a poll of every gallery's version (which catches a missed notification, and is the
//! only signal on SQLite for writes by another process such as `dvsp galleries renew`).
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::{Cell, Shard};
use crate::error::ApiError;
use crate::served::Lineup;
use crate::App;
use dvsp_custody::store::{SealedRow, Store};

/// Templates read per page of a load, and changes per read of the feed.
const PAGE: i64 = 10_000;
const CHANGES: i64 = 1_000;
/// How long changes are kept in the feed for replicas that are behind.
const KEEP_CHANGES: Duration = Duration::from_secs(3600);

impl App {
    /// The shard of `gallery` in `l`'s index, loaded if this replica has not loaded it yet.
    pub async fn shard(&self, l: &Lineup, gallery: &str) -> Result<Arc<Cell>, ApiError> {
        let cell = l.index.cell(gallery);
        if !cell.shard.read().expect("shard").loaded {
            self.catch_up(l, gallery, &cell).await?;
        }
        Ok(cell)
    }

    /// Brings `gallery`'s shard of the serving index up to the store's latest version.
    pub async fn refresh(&self, gallery: &str) -> Result<(), ApiError> {
        self.refresh_in(&self.lineup(), gallery).await
    }

    /// Brings `gallery`'s shard of `l`'s index up to the store's latest version.
    pub async fn refresh_in(&self, l: &Lineup, gallery: &str) -> Result<(), ApiError> {
        let cell = l.index.cell(gallery);
        self.catch_up(l, gallery, &cell).await
    }

    async fn catch_up(&self, l: &Lineup, gallery: &str, cell: &Arc<Cell>) -> Result<(), ApiError> {
        let _one = cell.sync.lock().await;
        // Whether the shard's version is recent (just loaded or caught up by this call), so
        // that no change after it can have been pruned yet.
        let mut recent = false;
        if !cell.shard.read().expect("shard").loaded {
            self.load(l, gallery, cell).await?;
            recent = true;
        }
        loop {
            let version = cell.shard.read().expect("shard").version;
            let mut changes = self.store.changes_after(gallery, version, CHANGES).await?;
            let mut pruned = false;
            if changes.is_empty() && !recent && self.store.gallery_version(gallery).await? > version
            {
                // Changes read after the version see every change up to it that is still
                // kept (a write may also have committed between the two reads above).
                changes = self.store.changes_after(gallery, version, CHANGES).await?;
                pruned = changes.is_empty();
            }
            if pruned || changes.first().is_some_and(|c| c.version != version + 1) {
                tracing::info!(gallery, version, "index behind the kept changes: reloading");
                self.load(l, gallery, cell).await?;
                recent = true;
                continue;
            }
            let Some(last) = changes.last().map(|c| c.version) else {
                break;
            };
            let ids: Vec<String> = changes
                .iter()
                .map(|c| c.template_id.clone())
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let rows = self.store.templates_by_id(gallery, &ids).await?;
            let opened = self.open_of(&l.serving.card.model_id, rows);
            // Off the runtime: the write lock waits for any search holding the shard.
            let c = cell.clone();
            tokio::task::spawn_blocking(move || {
                let mut shard = c.shard.write().expect("shard");
                for id in &ids {
                    shard.remove(id);
                }
                for (row, feature) in &opened {
                    shard.upsert(&row.id, &row.subject_id, row.epoch, feature);
                }
                shard.version = last;
            })
            .await
            .map_err(|e| ApiError::Internal(format!("applying index changes: {e}")))?;
            recent = true;
            self.publish_index_size(l);
        }
        Ok(())
    }

    /// Replaces `gallery`'s shard by a full load from the store, at the version read before
    /// the load began (the catch-up after it re-applies whatever changed meanwhile).
    async fn load(&self, l: &Lineup, gallery: &str, cell: &Arc<Cell>) -> Result<(), ApiError> {
        let model = &l.serving.card.model_id;
        let version = self.store.gallery_version(gallery).await?;
        let started = std::time::Instant::now();
        let mut shard = Shard {
            version,
            loaded: true,
            ..Shard::default()
        };
        let mut after = String::new();
        loop {
            let rows = self
                .store
                .gallery_templates(gallery, model, &after, PAGE)
                .await?;
            let Some(last) = rows.last() else {
                break;
            };
            after = last.id.clone();
            for (row, feature) in self.open_of(model, rows) {
                shard.upsert(&row.id, &row.subject_id, row.epoch, &feature);
            }
            if shard.count().is_multiple_of(10 * PAGE as usize) {
                tracing::info!(
                    gallery,
                    templates = shard.count(),
                    "loading the gallery index"
                );
            }
        }
        tracing::info!(
            gallery,
            templates = shard.count(),
            seconds = started.elapsed().as_secs_f64(),
            "gallery index loaded"
        );
        let c = cell.clone();
        tokio::task::spawn_blocking(move || *c.shard.write().expect("shard") = shard)
            .await
            .map_err(|e| ApiError::Internal(format!("swapping in the index: {e}")))?;
        self.publish_index_size(l);
        Ok(())
    }

    /// The rows of `model`, opened. A row that does not open (tampered, or copied onto
    /// another row) stays out of the index: it is counted and logged here (no feature bytes);
    /// identify skips it, and a verify of a subject none of whose rows is in the index reads
    /// the store and fails on it (500).
    fn open_of(&self, model: &str, rows: Vec<SealedRow>) -> Vec<(SealedRow, Vec<f32>)> {
        rows.into_iter()
            .filter(|r| r.model_id == model)
            .filter_map(|r| match self.open(&r) {
                Ok(f) => Some((r, f)),
                Err(e) => {
                    tracing::error!(template = %r.id, gallery = %r.gallery_id, error = %e, "a stored template does not open; left out of the index");
                    None
                }
            })
            .collect()
    }

    /// The index gauges, from `l`'s index when it is the one serving.
    fn publish_index_size(&self, l: &Lineup) {
        if !Arc::ptr_eq(&self.lineup().index, &l.index) {
            return;
        }
        let (n, bytes) = l.index.size();
        self.metrics.index_templates.set(n as i64);
        self.metrics.index_bytes.set(bytes as i64);
    }

    /// Loads every gallery, then keeps the index in step while the app lives (the tasks hold
    /// it weakly): a poll of the galleries' versions every `poll`, PostgreSQL notifications,
    /// and the pruning of old changes.
    pub async fn sync_index(self: Arc<Self>, poll: Duration) -> Result<(), ApiError> {
        for g in self.store.list_galleries().await? {
            self.refresh(&g.id).await?;
        }
        if let Store::Postgres(pool) = &self.store {
            // A connection of its own, outside the request pool (LISTEN holds it for good).
            let own = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect_lazy_with((*pool.connect_options()).clone());
            tokio::spawn(listen(Arc::downgrade(&self), own));
        }
        let app = Arc::downgrade(&self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
            let mut last_prune = std::time::Instant::now();
            loop {
                tick.tick().await;
                let Some(app) = app.upgrade() else { break };
                app.poll_versions().await;
                if last_prune.elapsed() > KEEP_CHANGES / 60 {
                    last_prune = std::time::Instant::now();
                    let before = dvsp_custody::store::now_ms() - KEEP_CHANGES.as_millis() as i64;
                    if let Err(e) = app.store.prune_changes(before).await {
                        tracing::warn!(error = %e, "pruning the template changes failed");
                    }
                }
            }
        });
        Ok(())
    }

    /// Catches up every gallery whose version is ahead of its shard.
    async fn poll_versions(&self) {
        let l = self.lineup();
        let versions = match self.store.gallery_versions().await {
            Ok(v) => v,
            Err(e) => return tracing::warn!(error = %e, "index poll failed"),
        };
        for (g, version) in versions {
            let cell = l.index.cell(&g);
            let behind = {
                let s = cell.shard.read().expect("shard");
                !s.loaded || s.version < version
            };
            if behind {
                if let Err(e) = self.catch_up(&l, &g, &cell).await {
                    tracing::warn!(error = %e, gallery = %g, "index catch-up failed");
                }
            }
        }
    }
}

/// Forgets the key each `dvsp_keys` notification names (revoked), then catches up each
/// gallery the `dvsp_templates` notifications name, once per gallery however many arrived;
/// reconnects after a lost connection (the poll and the key cache's expiry cover what was
/// missed meanwhile). Ends with the app.
async fn listen(app: std::sync::Weak<App>, pool: sqlx::PgPool) {
    while app.strong_count() > 0 {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "index listener: connect failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen_all(["dvsp_templates", "dvsp_keys"]).await {
            tracing::warn!(error = %e, "index listener: LISTEN failed");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            let first = match listener.recv().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "index listener: connection lost");
                    break;
                }
            };
            let Some(app) = app.upgrade() else { return };
            let mut galleries = HashSet::new();
            for n in std::iter::once(first).chain(std::iter::from_fn(|| listener.next_buffered())) {
                match n.channel() {
                    "dvsp_keys" => app.keys.evict(n.payload()),
                    _ => {
                        galleries.insert(n.payload().to_string());
                    }
                }
            }
            for g in galleries {
                if let Err(e) = app.refresh(&g).await {
                    tracing::warn!(error = %e, gallery = %g, "index catch-up failed");
                }
            }
        }
    }
}
