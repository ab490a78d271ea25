//! Custody of the biometric data, end to end on a real server, a real SQLite file and the real
//! PostgreSQL: galleries that scope every key (another gallery's names are 404), roles, the
//! score policy, attempt limits per (key, subject), the audit trail, templates sealed at rest
//! (no plaintext feature in the SQLite file or a `pg_dump`; a row copied onto another subject
//! does not open), key rotation while serving, and the migration of a store from before all
//! this without losing a template.
mod common;

use common::*;
use dvsp_custody::store::Store;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

/// `req` with an API key and a request id of our choosing.
fn as_key(req: reqwest::RequestBuilder, key: &str, request_id: &str) -> reqwest::RequestBuilder {
    req.bearer_auth(key).header("x-request-id", request_id)
}

fn image(c: &Client, url: String, key: &str, png: &[u8]) -> reqwest::RequestBuilder {
    png_body(c, &url, key, png)
}

/// The key in a `POST /v1/galleries/{g}/keys` reply.
async fn new_key(s: &Server, c: &Client, admin: &str, gallery: &str, body: Value) -> String {
    let r = send(
        c.post(s.url(&format!("/v1/galleries/{gallery}/keys")))
            .bearer_auth(admin)
            .json(&body),
    )
    .await;
    assert_eq!(r.0, StatusCode::CREATED, "{:?}", r.1);
    r.1["key"].as_str().unwrap().to_string()
}

