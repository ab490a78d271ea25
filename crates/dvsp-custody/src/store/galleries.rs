//! Galleries: the tenants. Every subject and every non-global key belongs to one.
use serde::Serialize;
use sqlx::Row;

use super::{now_ms, text, unique_violation, Store, StoreError, StoreResult};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Gallery {
    pub id: String,
    pub name: Option<String>,
    pub created_at: i64,
}

impl Store {
    pub async fn create_gallery(&self, id: &str, name: Option<&str>) -> StoreResult<Gallery> {
        text("gallery id", id)?;
        name.map(|n| text("gallery name", n)).transpose()?;
        let g = Gallery {
            id: id.to_string(),
            name: name.map(str::to_string),
            created_at: now_ms(),
        };
        let r = on_pool!(self, |p| sqlx::query(
            "INSERT INTO galleries (id, name, created_at) VALUES ($1, $2, $3)"
        )
        .bind(&g.id)
        .bind(&g.name)
        .bind(g.created_at)
        .execute(p)
        .await
        .map(|_| ()));
        match r {
            Ok(()) => Ok(g),
            Err(e) if unique_violation(&e) => Err(StoreError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get_gallery(&self, id: &str) -> StoreResult<Option<Gallery>> {
        text("gallery id", id)?;
        let g = on_pool!(self, |p| sqlx::query(
            "SELECT id, name, created_at FROM galleries WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(p)
        .await
        .map(|r| r.map(|r| Gallery {
            id: r.get(0),
            name: r.get(1),
            created_at: r.get(2)
        })))?;
        Ok(g)
    }

    pub async fn list_galleries(&self) -> StoreResult<Vec<Gallery>> {
        let g = on_pool!(self, |p| sqlx::query(
            "SELECT id, name, created_at FROM galleries ORDER BY id"
        )
        .fetch_all(p)
        .await
        .map(|rows| rows
            .iter()
            .map(|r| Gallery {
                id: r.get(0),
                name: r.get(1),
                created_at: r.get(2)
            })
            .collect()))?;
        Ok(g)
    }
}
