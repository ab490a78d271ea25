//! The in-memory gallery index across replicas: two real servers on one store (a SQLite
//! file, then PostgreSQL) see each other's enrolls and deletes, and a key revoked on one
//! stops on the other within a second. On PostgreSQL the poll is set to a minute, so only
//! the notification can deliver in time.
mod common;

use std::time::Duration;

use common::*;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

async fn enroll(c: &Client, s: &Server, key: &str, id: &str, png: &[u8]) {
    let r = send(
        c.post(s.url("/v1/subjects"))
            .bearer_auth(key)
            .json(&json!({ "id": id })),
    )
    .await;
    assert_eq!(r.0, StatusCode::CREATED, "{:?}", r.1);
    let r = send(png_body(
        c,
        &s.url(&format!("/v1/subjects/{id}/templates")),
        key,
        png,
    ))
    .await;
    assert_eq!(r.0, StatusCode::CREATED, "{:?}", r.1);
}

async fn identify(c: &Client, s: &Server, key: &str, png: &[u8]) -> (StatusCode, Value) {
    send(png_body(c, &s.url("/v1/identify?top_k=5"), key, png)).await
}

fn candidates(r: &Value) -> Vec<String> {
    r["candidates"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["subject_id"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn replicas_see_each_others_writes(db: &str, poll_ms: &str) {
    let k = keys(db).await;
    let a = Server::start(db, &["--index-poll-ms", poll_ms]).await;
    let b = Server::start(db, &["--index-poll-ms", poll_ms]).await;
    let c = Client::new();
    let (three, eight, five) = (digits(3, 2), digits(8, 1), digits(5, 2));
    enroll(&c, &a, &k.enroll, "alice", &three[0]).await;
    enroll(&c, &a, &k.enroll, "bob", &eight[0]).await;
    // A sees its own enrolls at once.
    let r = identify(&c, &a, &k.verify, &three[1]).await;
    assert_eq!(r.0, StatusCode::OK, "{:?}", r.1);
    assert_eq!(r.1["gallery_templates"], 2, "{:?}", r.1);
    assert_eq!(candidates(&r.1)[0], "alice");
    let alice_distance = r.1["candidates"][0]["distance"].as_f64().unwrap();

    // B, started before them, catches up; its distances are A's.
    let limit = Duration::from_secs(2);
    within(limit, "b sees a's enrolls", || async {
        let r = identify(&c, &b, &k.verify, &three[1]).await;
        r.1["gallery_templates"] == 2
            && candidates(&r.1).first().map(String::as_str) == Some("alice")
            && r.1["candidates"][0]["distance"].as_f64() == Some(alice_distance)
    })
    .await;
    let r = send(png_body(
        &c,
        &b.url("/v1/subjects/alice/verify"),
        &k.verify,
        &three[1],
    ))
    .await;
    assert_eq!(r.0, StatusCode::OK, "{:?}", r.1);
    assert_eq!(r.1["distance"].as_f64(), Some(alice_distance));

    // B enrolls carol; A sees her.
    enroll(&c, &b, &k.enroll, "carol", &five[0]).await;
    within(limit, "a sees b's enroll", || async {
        let r = identify(&c, &a, &k.verify, &five[1]).await;
        r.1["gallery_templates"] == 3
            && candidates(&r.1).first().map(String::as_str) == Some("carol")
    })
    .await;

    // B deletes alice; A no longer finds her, and verify against her is 404.
    let r = send(c.delete(b.url("/v1/subjects/alice")).bearer_auth(&k.admin)).await;
    assert_eq!(r.0, StatusCode::NO_CONTENT, "{:?}", r.1);
    within(limit, "a sees b's delete", || async {
        let r = identify(&c, &a, &k.verify, &three[1]).await;
        r.1["gallery_templates"] == 2 && !candidates(&r.1).contains(&"alice".to_string())
    })
    .await;
    let r = send(png_body(
        &c,
        &a.url("/v1/subjects/alice/verify"),
        &k.verify,
        &three[1],
    ))
    .await;
    assert_error(&r, 404);

    // A key revoked through A stops on B within a second (B used it just before, so it is
    // in B's cache).
    let gk = send(
        c.post(a.url("/v1/galleries/default/keys"))
            .bearer_auth(&k.admin)
            .json(&json!({ "roles": ["verify", "identify"] })),
    )
    .await;
    assert_eq!(gk.0, StatusCode::CREATED, "{:?}", gk.1);
    let (key, key_id) = (
        gk.1["key"].as_str().unwrap().to_string(),
        gk.1["id"].as_str().unwrap().to_string(),
    );
    assert_eq!(identify(&c, &b, &key, &five[1]).await.0, StatusCode::OK);
    let r = send(
        c.delete(a.url(&format!("/v1/keys/{key_id}")))
            .bearer_auth(&k.admin),
    )
    .await;
    assert_eq!(r.0, StatusCode::NO_CONTENT, "{:?}", r.1);
    let took = within(
        Duration::from_secs(1),
        "the revoked key stops on b",
        || async { identify(&c, &b, &key, &five[1]).await.0 == StatusCode::UNAUTHORIZED },
    )
    .await;
    eprintln!("revocation reached the other replica in {took:?}");
    // On A it stops at once.
    assert_error(&identify(&c, &a, &key, &five[1]).await, 401);

    // Both report the index on /metrics.
    for s in [&a, &b] {
        let m = c
            .get(&s.metrics)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(m.contains("dvsp_index_templates 2"), "{m}");
        assert!(m.contains("dvsp_index_search_seconds_count"), "{m}");
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_see_each_others_writes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    replicas_see_each_others_writes(&db, "100").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_see_each_others_writes_on_postgres_by_notification() {
    let pg = PgDb::new().await;
    replicas_see_each_others_writes(&pg.url, "60000").await;
    pg.drop_db().await;
}

/// A replica whose missed changes were all pruned (here: in the very transaction that made
/// them) reloads the gallery on its next poll instead of staying behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_reloads_when_the_changes_it_missed_were_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let k = keys(&db).await;
    let a = Server::start(&db, &["--index-poll-ms", "100"]).await;
    let c = Client::new();
    let three = digits(3, 2);
    enroll(&c, &a, &k.enroll, "alice", &three[0]).await;
    let count = |r: (StatusCode, Value)| r.1["gallery_templates"].as_u64();
    assert_eq!(count(identify(&c, &a, &k.verify, &three[1]).await), Some(1));
    // Another writer adds a template and the feed loses its record before A reads it.
    let store = dvsp_custody::store::Store::connect(&db).await.unwrap();
    store.create_subject("default", "zed", None).await.unwrap();
    let row = dvsp_custody::store::SealedRow::new(
        &keyring(),
        "zed-t".into(),
        "default".into(),
        "zed".into(),
        a.state.lineup().serving.card.model_id.clone(),
        0,
        &[0.5; 32],
    );
    let dvsp_custody::store::Store::Sqlite(pool) = &store else {
        unreachable!()
    };
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO templates (id, gallery_id, subject_id, model_id, key_id, data_key, \
         feature, created_at, epoch) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0)",
    )
    .bind(&row.id)
    .bind(&row.gallery_id)
    .bind(&row.subject_id)
    .bind(&row.model_id)
    .bind(&row.sealed.key_id)
    .bind(&row.sealed.data_key)
    .bind(&row.sealed.ciphertext)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("DELETE FROM template_changes")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    within(Duration::from_secs(2), "a reloads the gallery", || async {
        count(identify(&c, &a, &k.verify, &three[1]).await) == Some(2)
    })
    .await;
    a.stop().await;
}
