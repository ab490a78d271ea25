//! The in-memory gallery index across replicas: two real servers on one store (a SQLite
//! file, then PostgreSQL) see each other's enrolls and deletes, and a key revoked on one
//! stops on the other within a second. On PostgreSQL the poll is set to a minute, so only
//! the notification can deliver in time.
mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

/// Calls `f` every 50 ms until it holds: the time it took (panics after `limit`).
async fn within<F, Fut>(limit: Duration, what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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
