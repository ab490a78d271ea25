//! The model registry (migration 0005): registered models with their card, state and gate
//! report, and every admin action on them with who and when. At most one model serves (a
//! unique partial index): promoting one retires the one before it in the same transaction.
use sqlx::Row;

use super::{now_ms, text, unique_violation, Store, StoreError, StoreResult};

/// A registered model's life: registered as a candidate, promoted to serving (through the
/// gate, or forced), retired when another is promoted or by hand. A retired model may be
/// promoted again (a rollback), through the gate like any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelState {
    Candidate,
    Serving,
    Retired,
}

impl ModelState {
    pub fn name(self) -> &'static str {
        match self {
            ModelState::Candidate => "candidate",
            ModelState::Serving => "serving",
            ModelState::Retired => "retired",
        }
    }

    fn parse(s: &str) -> ModelState {
        match s {
            "serving" => ModelState::Serving,
            "retired" => ModelState::Retired,
            _ => ModelState::Candidate,
        }
    }
}

/// A row of `models`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelRow {
    /// The card's model id (the weights' hash; templates carry it).
    pub id: String,
    /// `model.json` as registered.
    pub card: serde_json::Value,
    /// SHA-256 of that card's bytes: a model directory whose card changed since is noticed.
    pub card_sha256: String,
    pub state: ModelState,
    pub registered_at: i64,
    pub registered_by: String,
    /// The last gate report on it (promoted or refused).
    pub gate: Option<serde_json::Value>,
}

/// One admin action on a model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelEvent {
    pub seq: i64,
    pub model_id: String,
    /// register, promote, refuse, retire.
    pub action: String,
    pub actor: String,
    pub at: i64,
    pub detail: Option<serde_json::Value>,
}

const COLUMNS: &str = "id, card, card_sha256, state, registered_at, registered_by, gate";

/// The detail of the `retire` event a promotion of `id` records on the model it replaces.
fn replaced_detail(id: &str) -> String {
    serde_json::json!({ "replaced_by": id }).to_string()
}

fn json(s: Option<String>) -> Option<serde_json::Value> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

/// A `models` row (its columns in `COLUMNS` order) of either store.
macro_rules! model_row {
    ($r:expr) => {{
        let r = $r;
        ModelRow {
            id: r.get(0),
            card: json(Some(r.get(1))).unwrap_or(serde_json::Value::Null),
            card_sha256: r.get(2),
            state: ModelState::parse(&r.get::<String, _>(3)),
            registered_at: r.get(4),
            registered_by: r.get(5),
            gate: json(r.get(6)),
        }
    }};
}