async fn galleries_roles_scores_limits_and_the_trail(db: &str) {
    let k = keys(db).await;
    let c = Client::new();
    let s = Server::start(db, &["--max-attempts", "3", "--max-subject-attempts", "6"]).await;
    let threes = digits(3, 4);
    let sevens = digits(7, 3);

    // Galleries are a global admin's; a gallery's key cannot make one.
    let made = |key: &str| {
        c.post(s.url("/v1/galleries"))
            .bearer_auth(key)
            .json(&json!({"id": "acme", "name": "Acme"}))
    };
    assert_error(&send(made(&k.enroll)).await, 403);
    assert_eq!(send(made(&k.admin)).await.0, StatusCode::CREATED);
    assert_error(&send(made(&k.admin)).await, 409);
    let listed = send(c.get(s.url("/v1/galleries")).bearer_auth(&k.admin)).await;
    let ids: Vec<&str> = listed.1["galleries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme", "default"]);

    // Acme's keys, made by the global admin and then by acme's own admin.
    let acme_admin = new_key(
        &s,
        &c,
        &k.admin,
        "acme",
        json!({"roles": ["admin"], "scores": "full"}),
    )
    .await;
    let acme_enroll = new_key(
        &s,
        &c,
        &acme_admin,
        "acme",
        json!({"roles": ["enroll", "read"]}),
    )
    .await;
    let acme_verify = new_key(&s, &c, &acme_admin, "acme", json!({"roles": ["verify"]})).await;
    let acme_verify2 = new_key(&s, &c, &acme_admin, "acme", json!({"roles": ["verify"]})).await;
    let acme_identify = new_key(
        &s,
        &c,
        &acme_admin,
        "acme",
        json!({"roles": ["identify"], "scores": "rounded"}),
    )
    .await;
    let acme_read = new_key(&s, &c, &acme_admin, "acme", json!({"roles": ["read"]})).await;
    // Acme's admin cannot make keys of another gallery, nor learn that it exists.
    let r = send(
        c.post(s.url("/v1/galleries/default/keys"))
            .bearer_auth(&acme_admin)
            .json(&json!({"roles": ["admin"]})),
    )
    .await;
    assert_error(&r, 404);
    assert_error(
        &send(
            c.post(s.url("/v1/galleries/acme/keys"))
                .bearer_auth(&acme_admin)
                .json(&json!({"roles": []})),
        )
        .await,
        422,
    );

    // The same subject id in both galleries; `bob` only in default.
    for (key, id) in [
        (&k.enroll, "alice"),
        (&k.enroll, "bob"),
        (&acme_enroll, "alice"),
    ] {
        let r = send(
            c.post(s.url("/v1/subjects"))
                .bearer_auth(key)
                .json(&json!({"id": id, "name": "a name is personal data"})),
        )
        .await;
        assert_eq!(r.0, StatusCode::CREATED, "{:?}", r.1);
    }
    let enroll = |key: &str, id: &str, png: &[u8]| {
        image(&c, s.url(&format!("/v1/subjects/{id}/templates")), key, png)
    };
    let r = send(as_key(
        enroll(&k.enroll, "alice", &threes[0]),
        &k.enroll,
        "req-enroll-1",
    ))
    .await;
    assert_eq!(r.0, StatusCode::CREATED, "{:?}", r.1);
    let bob_template = {
        let r = send(enroll(&k.enroll, "bob", &threes[1])).await;
        assert_eq!(r.0, StatusCode::CREATED, "{:?}", r.1);
        r.1["template_id"].as_str().unwrap().to_string()
    };
    for png in &sevens[..2] {
        assert_eq!(
            send(enroll(&acme_enroll, "alice", png)).await.0,
            StatusCode::CREATED
        );
    }

    // Another gallery's subject is 404 on every route, never 403.
    let bob = |p: &str| s.url(&format!("/v1/subjects/bob{p}"));
    for (key, r) in [
        (&acme_read, c.get(bob(""))),
        (&acme_admin, c.delete(bob(""))),
        (
            &acme_admin,
            c.delete(bob(&format!("/templates/{bob_template}"))),
        ),
    ] {
        let r = send(as_key(r, key, "req-cross")).await;
        assert_error(&r, 404);
        assert_eq!(r.1["request_id"], "req-cross", "{:?}", r.1);
    }
    // A request id no log should carry (too long) is replaced by a fresh one, the same in
    // the response header and the error body.
    let res = c
        .get(bob(""))
        .bearer_auth(&acme_read)
        .header("x-request-id", "x".repeat(500))
        .send()
        .await
        .unwrap();
    let header = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["request_id"], header.as_str());
    assert!(header.len() <= 64, "{header}");
    for (request, status) in [
        (enroll(&acme_enroll, "bob", &threes[2]), 404),
        (image(&c, bob("/verify"), &acme_verify, &threes[2]), 404),
    ] {
        assert_error(&send(request).await, status);
    }
    // The subject is still there for its own gallery.
    assert_eq!(
        send(c.get(bob("")).bearer_auth(&k.verify)).await.0,
        StatusCode::OK
    );
    // Listing and reading see only the key's gallery.
    let list = send(c.get(s.url("/v1/subjects")).bearer_auth(&acme_read)).await;
    let listed: Vec<&str> = list.1["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["alice"]);
    let alice = send(c.get(s.url("/v1/subjects/alice")).bearer_auth(&acme_read)).await;
    assert_eq!(alice.1["templates"].as_array().unwrap().len(), 2);
    // A gallery key naming another gallery gets 404; a global admin may choose one.
    let r = send(
        c.get(s.url("/v1/subjects/alice"))
            .bearer_auth(&acme_read)
            .header("x-gallery", "default"),
    )
    .await;
    assert_error(&r, 404);
    let r = send(
        c.get(s.url("/v1/subjects/alice"))
            .bearer_auth(&k.admin)
            .header("x-gallery", "acme"),
    )
    .await;
    assert_eq!(r.1["templates"].as_array().unwrap().len(), 2, "{:?}", r.1);
    let r = send(
        c.get(s.url("/v1/subjects"))
            .bearer_auth(&k.admin)
            .header("x-gallery", "nosuch"),
    )
    .await;
    assert_error(&r, 404);

    let verify_alice = |key: &str| image(&c, s.url("/v1/subjects/alice/verify"), key, &sevens[2]);
    // Roles: each key does only what its roles allow.
    for (request, status) in [
        (c.get(s.url("/v1/subjects")).bearer_auth(&acme_verify), 403),
        (
            image(&c, s.url("/v1/identify"), &acme_verify, &sevens[2]),
            403,
        ),
        (verify_alice(&acme_identify), 403),
        (verify_alice(&acme_read), 403),
        (enroll(&acme_read, "alice", &sevens[2]), 403),
    ] {
        assert_error(&send(request).await, status);
    }

    // Identify reaches only the key's gallery; scores rounded to 2 decimals.
    let r = send(image(
        &c,
        s.url("/v1/identify?top_k=5"),
        &acme_identify,
        &sevens[2],
    ))
    .await;
    assert_eq!(r.0, StatusCode::OK, "{:?}", r.1);
    assert_eq!(r.1["gallery_templates"], 2, "{:?}", r.1);
    let cands = r.1["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 1);
    assert_eq!(cands[0]["subject_id"], "alice");
    let sim = cands[0]["similarity"].as_f64().unwrap();
    assert_eq!((sim * 100.0).round() / 100.0, sim, "not rounded: {sim}");

    // Decision only (the default for new keys): no similarity, no distance.
    let r = send(as_key(
        verify_alice(&acme_verify),
        &acme_verify,
        "req-verify-1",
    ))
    .await;
    assert_eq!(r.0, StatusCode::OK, "{:?}", r.1);
    assert_eq!(r.1["match"], true, "{:?}", r.1);
    assert!(
        r.1.get("similarity").is_none() && r.1.get("distance").is_none(),
        "{:?}",
        r.1
    );
    // Full scores for a full key (the default gallery's verifier).
    let r = send(image(
        &c,
        s.url("/v1/subjects/alice/verify"),
        &k.verify,
        &threes[2],
    ))
    .await;
    assert!(r.1["similarity"].as_f64().is_some(), "{:?}", r.1);

    // Attempts per (key, subject): acme_verify has spent 1 of 3 on alice.
    for _ in 0..2 {
        let r = send(verify_alice(&acme_verify)).await;
        assert_eq!(r.0, StatusCode::OK, "{:?}", r.1);
    }
    let r = send(verify_alice(&acme_verify)).await;
    assert_error(&r, 429);
    assert!(
        r.1["message"].as_str().unwrap().contains("by this key"),
        "{:?}",
        r.1
    );
    // Another key is not locked out ...
    let r = send(verify_alice(&acme_verify2)).await;
    assert_eq!(r.0, StatusCode::OK, "{:?}", r.1);
    // ... until the subject's ceiling across all keys (6: the identify above, 4 by
    // acme_verify, the one just now) is passed.
    let r = send(verify_alice(&acme_verify2)).await;
    assert_error(&r, 429);
    assert!(
        r.1["message"].as_str().unwrap().contains("by all keys"),
        "{:?}",
        r.1
    );
    // Identify counts against the candidates it reveals: alice is spent, so withheld.
    let r = send(image(&c, s.url("/v1/identify"), &acme_identify, &sevens[2])).await;
    assert_eq!(r.0, StatusCode::OK, "{:?}", r.1);
    assert_eq!(r.1["withheld"], 1, "{:?}", r.1);
    assert!(r.1["candidates"].as_array().unwrap().is_empty());
    assert_eq!(r.1["match"], false);
    // The default gallery's alice is untouched by acme's attempts.
    let r = send(image(
        &c,
        s.url("/v1/subjects/alice/verify"),
        &k.verify,
        &threes[3],
    ))
    .await;
    assert_eq!(r.0, StatusCode::OK, "{:?}", r.1);

    // gRPC: the same scope and policy.
    {
        use dvsp_server::grpc::proto;
        let mut g = proto::verification_client::VerificationClient::connect(s.grpc.clone())
            .await
            .unwrap();
        let req = |key: &str, id: &str| {
            let mut r = tonic::Request::new(proto::VerifyRequest {
                subject_id: id.into(),
                image: threes[2].clone().into(),
            });
            r.metadata_mut().insert("x-api-key", key.parse().unwrap());
            r.metadata_mut()
                .insert("x-request-id", "req-grpc".parse().unwrap());
            r
        };
        let e = g.verify(req(&acme_verify2, "bob")).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
        assert_eq!(e.metadata().get("x-request-id").unwrap(), "req-grpc");
        let decision_key = new_key(&s, &c, &k.admin, "default", json!({"roles": ["verify"]})).await;
        let d = g
            .verify(req(&decision_key, "bob"))
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap();
        assert!(d.similarity.is_none() && d.distance.is_none(), "{d:?}");
        let mut list = tonic::Request::new(proto::ListSubjectsRequest {
            limit: 0,
            after: String::new(),
            prefix: String::new(),
        });
        list.metadata_mut()
            .insert("x-api-key", acme_read.parse().unwrap());
        let names: Vec<String> = g
            .list_subjects(list)
            .await
            .unwrap()
            .into_inner()
            .subjects
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(names, ["alice"]);
        // Every other method that names a subject: another gallery's bob is NOT_FOUND, for
        // a key with every role there (acme's admin).
        fn keyed<T>(msg: T, key: &str) -> tonic::Request<T> {
            let mut r = tonic::Request::new(msg);
            r.metadata_mut().insert("x-api-key", key.parse().unwrap());
            r
        }
        let bob = || "bob".to_string();
        let codes = [
            g.get_subject(keyed(proto::GetSubjectRequest { id: bob() }, &acme_admin))
                .await
                .map(|_| ()),
            g.delete_subject(keyed(
                proto::DeleteSubjectRequest { id: bob() },
                &acme_admin,
            ))
            .await
            .map(|_| ()),
            g.enroll(keyed(
                proto::EnrollRequest {
                    subject_id: bob(),
                    image: threes[2].clone().into(),
                },
                &acme_admin,
            ))
            .await
            .map(|_| ()),
            g.delete_template(keyed(
                proto::DeleteTemplateRequest {
                    subject_id: bob(),
                    template_id: bob_template.clone(),
                },
                &acme_admin,
            ))
            .await
            .map(|_| ()),
            g.verify(keyed(
                proto::VerifyRequest {
                    subject_id: bob(),
                    image: threes[2].clone().into(),
                },
                &acme_admin,
            ))
            .await
            .map(|_| ()),
        ];
        for c in codes {
            assert_eq!(c.unwrap_err().code(), tonic::Code::NotFound);
        }
        // Identify over gRPC reaches acme's gallery only (its alice is spent: withheld).
        let id = g
            .identify(keyed(
                proto::IdentifyRequest {
                    image: threes[2].clone().into(),
                    top_k: 100,
                },
                &acme_admin,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((id.gallery_templates, id.withheld), (2, 1), "{id:?}");
        assert!(id.candidates.iter().all(|c| c.subject_id == "alice"));
    }

    // Revocation mid-session: acme's admin revokes acme's key (not another gallery's).
    let id_of = |key: &str| key.split('_').nth(1).unwrap().to_string();
    assert_error(
        &send(
            c.delete(s.url(&format!("/v1/keys/{}", id_of(&k.verify))))
                .bearer_auth(&acme_admin),
        )
        .await,
        404,
    );
    assert_eq!(
        send(
            c.delete(s.url(&format!("/v1/keys/{}", id_of(&acme_read))))
                .bearer_auth(&acme_admin)
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_error(
        &send(c.get(s.url("/v1/subjects")).bearer_auth(&acme_read)).await,
        401,
    );
    assert_eq!(
        send(c.get(bob("")).bearer_auth(&k.verify)).await.0,
        StatusCode::OK
    );

    // The audit trail: who, what, whom, outcome, request id, time; refusals included.
    let store = Store::connect(db).await.unwrap();
    let trail = store.audit_since(0, 0, 10_000).await.unwrap();
    let find = |request: &str, action: &str| {
        trail
            .iter()
            .find(|e| e.request_id.as_deref() == Some(request) && e.action == action)
            .unwrap_or_else(|| panic!("no {action} entry of {request}: {trail:#?}"))
    };
    let e = find("req-enroll-1", "enroll");
    assert_eq!(
        (
            e.key_id.as_deref(),
            e.gallery_id.as_deref(),
            e.subject_id.as_deref(),
            e.outcome.as_str()
        ),
        (
            Some(id_of(&k.enroll).as_str()),
            Some("default"),
            Some("alice"),
            "ok"
        )
    );
    let e = find("req-verify-1", "verify");
    assert_eq!(
        (e.gallery_id.as_deref(), e.outcome.as_str()),
        (Some("acme"), "match")
    );
    assert!(e.at > 0);
    let e = find("req-cross", "get_subject");
    assert_eq!(
        (e.gallery_id.as_deref(), e.outcome.as_str()),
        (Some("acme"), "not_found")
    );
    assert_eq!(find("req-grpc", "verify").outcome, "not_found");
    for action in [
        "create_gallery",
        "create_key",
        "revoke_key",
        "identify",
        "delete_subject",
    ] {
        assert!(
            trail.iter().any(|e| e.action == action),
            "no {action} entry"
        );
    }
    assert!(trail.iter().any(|e| e.outcome == "too_many_requests"));
    // Append-only, on both stores.
    let changed = match &store {
        Store::Sqlite(p) => sqlx::query("UPDATE audit_log SET outcome = 'ok'")
            .execute(p)
            .await
            .err(),
        Store::Postgres(p) => sqlx::query("UPDATE audit_log SET outcome = 'ok'")
            .execute(p)
            .await
            .err(),
    };
    assert!(changed.unwrap().to_string().contains("append-only"));
    let deleted = match &store {
        Store::Sqlite(p) => sqlx::query("DELETE FROM audit_log").execute(p).await.err(),
        Store::Postgres(p) => sqlx::query("DELETE FROM audit_log").execute(p).await.err(),
    };
    assert!(deleted.unwrap().to_string().contains("append-only"));
    assert_eq!(
        store.audit_since(0, 0, 10_000).await.unwrap().len(),
        trail.len()
    );
    s.stop().await;
}

on_both_stores!(galleries_roles_scores_limits_and_the_trail);

/// Whether `needle` occurs in `hay`.
fn holds(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The opened features of every template in the store (through the test keyring).
async fn features(store: &Store, gallery: &str, subject: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let k = keyring();
    store
        .subject_templates(gallery, subject)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let f = k.open(&r.row(), &r.sealed).unwrap();
            let bytes: Vec<u8> = f.iter().flat_map(|v| v.to_le_bytes()).collect();
            (bytes, r.sealed.ciphertext.clone())
        })
        .collect()
}

/// Enrolls two subjects of one template each and returns the server.
async fn two_enrolled(db: &str) -> (Server, Keys) {
    let k = keys(db).await;
    let s = Server::start(db, &[]).await;
    let c = Client::new();
    for (id, png) in [
        ("alice", digits(3, 1).remove(0)),
        ("bob", digits(8, 1).remove(0)),
    ] {
        send(
            c.post(s.url("/v1/subjects"))
                .bearer_auth(&k.enroll)
                .json(&json!({"id": id})),
        )
        .await;
        let r = send(png_body(
            &c,
            &s.url(&format!("/v1/subjects/{id}/templates")),
            &k.enroll,
            &png,
        ))
        .await;
        assert_eq!(r.0, StatusCode::CREATED, "{:?}", r.1);
    }
    (s, k)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_feature_in_the_sqlite_file_and_deleted_ones_are_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let db = format!("sqlite://{}", path.display());
    let (s, k) = two_enrolled(&db).await;
    let store = Store::connect(&db).await.unwrap();
    let alice = features(&store, "default", "alice").await;
    let bob = features(&store, "default", "bob").await;
    let Store::Sqlite(pool) = &store else {
        unreachable!()
    };
    let checkpoint = || async {
        let busy: i64 = sqlx::query_scalar("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(busy, 0, "the checkpoint could not complete");
    };
    checkpoint().await;
    let file = [
        std::fs::read(&path).unwrap(),
        std::fs::read(dir.path().join("s.db-wal")).unwrap_or_default(),
    ]
    .concat();
    for (plain, sealed) in alice.iter().chain(&bob) {
        assert_eq!(plain.len() % 4, 0);
        // The search finds what is there (the ciphertext) ...
        assert!(holds(&file, sealed));
        // ... and no 16-byte run of the feature (4 floats) anywhere in the file.
        for w in plain.chunks(16) {
            assert!(
                !holds(&file, w),
                "plaintext feature bytes in the SQLite file"
            );
        }
    }
    // Deleted: the ciphertext itself is gone from the file (secure_delete), not just unlinked.
    let c = Client::new();
    let r = send(c.delete(s.url("/v1/subjects/alice")).bearer_auth(&k.admin)).await;
    assert_eq!(r.0, StatusCode::NO_CONTENT, "{:?}", r.1);
    checkpoint().await;
    let file = std::fs::read(&path).unwrap();
    assert!(
        !holds(&file, &alice[0].1),
        "a deleted template's bytes are still in the file"
    );
    assert!(holds(&file, &bob[0].1));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_feature_in_a_pg_dump() {
    let pg = PgDb::new().await;
    let (s, _) = two_enrolled(&pg.url).await;
    let store = Store::connect(&pg.url).await.unwrap();
    let mut all = features(&store, "default", "alice").await;
    all.extend(features(&store, "default", "bob").await);
    let dump = std::process::Command::new("pg_dump")
        .args(["--data-only", "--inserts", "--dbname", &pg.url])
        .output()
        .expect("pg_dump");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    // pg_dump writes bytea as hex text: look for the hex of every 16-byte run.
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let text = String::from_utf8(dump.stdout).unwrap();
    for (plain, sealed) in &all {
        assert!(
            text.contains(&hex(sealed)),
            "the search finds the ciphertext"
        );
        for w in plain.chunks(16) {
            assert!(
                !text.contains(&hex(w)),
                "plaintext feature bytes in pg_dump"
            );
        }
    }
    s.stop().await;
    pg.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_row_copied_onto_another_subject_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let (s, k) = two_enrolled(&db).await;
    let c = Client::new();
    let three = digits(3, 2).remove(1);
    let verify = |id: &str| {
        png_body(
            &c,
            &s.url(&format!("/v1/subjects/{id}/verify")),
            &k.verify,
            &three,
        )
    };
    assert_eq!(send(verify("bob")).await.0, StatusCode::OK);
    // An attacker with write access to the store copies alice's sealed template onto bob.
    let store = Store::connect(&db).await.unwrap();
    let Store::Sqlite(pool) = &store else {
        unreachable!()
    };
    sqlx::query(
        "UPDATE templates SET key_id = a.key_id, data_key = a.data_key, feature = a.feature \
         FROM (SELECT key_id, data_key, feature FROM templates WHERE subject_id = 'alice') AS a \
         WHERE subject_id = 'bob'",
    )
    .execute(pool)
    .await
    .unwrap();
    // The replica's index sees the change within its poll (1 s) and leaves the row out;
    // verify then reads it from the store and fails on it.
    within(
        std::time::Duration::from_secs(3),
        "the copied row is refused",
        || async { send(verify("bob")).await.0 != StatusCode::OK },
    )
    .await;
    let r = send(verify("bob")).await;
    assert_error(&r, 500);
    assert!(
        !r.1["message"].as_str().unwrap().contains("bob"),
        "internals not sent: {:?}",
        r.1
    );
    let m = c
        .get(&s.metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Counted where it was found: the index's catch-up, then the verify.
    let failures: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("dvsp_template_integrity_failures_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(failures >= 1.0, "{m}");
    // Alice's own row still opens.
    assert_eq!(send(verify("alice")).await.0, StatusCode::OK);
    s.stop().await;
}

#[test]
fn seals_bind_their_row_and_rotation_keeps_the_feature() {
    use dvsp_custody::seal::{Keyring, Row};
    let one = Keyring::new_key_line("one").unwrap();
    let two = Keyring::new_key_line("two").unwrap();
    let old = Keyring::parse(&one).unwrap();
    let both = Keyring::parse(&format!("# comment\n{one}\n\n{two}\n")).unwrap();
    assert_eq!(both.active(), "two");
    let row = Row {
        template_id: "t1",
        gallery_id: "g",
        subject_id: "alice",
        model_id: "m",
        epoch: 1,
    };
    let f: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
    let sealed = old.seal(&row, &f);
    assert_eq!(sealed.key_id, "one");
    assert_eq!(old.open(&row, &sealed).unwrap(), f);
    for other in [
        Row {
            subject_id: "bob",
            ..row
        },
        Row {
            gallery_id: "h",
            ..row
        },
        Row {
            model_id: "n",
            ..row
        },
        Row {
            template_id: "t2",
            ..row
        },
        Row { epoch: 2, ..row },
    ] {
        assert!(old.open(&other, &sealed).is_err(), "{other:?}");
    }
    let mut flipped = sealed.clone();
    let last = flipped.ciphertext.len() - 1;
    flipped.ciphertext[last] ^= 1;
    assert!(old.open(&row, &flipped).is_err());
    // Rotation: re-wrapped under "two", the feature's ciphertext unchanged; the new keyring
    // alone opens it, the old one no longer does.
    let moved = both.rewrap(&row, &sealed).unwrap();
    assert_eq!(
        (moved.key_id.as_str(), &moved.ciphertext),
        ("two", &sealed.ciphertext)
    );
    let new_only = Keyring::parse(&two).unwrap();
    assert_eq!(new_only.open(&row, &moved).unwrap(), f);
    assert!(old.open(&row, &moved).is_err());
    // Keyrings that are not: empty, bad base64, short key, repeated id.
    for bad in [
        "",
        "# only a comment",
        "k notbase64!",
        "k AAAA",
        &format!("{one}\n{one}"),
    ] {
        assert!(Keyring::parse(bad).is_err(), "{bad:?}");
    }
}

/// Runs the `dvsp` binary with `argv`; an error carries its stderr.
async fn dvsp(argv: &[&str]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dvsp"))
        .args(argv)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "dvsp {argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_key_moves_every_template_while_the_service_serves() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("r.db").display());
    let (s, k) = two_enrolled(&db).await;
    let store = Store::connect(&db).await.unwrap();
    let before = features(&store, "default", "bob").await;
    // A second key, after the first: it seals from now on; rotation moves the rows onto it
    // in batches of one while the server (holding both keys) answers.
    let file = dir.path().join("rotating.keys");
    std::fs::copy(keyring_file(), &file).unwrap();
    let f = file.to_str().unwrap();
    dvsp(&["db", "new-key", "--template-keys", f, "--id", "second"])
        .await
        .unwrap();
    // The same id again is refused, and the file is left as it was.
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        dvsp(&["db", "new-key", "--template-keys", f, "--id", "second"])
            .await
            .is_err()
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    s.stop().await;
    let s = Server::start(&db, &["--template-keys", f]).await;
    let c = Client::new();
    let three = digits(3, 2).remove(1);
    let verify = |id: &str| {
        png_body(
            &c,
            &s.url(&format!("/v1/subjects/{id}/verify")),
            &k.verify,
            &three,
        )
    };
    let rotate = [
        "db",
        "rotate-key",
        "--db",
        &db,
        "--template-keys",
        f,
        "--batch",
        "1",
    ];
    let (rotated, answers) = tokio::join!(dvsp(&rotate), async {
        let mut codes = Vec::new();
        for _ in 0..6 {
            codes.push(send(verify("alice")).await.0);
        }
        codes
    });
    rotated.unwrap();
    assert!(answers.iter().all(|c| *c == StatusCode::OK), "{answers:?}");
    assert_eq!(store.count_not_under("second").await.unwrap(), 0);
    s.stop().await;
    // The old key gone from the keyring: every template still opens, to the same feature.
    let only = dir.path().join("only.keys");
    let last = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    std::fs::write(&only, last + "\n").unwrap();
    let s = Server::start(&db, &["--template-keys", only.to_str().unwrap()]).await;
    let r = send(png_body(
        &c,
        &s.url("/v1/subjects/bob/verify"),
        &k.verify,
        &three,
    ))
    .await;
    assert_eq!(r.0, StatusCode::OK, "{:?}", r.1);
    let rows = store.subject_templates("default", "bob").await.unwrap();
    let k2 = dvsp_custody::seal::Keyring::load(Some(&only), None).unwrap();
    let after: Vec<u8> = k2
        .open(&rows[0].row(), &rows[0].sealed)
        .unwrap()
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert_eq!(after, before[0].0);
    s.stop().await;
}

/// A store as the version before galleries left it: migration 0001 only (applied by sqlx's
/// migrator), a subject with a plaintext template, a verify key and an admin key. The feature
/// written, and the two key ids.
async fn old_store(db: &str) -> (Vec<f32>, String, String) {
    let (dir, sql) = if db.starts_with("sqlite") {
        (
            "crates/dvsp-custody/migrations/sqlite",
            include_str!("../crates/dvsp-custody/migrations/sqlite/0001_init.sql"),
        )
    } else {
        (
            "crates/dvsp-custody/migrations/postgres",
            include_str!("../crates/dvsp-custody/migrations/postgres/0001_init.sql"),
        )
    };
    let only_first = tempfile::tempdir().unwrap();
    std::fs::write(only_first.path().join("0001_init.sql"), sql).unwrap();
    assert!(std::path::Path::new(dir).join("0001_init.sql").exists());
    let migrator = sqlx::migrate::Migrator::new(only_first.path())
        .await
        .unwrap();
    let feature: Vec<f32> = (0..32).map(|i| ((i as f32) - 15.5) / 52.0).collect();
    let bytes: Vec<u8> = feature.iter().flat_map(|v| v.to_le_bytes()).collect();
    let (verify, admin) = (dvsp_server::auth::generate(), dvsp_server::auth::generate());
    macro_rules! fill {
        ($pool:expr) => {{
            migrator.run($pool).await.unwrap();
            sqlx::query("INSERT INTO subjects (id, name, created_at) VALUES ('old', 'Old', 1)")
                .execute($pool)
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO templates (id, subject_id, model_id, feature, quality, created_at) \
                 VALUES ('old-t', 'old', 'm0', $1, NULL, 1)",
            )
            .bind(&bytes)
            .execute($pool)
            .await
            .unwrap();
            for (k, role) in [(&verify, "verify"), (&admin, "admin")] {
                sqlx::query(
                    "INSERT INTO api_keys (id, hash, role, created_at) VALUES ($1, $2, $3, 1)",
                )
                .bind(&k.id)
                .bind(&k.hash)
                .bind(role)
                .execute($pool)
                .await
                .unwrap();
            }
        }};
    }
    if db.starts_with("sqlite") {
        let opts: sqlx::sqlite::SqliteConnectOptions = db.parse().unwrap();
        let pool = sqlx::SqlitePool::connect_with(opts.create_if_missing(true))
            .await
            .unwrap();
        fill!(&pool);
    } else {
        let pool = sqlx::PgPool::connect(db).await.unwrap();
        fill!(&pool);
    }
    (feature, verify.id, admin.id)
}

async fn migrates_without_losing_a_template(db: &str) {
    let (feature, verify, admin) = old_store(db).await;
    let store = Store::connect(db).await.unwrap();
    assert_eq!(
        store
            .get_subject("default", "old")
            .await
            .unwrap()
            .unwrap()
            .name
            .as_deref(),
        Some("Old")
    );
    let v = store.get_key(&verify).await.unwrap().unwrap();
    assert_eq!(
        (v.roles.as_str(), v.gallery_id.as_deref(), v.scores.as_str()),
        ("verify,identify,read", Some("default"), "full")
    );
    let a = store.get_key(&admin).await.unwrap().unwrap();
    assert_eq!((a.roles.as_str(), a.gallery_id), ("admin", None));
    // The server refuses to serve plaintext templates, and says what to do.
    let model = model();
    let cli = dvsp_server::config::ServeArgs::from_argv([
        "serve",
        "--model",
        model.to_str().unwrap(),
        "--db",
        db,
        "--template-keys",
        keyring_file(),
        "--fmr",
        "1e-2",
    ])
    .unwrap();
    let refused = cli.state().await.err().expect("refused").to_string();
    assert!(
        refused.contains("1 templates are stored in plaintext") && refused.contains("rotate-key"),
        "{refused}"
    );
    dvsp(&[
        "db",
        "rotate-key",
        "--db",
        db,
        "--template-keys",
        keyring_file(),
    ])
    .await
    .unwrap();
    assert_eq!(store.count_plaintext().await.unwrap(), 0);
    let rows = store.subject_templates("default", "old").await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        keyring().open(&rows[0].row(), &rows[0].sealed).unwrap(),
        feature
    );
    assert!(cli.state().await.is_ok());
}

on_both_stores!(migrates_without_losing_a_template);

#[test]
fn a_gallery_transform_is_orthogonal_keeps_distances_and_is_fixed_by_its_secret() {
    use dvsp_custody::protect::Transform;
    for d in [2, 32, 128] {
        let q = Transform::from_secret(b"a secret", d);
        // Q^T Q = I: the columns Q^T e_i are orthonormal.
        let cols: Vec<Vec<f32>> = (0..d)
            .map(|i| {
                let mut e = vec![0.0f32; d];
                e[i] = 1.0;
                q.apply(&e)
            })
            .collect();
        for i in 0..d {
            for j in 0..d {
                let dot: f64 = cols[i]
                    .iter()
                    .zip(&cols[j])
                    .map(|(a, b)| (*a as f64) * (*b as f64))
                    .sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-6, "d {d}: Q^T Q[{i}][{j}] = {dot}");
            }
        }
        // Cosine distances of unit features, before and after: within 1e-6 (eq. 1).
        let unit = |seed: usize| {
            let v: Vec<f32> = (0..d)
                .map(|k| ((k * 7919 + seed * 104729) as f32).sin())
                .collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / n).collect::<Vec<f32>>()
        };
        for s in 0..20 {
            let (a, b) = (unit(s), unit(s + 100));
            let before = dvsp_core::metrics::distance(&a, &b);
            let after = dvsp_core::metrics::distance(&q.apply(&a), &q.apply(&b));
            assert!((before - after).abs() < 1e-6, "d {d}: {before} vs {after}");
            let back = q.invert(&q.apply(&a));
            assert!(a.iter().zip(&back).all(|(x, y)| (x - y).abs() < 1e-6));
        }
        // The same secret gives the same Q; another secret an unrelated one.
        assert_eq!(q, Transform::from_secret(b"a secret", d));
        if d >= 32 {
            let other = Transform::from_secret(b"another", d);
            let a = unit(1);
            let cos = 1.0 - dvsp_core::metrics::distance(&q.apply(&a), &other.apply(&a));
            assert!(cos.abs() < 0.6, "d {d}: cos {cos}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn galleries_store_unlinkable_templates_and_renewal_reissues_them_without_a_photo() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("u.db").display());
    let k = keys(&db).await;
    let s = Server::start(&db, &[]).await;
    let c = Client::new();
    let r = send(
        c.post(s.url("/v1/galleries"))
            .bearer_auth(&k.admin)
            .json(&json!({"id": "other"})),
    )
    .await;
    assert_eq!(r.0, StatusCode::CREATED, "{:?}", r.1);
    let other = new_key(
        &s,
        &c,
        &k.admin,
        "other",
        json!({"roles": ["admin"], "scores": "full"}),
    )
    .await;
    // The same ten digits enrolled in both galleries.
    let pngs: Vec<Vec<u8>> = (0..10).map(|d| digits(d, 1).remove(0)).collect();
    for key in [&k.enroll, &other] {
        for (d, png) in pngs.iter().enumerate() {
            let id = format!("d{d}");
            send(
                c.post(s.url("/v1/subjects"))
                    .bearer_auth(key)
                    .json(&json!({"id": id})),
            )
            .await;
            let r = send(png_body(
                &c,
                &s.url(&format!("/v1/subjects/{id}/templates")),
                key,
                png,
            ))
            .await;
            assert_eq!(r.0, StatusCode::CREATED, "{:?}", r.1);
        }
    }
    let store = Store::connect(&db).await.unwrap();
    let kr = keyring();
    let stored = |g: &'static str| {
        let store = store.clone();
        let kr = kr.clone();
        async move {
            let mut out = Vec::new();
            for d in 0..10 {
                let rows = store.subject_templates(g, &format!("d{d}")).await.unwrap();
                out.push((
                    rows[0].epoch,
                    kr.open(&rows[0].row(), &rows[0].sealed).unwrap(),
                ));
            }
            out
        }
    };
    let cos = |a: &[f32], b: &[f32]| 1.0 - dvsp_core::metrics::distance(a, b);
    let (mine, theirs) = (stored("default").await, stored("other").await);
    let secret = |g: &'static str| {
        let store = store.clone();
        async move { store.current_secret(g).await.unwrap().unwrap() }
    };
    let (q_mine, q_theirs) = (
        dvsp_custody::protect::transform_of(&kr, &secret("default").await, mine[0].1.len())
            .unwrap(),
        dvsp_custody::protect::transform_of(&kr, &secret("other").await, mine[0].1.len()).unwrap(),
    );
    // The same faces, unrelated templates: |cos| around 1/sqrt(d) across galleries, while the
    // features under them are the same.
    let across: f64 = mine
        .iter()
        .zip(&theirs)
        .map(|(a, b)| cos(&a.1, &b.1).abs())
        .sum::<f64>()
        / 10.0;
    assert!(across < 0.35, "mean |cos| across galleries {across}");
    for (a, b) in mine.iter().zip(&theirs) {
        assert!(cos(&q_mine.invert(&a.1), &q_theirs.invert(&b.1)) > 0.999);
    }
    // Distances through the service are those of the features (eq. 1): a subject's verify
    // against the pair verify of the same two images.
    let probe = digits(3, 2).remove(1);
    let verify = |id: &str| {
        png_body(
            &c,
            &s.url(&format!("/v1/subjects/{id}/verify")),
            &k.verify,
            &probe,
        )
    };
    let through = send(verify("d3")).await.1["distance"].as_f64().unwrap();
    let form = reqwest::multipart::Form::new()
        .part("image_a", reqwest::multipart::Part::bytes(pngs[3].clone()))
        .part("image_b", reqwest::multipart::Part::bytes(probe.clone()));
    let pair = send(
        c.post(s.url("/v1/verify"))
            .bearer_auth(&k.verify)
            .multipart(form),
    )
    .await;
    let direct = pair.1["distance"].as_f64().unwrap();
    assert!((through - direct).abs() < 1e-5, "{through} vs {direct}");

    // Renewal while serving: a new secret, every template re-issued without a photo, the
    // old secret destroyed; decisions and distances are what they were.
    let before_epoch = mine[0].0;
    dvsp(&[
        "galleries",
        "renew",
        "default",
        "--db",
        &db,
        "--template-keys",
        keyring_file(),
        "--batch",
        "3",
    ])
    .await
    .unwrap();
    let renewed = stored("default").await;
    assert!(renewed.iter().all(|(e, _)| *e == before_epoch + 1));
    assert!(store
        .gallery_secret("default", before_epoch)
        .await
        .unwrap()
        .is_none());
    let changed: f64 = mine
        .iter()
        .zip(&renewed)
        .map(|(a, b)| cos(&a.1, &b.1).abs())
        .sum::<f64>()
        / 10.0;
    assert!(
        changed < 0.35,
        "old and renewed templates are related: {changed}"
    );
    let after = send(verify("d3")).await.1["distance"].as_f64().unwrap();
    assert!((after - through).abs() < 1e-5, "{after} vs {through}");
    // The other gallery is untouched.
    assert_eq!(stored("other").await, theirs);
    s.stop().await;
}
