//! Zero-downtime rollout and template migration, on SQLite and on PostgreSQL: a
//! real server on `--models-dir` with `--retain-images` serves model A; subjects are enrolled
//! (their images kept, sealed); a load generator verifies them throughout; B is promoted in
//! the registry and the server switches to it without an error; subjects not yet re-embedded
//! are verified with A (the answer says so); `dvsp reembed --to B` (the real binary, another
//! process) embeds the kept images with B; then every subject verifies on B. Every answer
//! names its model and carries that model's threshold. Also: `dvsp models pending`, images
//! sealed at rest and deleted with their subject and last template, metrics by model, and a
//! killed `dvsp train` resuming from its checkpoint.
mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

/// Model B: another DVSP model (another seed, fewer images), trained once and evaluated.
fn model_b() -> std::path::PathBuf {
    common::trained(
        "rollout-b",
        &dvsp_core::config::TrainConfig {
            epochs: 1,
            limit: 10_000,
            seed: 7,
            ..Default::default()
        },
    )
}

fn dvsp(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dvsp"))
        .args(args)
        .env("DVSP_ACTOR", "migrator")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The log's colours out: `\x1b[...m`.
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            plain.push(c);
        }
    }
    (out.status.success(), plain)
}

/// One answer of the load generator.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    body: Value,
}