/// Inserts an event within transaction `tx` (the statement is the same on both stores).
macro_rules! event {
    ($tx:expr, $model:expr, $action:expr, $actor:expr, $detail:expr) => {
        sqlx::query(
            "INSERT INTO model_events (model_id, action, actor, at, detail) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind($model)
        .bind($action)
        .bind($actor)
        .bind(now_ms())
        .bind($detail)
        .execute(&mut *$tx)
        .await
    };
}

/// Why a conditional write of `id` changed nothing, within transaction `tx`: not registered
/// (`Missing`), or it serves (`Conflict`).
macro_rules! missing_or_conflict {
    ($tx:expr, $id:expr) => {{
        let known: Option<String> = sqlx::query_scalar("SELECT state FROM models WHERE id = $1")
            .bind($id)
            .fetch_optional(&mut *$tx)
            .await?;
        match known {
            None => StoreError::Missing,
            Some(_) => StoreError::Conflict,
        }
    }};
}

impl Store {
    /// Registers a model as a candidate (`Conflict` if its id is registered already).
    pub async fn register_model(
        &self,
        id: &str,
        card: &str,
        card_sha256: &str,
        actor: &str,
    ) -> StoreResult<()> {
        for (what, v) in [("model id", id), ("card", card), ("actor", actor)] {
            text(what, v)?;
        }
        let r = on_pool!(self, |p| async {
            let mut tx = p.begin().await?;
            sqlx::query(
                "INSERT INTO models (id, card, card_sha256, state, registered_at, registered_by) \
                 VALUES ($1, $2, $3, 'candidate', $4, $5)",
            )
            .bind(id)
            .bind(card)
            .bind(card_sha256)
            .bind(now_ms())
            .bind(actor)
            .execute(&mut *tx)
            .await?;
            event!(tx, id, "register", actor, None::<String>)?;
            tx.commit().await
        }
        .await);
        match r {
            Ok(()) => Ok(()),
            Err(e) if unique_violation(&e) => Err(StoreError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    /// Every registered model, oldest first.
    pub async fn models(&self) -> StoreResult<Vec<ModelRow>> {
        let sql = format!("SELECT {COLUMNS} FROM models ORDER BY registered_at, id");
        let v = on_pool!(self, |p| sqlx::query(&sql)
            .fetch_all(p)
            .await
            .map(|rows| rows.iter().map(|r| model_row!(r)).collect()))?;
        Ok(v)
    }

    pub async fn model(&self, id: &str) -> StoreResult<Option<ModelRow>> {
        text("model id", id)?;
        let sql = format!("SELECT {COLUMNS} FROM models WHERE id = $1");
        let v = on_pool!(self, |p| sqlx::query(&sql)
            .bind(id)
            .fetch_optional(p)
            .await
            .map(|r| r.as_ref().map(|r| model_row!(r))))?;
        Ok(v)
    }

    /// The model that serves, if one was promoted.
    pub async fn serving_model(&self) -> StoreResult<Option<ModelRow>> {
        let sql = format!("SELECT {COLUMNS} FROM models WHERE state = 'serving'");
        let v = on_pool!(self, |p| sqlx::query(&sql)
            .fetch_optional(p)
            .await
            .map(|r| r.as_ref().map(|r| model_row!(r))))?;
        Ok(v)
    }

    /// Makes `id` the serving model with its gate report, retiring `expected` (the model the
    /// gate compared it with; `None`: nothing served) in the same transaction. `Conflict` when
    /// what serves is no longer `expected` (another promotion or a retirement committed in
    /// between: the gate must run again) or `id` serves already; `Missing` when `id` is not
    /// registered. Every statement is a conditional write, so both stores serialise on it.
    pub async fn promote_model(
        &self,
        id: &str,
        expected: Option<&str>,
        actor: &str,
        gate: &serde_json::Value,
    ) -> StoreResult<()> {
        text("model id", id)?;
        text("actor", actor)?;
        if let Some(e) = expected {
            text("model id", e)?;
        }
        let gate = gate.to_string();
        let r = on_pool!(self, |p| {
            async {
            let mut tx = p.begin().await?;
            if let Some(old) = expected {
                let n = sqlx::query(
                    "UPDATE models SET state = 'retired' WHERE id = $1 AND state = 'serving'",
                )
                .bind(old)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n != 1 {
                    return Ok(Err(StoreError::Conflict));
                }
                event!(tx, old, "retire", actor, Some(replaced_detail(id)))?;
            }
            let n = sqlx::query(
                "UPDATE models SET state = 'serving', gate = $2 WHERE id = $1 AND state <> 'serving'",
            )
            .bind(id)
            .bind(&gate)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Ok(Err(missing_or_conflict!(tx, id)));
            }
            event!(tx, id, "promote", actor, Some(gate.clone()))?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Ok(()))
        }
        .await
        });
        match r {
            Ok(done) => done,
            // A second serving row (nothing served when the gate ran, and another promotion
            // committed first): the one-serving index.
            Err(e) if unique_violation(&e) => Err(StoreError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    /// Records a gate's refusal of `id`: the report on the row and as an event (`Missing`
    /// when not registered, `Conflict` when it serves: its report is the one that promoted it).
    pub async fn refuse_model(
        &self,
        id: &str,
        actor: &str,
        gate: &serde_json::Value,
    ) -> StoreResult<()> {
        let gate = gate.to_string();
        self.change_unserved(id, actor, "refuse", "gate = $2", Some(gate))
            .await
    }

    /// Retires a model that does not serve (`Conflict` for the serving one: promote another
    /// first; `Missing` when it is not registered).
    pub async fn retire_model(&self, id: &str, actor: &str) -> StoreResult<()> {
        self.change_unserved(id, actor, "retire", "state = 'retired'", None)
            .await
    }

    /// Sets `set` on model `id` only if it does not serve, and records `action` with `detail`
    /// (bound as `$2` in `set` when given), in one transaction: the serving model is never
    /// changed this way, whatever commits meanwhile.
    async fn change_unserved(
        &self,
        id: &str,
        actor: &str,
        action: &str,
        set: &str,
        detail: Option<String>,
    ) -> StoreResult<()> {
        text("model id", id)?;
        text("actor", actor)?;
        let sql = format!("UPDATE models SET {set} WHERE id = $1 AND state <> 'serving'");
        let r = on_pool!(self, |p| async {
            let mut tx = p.begin().await?;
            let mut q = sqlx::query(&sql).bind(id);
            if let Some(d) = &detail {
                q = q.bind(d);
            }
            let n = q.execute(&mut *tx).await?.rows_affected();
            if n == 0 {
                return Ok(Err(missing_or_conflict!(tx, id)));
            }
            event!(tx, id, action, actor, detail.clone())?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Ok(()))
        }
        .await);
        r?
    }

    /// The model whose retirement the promotion of `id` made (the one served before it).
    pub async fn replaced_by(&self, id: &str) -> StoreResult<Option<String>> {
        text("model id", id)?;
        let detail = replaced_detail(id);
        let v = on_pool!(self, |p| sqlx::query_scalar(
            "SELECT model_id FROM model_events WHERE action = 'retire' AND detail = $1 \
             ORDER BY seq DESC LIMIT 1"
        )
        .bind(&detail)
        .fetch_optional(p)
        .await)?;
        Ok(v)
    }

    /// Records an admin action on model `id` that changes no row of `models` (`reembed`).
    pub async fn record_model_event(
        &self,
        id: &str,
        action: &str,
        actor: &str,
        detail: &serde_json::Value,
    ) -> StoreResult<()> {
        text("model id", id)?;
        text("actor", actor)?;
        let detail = detail.to_string();
        on_pool!(self, |p| async {
            let mut tx = p.begin().await?;
            event!(tx, id, action, actor, Some(detail.clone()))?;
            tx.commit().await
        }
        .await)
        .map_err(|e| match e {
            e if super::foreign_key_violation(&e) => StoreError::Missing,
            e => e.into(),
        })
    }

    /// The admin actions on `id`, in order.
    pub async fn model_events(&self, id: &str) -> StoreResult<Vec<ModelEvent>> {
        text("model id", id)?;
        let v = on_pool!(self, |p| sqlx::query(
            "SELECT seq, model_id, action, actor, at, detail FROM model_events \
             WHERE model_id = $1 ORDER BY seq"
        )
        .bind(id)
        .fetch_all(p)
        .await
        .map(|rows| rows
            .iter()
            .map(|r| ModelEvent {
                seq: r.get(0),
                model_id: r.get(1),
                action: r.get(2),
                actor: r.get(3),
                at: r.get(4),
                detail: json(r.get(5)),
            })
            .collect()))?;
        Ok(v)
    }
}