async fn rollout(db: &str) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("models");
    let (a, b) = (common::model(), model_b());
    let store = dvsp_custody::store::Store::connect(db).await.unwrap();
    let id_a = dvsp_ops::registry::register(&store, &a, &root, "ops")
        .await
        .unwrap();
    let id_b = dvsp_ops::registry::register(&store, &b, &root, "ops")
        .await
        .unwrap();
    assert_ne!(id_a, id_b);
    let report = json!({ "test": "forced" });
    store
        .promote_model(&id_a, None, "ops", &report)
        .await
        .unwrap();
    let (t_a, t_b) = {
        let at = |p: &Path| {
            dvsp_core::config::ThresholdAt::Fmr(1e-2)
                .from_card(&dvsp_core::artifact::read_card(p).unwrap())
                .unwrap()
        };
        (at(&a), at(&b))
    };
    let k = common::keys(db).await;
    let server = common::Server::start(
        db,
        &[
            "--models-dir",
            root.to_str().unwrap(),
            "--retain-images",
            "--registry-poll-ms",
            "100",
            "--index-poll-ms",
            "100",
            "--max-attempts",
            "1000000",
            "--max-subject-attempts",
            "1000000",
            "--max-key-probes",
            "1000000",
        ],
    )
    .await;
    let c = reqwest::Client::new();
    let model_now = || {
        let (c, url, key) = (c.clone(), server.url("/v1/model"), k.verify.clone());
        async move {
            common::send(c.get(url).bearer_auth(key)).await.1["card"]["model_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }
    };
    assert_eq!(model_now().await, id_a);

    // Ten subjects, one digit each, their enrollment images kept.
    let images: Vec<Vec<u8>> = (0..10).map(|d| common::digits(d, 1).remove(0)).collect();
    for (i, png) in images.iter().enumerate() {
        let s = format!("s{i}");
        let r = common::send(
            c.post(server.url("/v1/subjects"))
                .bearer_auth(&k.enroll)
                .json(&json!({ "id": s })),
        )
        .await;
        assert_eq!(r.0, 201, "{:?}", r.1);
        let url = server.url(&format!("/v1/subjects/{s}/templates"));
        let r = common::send(common::png_body(&c, &url, &k.enroll, png)).await;
        assert_eq!(r.0, 201, "{:?}", r.1);
        assert_eq!(r.1["model_id"], id_a.as_str());
    }
    let detail = common::send(c.get(server.url("/v1/subjects/s3")).bearer_auth(&k.enroll)).await;
    assert_eq!(
        detail.1["templates"][0]["image_retained"], true,
        "{:?}",
        detail.1
    );
    // At rest the image is sealed: not the PNG, and it opens to exactly the upload.
    let kept = store.subject_images("default", "s3").await.unwrap();
    assert_eq!(kept.len(), 1);
    let ct = &kept[0].sealed.ciphertext;
    assert!(
        !ct.windows(4).any(|w| w == b"\x89PNG")
            && !ct
                .windows(16)
                .any(|w| images[3].windows(16).any(|v| v == w))
    );
    assert_eq!(
        common::keyring()
            .open_image(&kept[0].row(), &kept[0].sealed)
            .unwrap(),
        images[3]
    );
    // A subject enrolled before images were kept: a template of A, no image.
    store
        .create_subject("default", "legacy", None)
        .await
        .unwrap();
    let row = dvsp_custody::store::SealedRow::new(
        &common::keyring(),
        uuid::Uuid::new_v4().to_string(),
        "default".into(),
        "legacy".into(),
        id_a.clone(),
        0,
        &[1.0; 16],
    );
    store.add_template(&row, None, None).await.unwrap();

    // The load generator: verifies the subjects in turn with their enrollment image until
    // told to stop, keeping every answer.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (c, stop, key, base) = (
            c.clone(),
            stop.clone(),
            k.verify.clone(),
            server.base.clone(),
        );
        let images = images.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let s = i % images.len();
                let url = format!("{base}/v1/subjects/s{s}/verify");
                let (status, body) =
                    common::send(common::png_body(&c, &url, &key, &images[s])).await;
                answers.push(Answer {
                    status: status.as_u16(),
                    body,
                });
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Promote B in the registry: the server switches to it.
    store
        .promote_model(&id_b, Some(&id_a), "ops", &report)
        .await
        .unwrap();
    common::within(Duration::from_secs(60), "the switch to B", || async {
        model_now().await == id_b
    })
    .await;
    let info = common::send(c.get(server.url("/v1/model")).bearer_auth(&k.verify)).await;
    assert_eq!(info.1["previous_model_id"], id_a.as_str());
    assert!((info.1["threshold"].as_f64().unwrap() - t_b).abs() < 1e-12);
    // Not yet re-embedded: verified with A, at A's threshold, and said so.
    let url = server.url("/v1/subjects/s4/verify");
    let r = common::send(common::png_body(&c, &url, &k.verify, &images[4])).await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    assert_eq!(r.1["model_id"], id_a.as_str());
    assert_eq!(r.1["migrating"], true);
    assert_eq!(r.1["match"], true, "{:?}", r.1);
    // Enrolled now: with B.
    let url = server.url("/v1/subjects/s4/templates");
    let r = common::send(common::png_body(&c, &url, &k.enroll, &images[4])).await;
    assert_eq!(r.1["model_id"], id_b.as_str(), "{:?}", r.1);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // `dvsp models pending` before: 10 subjects lack B (s4 has it now; legacy lacks it), all
    // ten kept images lack a template of B (s4's first one too), legacy must be enrolled
    // again.
    let keys = common::keyring_file();
    let roots = root.to_str().unwrap();
    let (ok, out) = dvsp(&["models", "--db", db, "--models-dir", roots, "pending"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("model {id_b}: 10 subjects have no template of it; 10 retained images can be re-embedded")),
        "{out}"
    );
    assert!(
        out.contains("1 subjects have no retained image") && out.contains("legacy"),
        "{out}"
    );

    // Re-embed with B in another process while the server serves.
    let (ok, out) = dvsp(&[
        "reembed",
        "--to",
        &id_b,
        "--db",
        db,
        "--models-dir",
        roots,
        "--template-keys",
        keys,
        "--batch",
        "4",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("reembed: 10 templates of model {id_b} stored")),
        "{out}"
    );
    // Nothing left: a second run stores nothing (resumable by construction).
    let (ok, out) = dvsp(&[
        "reembed",
        "--to",
        &id_b,
        "--db",
        db,
        "--models-dir",
        roots,
        "--template-keys",
        keys,
    ]);
    assert!(ok && out.contains("reembed: 0 templates"), "{out}");
    let history = store.model_events(&id_b).await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(
        (last.action.as_str(), last.actor.as_str()),
        ("reembed", "migrator")
    );

    // Every subject verifies on B: the index took the new templates in.
    for (i, png) in images.iter().enumerate() {
        let url = server.url(&format!("/v1/subjects/s{i}/verify"));
        common::within(Duration::from_secs(20), "verified on B", || async {
            let r = common::send(common::png_body(&c, &url, &k.verify, png)).await;
            assert_eq!(r.0, 200, "{:?}", r.1);
            r.1["model_id"] == id_b.as_str() && r.1["migrating"] == false && r.1["match"] == true
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let answers = load.await.unwrap();

    // The load: no error; each answer's threshold is the one of the model it names; A before
    // the re-embedding, B after it.
    let errors: Vec<&Answer> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(
        errors.is_empty(),
        "{} of {}: {:?}",
        errors.len(),
        answers.len(),
        errors.first()
    );
    let (mut on_a, mut on_b, mut migrating) = (0, 0, 0);
    for a in &answers {
        let (m, t) = (
            a.body["model_id"].as_str().unwrap(),
            a.body["threshold"].as_f64().unwrap(),
        );
        assert_eq!(a.body["match"], true, "{a:?}");
        if m == id_a {
            assert!((t - t_a).abs() < 1e-12, "{a:?}");
            on_a += 1;
            migrating += (a.body["migrating"] == true) as usize;
        } else {
            assert_eq!(m, id_b, "{a:?}");
            assert!((t - t_b).abs() < 1e-12, "{a:?}");
            on_b += 1;
        }
    }
    assert!(
        on_a > 0 && migrating > 0 && on_b > 0,
        "A {on_a} (migrating {migrating}), B {on_b}"
    );
    // The last answers are B's.
    assert_eq!(answers.last().unwrap().body["model_id"], id_b.as_str());

    // Metrics by model.
    let metrics = c
        .get(&server.metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "dvsp_model_loaded{{model=\"{id_b}\",role=\"serving\"}} 1"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "dvsp_model_loaded{{model=\"{id_a}\",role=\"previous\"}} 1"
    )));
    assert!(metrics.contains("dvsp_model_switches_total{result=\"switched\"} 1"));
    for id in [&id_a, &id_b] {
        assert!(
            metrics.contains(&format!("kind=\"verify\",model=\"{id}\"")),
            "{id}"
        );
        assert!(metrics.contains(&format!(
            "dvsp_inference_batch_size_count{{model=\"{id}\"}}"
        )));
    }

    // Images go with the last template embedded from them, and with their subject.
    let detail = common::send(c.get(server.url("/v1/subjects/s1")).bearer_auth(&k.enroll)).await;
    let templates = detail.1["templates"].as_array().unwrap().clone();
    assert_eq!(templates.len(), 2, "{templates:?}");
    for (n, t) in templates.iter().enumerate() {
        let url = server.url(&format!(
            "/v1/subjects/s1/templates/{}",
            t["id"].as_str().unwrap()
        ));
        let r = c.delete(url).bearer_auth(&k.admin).send().await.unwrap();
        assert_eq!(r.status(), 204);
        let left = store.subject_images("default", "s1").await.unwrap().len();
        assert_eq!(left, if n == 0 { 1 } else { 0 });
    }
    let r = c
        .delete(server.url("/v1/subjects/s2"))
        .bearer_auth(&k.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(store
        .subject_images("default", "s2")
        .await
        .unwrap()
        .is_empty());
    server.stop().await;

    // A restarted server keeps A loaded for subjects not yet re-embedded.
    let server = common::Server::start(db, &["--models-dir", roots]).await;
    let l = server.state.lineup();
    assert_eq!(l.serving.card.model_id, id_b);
    assert_eq!(l.previous.as_ref().unwrap().card.model_id, id_a);
    drop(l);
    server.stop().await;
}

on_both_stores!(rollout);

/// A batch of re-embedded templates whose subject was deleted meanwhile: the others are
/// stored, that one is skipped (the bulk insert's foreign key fails, the row-by-row path
/// skips it).
async fn deleted_subjects_are_skipped(db: &str) {
    let store = dvsp_custody::store::Store::connect(db).await.unwrap();
    let keyring = common::keyring();
    let mut rows = Vec::new();
    for s in ["keep", "gone"] {
        store.create_subject("default", s, None).await.unwrap();
        let image = dvsp_custody::store::SealedImage::new(&keyring, "default", s, b"an image");
        let row = |model: &str| {
            dvsp_custody::store::SealedRow::new(
                &keyring,
                uuid::Uuid::new_v4().to_string(),
                "default".into(),
                s.into(),
                model.into(),
                0,
                &[0.5; 4],
            )
        };
        store
            .add_template(&row("a"), None, Some(&image))
            .await
            .unwrap();
        rows.push((row("b"), None, image.id.clone()));
    }
    assert_eq!(store.count_images_to_reembed("b").await.unwrap(), 2);
    store.delete_subject("default", "gone").await.unwrap();
    assert_eq!(store.count_images_to_reembed("b").await.unwrap(), 1);
    assert_eq!(store.add_reembedded(&rows).await.unwrap(), 1);
    assert_eq!(store.count_templates_of("b").await.unwrap(), 1);
    assert_eq!(store.count_images_to_reembed("b").await.unwrap(), 0);
    assert_eq!(store.count_images().await.unwrap(), 1);
    // NUL in an id is refused before the store is reached.
    let mut bad = rows[0].clone();
    bad.2 = "a\0b".into();
    assert!(matches!(
        store.add_reembedded(&[bad]).await,
        Err(dvsp_custody::store::StoreError::Nul(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reembedding_skips_deleted_subjects_on_both_stores() {
    let dir = tempfile::tempdir().unwrap();
    deleted_subjects_are_skipped(&format!("sqlite://{}", dir.path().join("d.db").display())).await;
    let pg = common::PgDb::new().await;
    deleted_subjects_are_skipped(&pg.url).await;
    pg.drop_db().await;
}

/// A `dvsp train` killed after its first epoch resumes from the checkpoint when run again,
/// and leaves no checkpoint behind once the model is saved.
#[test]
fn a_killed_training_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m");
    let args = [
        "train",
        "--data",
        "mnist",
        "--method",
        "dvib",
        "--epochs",
        "3",
        "--limit",
        "3000",
        "--out",
        out.to_str().unwrap(),
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_dvsp"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state = out.join("checkpoint.json");
    let start = std::time::Instant::now();
    while !state.exists() {
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint");
        assert!(
            child.try_wait().unwrap().is_none(),
            "training ended before a checkpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let done = saved["epochs_done"].as_u64().unwrap();
    assert!((1..3).contains(&done), "{saved}");
    assert!(!out.join("model.json").exists());
    let (ok, text) = dvsp(&args);
    assert!(ok, "{text}");
    assert!(
        text.contains("resuming from the checkpoint")
            && text.contains(&format!("epochs_done={done}")),
        "{text}"
    );
    let card = dvsp_core::artifact::read_card(&out).unwrap();
    assert!(card.training.seconds >= saved["seconds"].as_f64().unwrap());
    assert!(!state.exists() && !out.join("checkpoint.safetensors").exists());
    dvsp_core::artifact::load(&out, tch::Device::Cpu).unwrap();
}
