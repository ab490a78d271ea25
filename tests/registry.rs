//! The model registry: the promotion gate on hand-changed cards of a real model
//! (known decisions at the edges of each tolerance), and `dvsp models` end to end on SQLite
//! and PostgreSQL with a real bad candidate (trained 3 steps), then `serve --models-dir`.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use dvsp_core::artifact::{ModelCard, RobustnessSummary};
use dvsp_core::registry::{gate, GatePolicy};

fn policy() -> GatePolicy {
    GatePolicy {
        fmr: 1e-3,
        test_set: "test".into(),
        max_fnmr_loss: 0.005,
        max_ri_loss: 0.05,
    }
}

fn card() -> ModelCard {
    dvsp_core::artifact::read_card(&common::model()).unwrap()
}

/// `card` with its FNMR at FMR 1e-3 on the test set moved by `by`.
fn fnmr_moved(mut card: ModelCard, by: f64) -> ModelCard {
    let r = card.metrics.get_mut("test").unwrap();
    let p = r.at_fmr.iter_mut().find(|p| p.target == 1e-3).unwrap();
    p.fnmr += by;
    card.model_id = format!("{}-moved", card.model_id);
    card
}

fn audited(mut card: ModelCard, ri: f64, seed: &str, converged: bool) -> ModelCard {
    let cfg = dvsp_core::audit::outputs::AuditArgs::from_argv(["audit", "--audit-seed", seed])
        .unwrap()
        .config();
    card.robustness = Some(RobustnessSummary {
        ri: Some(ri),
        ri_8bit: None,
        convergence_ratio: Some(1.0),
        converged: Some(converged),
        threshold: 0.5,
        threshold_at: "eer".into(),
        pairs_per_class_pair: cfg.pairs,
        seconds: 1.0,
        config: Some(cfg),
    });
    card
}

fn failed(r: &dvsp_core::registry::GateReport) -> Vec<String> {
    r.checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.what.clone())
        .collect()
}

#[test]
fn the_gate_decides_at_the_edges_of_its_tolerances() {
    let serving = card();
    let p = policy();
    // Nothing serves: there is nothing to compare with, so only --force promotes (an
    // unevaluated candidate fails that check too).
    let first = "a serving model to compare with";
    let r = gate(None, &serving, &p, false);
    assert_eq!(failed(&r), [first]);
    assert!(!r.promoted());
    assert!(gate(None, &serving, &p, true).promoted());
    let mut bare = serving.clone();
    bare.metrics.clear();
    let r = gate(None, &bare, &p, false);
    assert_eq!(failed(&r), ["candidate evaluated", first]);
    // FNMR: 0.4 points worse passes, 0.6 points worse is refused.
    let r = gate(
        Some(&serving),
        &fnmr_moved(serving.clone(), 0.004),
        &p,
        false,
    );
    assert!(r.passed, "{:?}", r.checks);
    let r = gate(
        Some(&serving),
        &fnmr_moved(serving.clone(), 0.006),
        &p,
        false,
    );
    assert_eq!(failed(&r), ["FNMR at the serving FMR"]);
    assert!(
        !r.promoted() && r.reason.starts_with("refused: "),
        "{}",
        r.reason
    );
    // Forced: promoted, and the report says past which check.
    let r = gate(
        Some(&serving),
        &fnmr_moved(serving.clone(), 0.006),
        &p,
        true,
    );
    assert!(r.promoted() && r.forced && !r.passed);
    assert!(
        r.reason.starts_with("forced past failed checks: FNMR"),
        "{}",
        r.reason
    );
    // Not the same held-out pairs: refused whatever the figures.
    let mut other = fnmr_moved(serving.clone(), -0.01);
    other.metrics.get_mut("test").unwrap().genuine_pairs -= 1;
    assert_eq!(
        failed(&gate(Some(&serving), &other, &p, false)),
        ["same held-out data"]
    );
    // RI: 4% lower passes, 6% lower is refused; other audit settings, an unconverged audit
    // or no audit of the candidate are refused; no audit of the serving model: not compared.
    let s = audited(serving.clone(), 1.0, "0", true);
    let c = |ri, seed, conv| audited(fnmr_moved(serving.clone(), 0.0), ri, seed, conv);
    assert!(gate(Some(&s), &c(0.96, "0", true), &p, false).passed);
    let ri = "RI (eq. 17) on the same audit pairs";
    assert_eq!(
        failed(&gate(Some(&s), &c(0.94, "0", true), &p, false)),
        [ri]
    );
    assert_eq!(failed(&gate(Some(&s), &c(1.5, "1", true), &p, false)), [ri]);
    assert_eq!(
        failed(&gate(Some(&s), &c(1.5, "0", false), &p, false)),
        [ri]
    );
    assert_eq!(
        failed(&gate(
            Some(&s),
            &fnmr_moved(serving.clone(), 0.0),
            &p,
            false
        )),
        [ri]
    );
    let r = gate(Some(&serving), &c(0.1, "0", true), &p, false);
    assert!(r.passed, "{:?}", r.checks);
    assert!(r.checks.iter().any(|c| c.detail.contains("not compared")));
}

/// A deliberately bad candidate: 3 training steps (384 images, batch 128), evaluated; cached
/// like the test model.
fn bad_model() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        common::trained(
            "bad-model",
            &dvsp_core::config::TrainConfig {
                epochs: 1,
                limit: 384,
                ..Default::default()
            },
        )
    })
    .clone()
}

/// `dvsp db migrate --db db`: the administration commands work on a store that exists.
fn migrated(db: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dvsp"))
        .args(["db", "migrate", "--db", db])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    db.to_string()
}

/// `dvsp models ...` against `db` and `models_dir`; (success, stdout + stderr). Every one names
/// the store it used first on stderr (that line is checked, then left out).
fn models(db: &str, models_dir: &Path, by: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dvsp"))
        .arg("models")
        .args(args)
        .args([
            "--db",
            db,
            "--models-dir",
            models_dir.to_str().unwrap(),
            "--by",
            by,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let store = format!("store: {}\n", dvsp_custody::store::redact(db));
    assert!(stderr.starts_with(&store), "{args:?}: {stderr}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &stderr[store.len()..],
    )
}

fn show(db: &str, dir: &Path, id: &str) -> serde_json::Value {
    let (ok, out) = models(db, dir, "ops", &["show", id]);
    assert!(ok, "{out}");
    serde_json::from_str(&out).unwrap()
}

fn actions(shown: &serde_json::Value) -> Vec<(String, String)> {
    shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn registry_lifecycle(db: &str) {
    migrated(db);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("models");
    let (good, bad) = (common::model(), bad_model());
    let good_id = card().model_id;
    let bad_id = dvsp_core::artifact::read_card(&bad).unwrap().model_id;
    let arg = |p: &Path| p.to_str().unwrap().to_string();

    let (ok, out) = models(db, &root, "alice", &["register", "--model", &arg(&good)]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("registered {good_id} as a candidate")),
        "{out}"
    );
    assert!(root.join(&good_id).join("model.safetensors").is_file());
    let (ok, out) = models(db, &root, "alice", &["register", "--model", &arg(&good)]);
    assert!(!ok && out.contains("registered already"), "{out}");
    // Not a model: refused before anything is written.
    let listing = || {
        let mut v: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let before = listing();
    let (ok, out) = models(
        db,
        &root,
        "alice",
        &["register", "--model", &arg(dir.path())],
    );
    assert!(!ok && out.contains("model.json"), "{out}");
    assert_eq!(listing(), before);

    // The first promotion has nothing to be compared with: refused, then forced.
    let (ok, out) = models(db, &root, "alice", &["promote", &good_id]);
    assert!(
        !ok && out.contains("[FAIL] a serving model to compare with"),
        "{out}"
    );
    let (ok, out) = models(db, &root, "alice", &["promote", &good_id, "--force"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("decision: promote (forced past failed checks: a serving model"),
        "{out}"
    );

    // The bad candidate: refused, with both models side by side and the failed check.
    let (ok, out) = models(db, &root, "bob", &["register", "--model", &arg(&bad)]);
    assert!(ok, "{out}");
    let (ok, out) = models(db, &root, "bob", &["promote", &bad_id]);
    assert!(!ok, "{out}");
    assert!(out.contains("[FAIL] FNMR at the serving FMR"), "{out}");
    assert!(out.contains("decision: refuse"), "{out}");
    // Side by side: the FNMR row holds both models' figures.
    let row = out
        .lines()
        .find(|l| l.trim_start().starts_with("FNMR at FMR 0.001"))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(row.matches('%').count(), 2, "{row}");
    let (_, list) = models(db, &root, "ops", &["list"]);
    let state = |id: &str| {
        list.lines()
            .find(|l| l.starts_with(id))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_string)
    };
    assert_eq!(state(&good_id).as_deref(), Some("serving"), "{list}");
    assert_eq!(state(&bad_id).as_deref(), Some("candidate"), "{list}");
    let shown = show(db, &root, &bad_id);
    assert_eq!(shown["model"]["gate"]["passed"], false);
    assert_eq!(
        actions(&shown),
        [
            ("register".into(), "bob".into()),
            ("refuse".into(), "bob".into())
        ]
    );

    // One enrolled template of the serving model, which a promotion strands.
    let k = common::keys(db).await;
    let server = common::Server::start(db, &[]).await;
    let c = reqwest::Client::new();
    let created = common::send(
        c.post(server.url("/v1/subjects"))
            .bearer_auth(&k.enroll)
            .json(&serde_json::json!({"id": "s1"})),
    )
    .await;
    assert_eq!(created.0, 201, "{:?}", created.1);
    let png = &common::digits(1, 1)[0];
    let url = server.url("/v1/subjects/s1/templates");
    let enrolled = common::send(common::png_body(&c, &url, &k.enroll, png)).await;
    assert_eq!(enrolled.0, 201, "{:?}", enrolled.1);
    server.stop().await;

    // Forced: promoted and recorded as forced; the good one retired, saying by what; the
    // migration left to do is said.
    let (ok, out) = models(db, &root, "carol", &["promote", &bad_id, "--force"]);
    assert!(
        ok && out.contains(&format!("promoted {bad_id} (retired {good_id})")),
        "{out}"
    );
    let warning = format!(
        "migration: 1 subjects have no template of {bad_id}; replicas verify them with {good_id}"
    );
    assert!(out.contains(&warning), "{out}");
    assert!(
        out.contains("0 retained images; 1 of them have no retained image"),
        "{out}"
    );
    let shown = show(db, &root, &bad_id);
    assert_eq!(shown["model"]["state"], "serving");
    assert_eq!(shown["model"]["gate"]["forced"], true);
    let shown = show(db, &root, &good_id);
    assert_eq!(shown["model"]["state"], "retired");
    let history = shown["history"].as_array().unwrap();
    let last = history.last().unwrap();
    assert_eq!(
        (last["action"].clone(), last["actor"].clone()),
        ("retire".into(), "carol".into())
    );
    assert_eq!(last["detail"]["replaced_by"], bad_id.as_str());
    assert!(last["at"].as_i64().unwrap() > 0);

    // The serving model cannot be retired; the good one comes back through the gate.
    let (ok, out) = models(db, &root, "carol", &["retire", &bad_id]);
    assert!(!ok && out.contains("promote another model first"), "{out}");
    let (ok, out) = models(db, &root, "carol", &["promote", &good_id]);
    assert!(
        ok && out.contains("decision: promote (every check passed)"),
        "{out}"
    );
    let (ok, out) = models(db, &root, "carol", &["retire", &bad_id]);
    assert!(ok, "{out}");
    let (ok, out) = models(db, &root, "carol", &["retire", "nope"]);
    assert!(!ok && out.contains("no registered model"), "{out}");
    // Tolerances that are not numbers a gate can use are refused before anything is read.
    for (flag, value) in [
        ("--max-fnmr-loss", "-1"),
        ("--max-ri-loss", "1.5"),
        ("--fmr", "NaN"),
        ("--fmr", "0"),
    ] {
        let arg = format!("{flag}={value}");
        let (ok, out) = models(db, &root, "carol", &["promote", &bad_id, &arg]);
        assert!(
            !ok && out.contains(flag) && out.contains("must be within"),
            "{arg}: {out}"
        );
    }
    let (ok, out) = models(db, &root, "x\u{7}y", &["retire", &good_id]);
    assert!(!ok && out.contains("no control characters"), "{out}");

    // `serve --models-dir` serves the registry's serving model.
    let args = dvsp_server::config::ServeArgs::from_argv([
        "serve",
        "--models-dir",
        root.to_str().unwrap(),
        "--db",
        db,
        "--template-keys",
        common::keyring_file(),
        "--fmr",
        "1e-2",
    ])
    .unwrap();
    let state = args.state().await.unwrap();
    assert_eq!(state.lineup().serving.card.model_id, good_id);
    assert_eq!(state.lineup().serving.dir, root.join(&good_id));
    drop(state);
    // A card rewritten after registration (an audit, say) is not served silently.
    let card_path = root.join(&good_id).join("model.json");
    let card_text = std::fs::read_to_string(&card_path).unwrap();
    std::fs::write(&card_path, format!("{card_text} ")).unwrap();
    let err = args.state().await.err().unwrap().to_string();
    assert!(err.contains("changed since it was registered"), "{err}");
    std::fs::write(&card_path, card_text).unwrap();

    // Racing promotions against the same serving model: exactly one commits, the other is
    // told the serving model changed; a stale expectation is refused; NUL is refused.
    let store = dvsp_custody::store::Store::connect(db).await.unwrap();
    let report = serde_json::json!({ "test": true });
    let (a, b) = tokio::join!(
        store.promote_model(&bad_id, Some(&good_id), "race-a", &report),
        store.promote_model(&bad_id, Some(&good_id), "race-b", &report),
    );
    let conflict = |r: &Result<(), dvsp_custody::store::StoreError>| {
        matches!(r, Err(dvsp_custody::store::StoreError::Conflict))
    };
    assert!(
        (a.is_ok() && conflict(&b)) || (conflict(&a) && b.is_ok()),
        "{a:?} {b:?}"
    );
    let stale = store
        .promote_model(&good_id, Some(&good_id), "late", &report)
        .await;
    assert!(conflict(&stale), "{stale:?}");
    let nul = store.promote_model("a\0b", None, "x", &report).await;
    assert!(
        matches!(nul, Err(dvsp_custody::store::StoreError::Nul(_))),
        "{nul:?}"
    );
    let missing = store
        .promote_model("nope", Some(&bad_id), "x", &report)
        .await;
    assert!(
        matches!(missing, Err(dvsp_custody::store::StoreError::Missing)),
        "{missing:?}"
    );
    let serving = store.serving_model().await.unwrap().unwrap();
    assert_eq!(
        serving.id, bad_id,
        "the failed promotion of nope rolled back"
    );
}

on_both_stores!(registry_lifecycle);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_from_an_empty_registry_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("e.db").display());
    let args = dvsp_server::config::ServeArgs::from_argv([
        "serve",
        "--models-dir",
        dir.path().to_str().unwrap(),
        "--db",
        &db,
        "--template-keys",
        common::keyring_file(),
    ])
    .unwrap();
    let err = args.state().await.err().unwrap().to_string();
    assert!(err.contains("no model serves in the registry yet"), "{err}");
}

#[test]
fn retrain_trains_evaluates_registers_and_the_gate_refuses_a_bad_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let db = migrated(&format!("sqlite://{}", dir.path().join("j.db").display()));
    let root = dir.path().join("models");
    let good = common::model();
    let (ok, out) = models(
        &db,
        &root,
        "ops",
        &["register", "--model", good.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    let (ok, out) = models(&db, &root, "ops", &["promote", &card().model_id, "--force"]);
    assert!(ok, "{out}");
    // The job: 3 training steps (a deliberately bad candidate), no audit (the serving model
    // has none, so the gate compares FNMR only).
    let work = dir.path().join("work");
    let out = Command::new(env!("CARGO_BIN_EXE_dvsp"))
        .args([
            "retrain",
            "--data",
            "mnist",
            "--epochs",
            "1",
            "--limit",
            "384",
            "--no-audit",
        ])
        .args([
            "--out",
            work.to_str().unwrap(),
            "--db",
            &db,
            "--by",
            "retrain-job",
        ])
        .args(["--models-dir", root.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let id = dvsp_core::artifact::read_card(&work).unwrap().model_id;
    for expected in [
        format!("registered {id} as a candidate"),
        "[FAIL] FNMR at the serving FMR".to_string(),
        "decision: refuse".to_string(),
    ] {
        assert!(text.contains(&expected), "{expected} not in {text}");
    }
    let shown = show(&db, &root, &id);
    assert_eq!(shown["model"]["state"], "candidate");
    assert_eq!(
        actions(&shown),
        [
            ("register".into(), "retrain-job".into()),
            ("refuse".into(), "retrain-job".into())
        ]
    );
    // The evaluated card is what was registered: the gate's FNMR is its own.
    let fnmr = shown["model"]["gate"]["candidate"]["fnmr"]
        .as_f64()
        .unwrap();
    let card = dvsp_core::artifact::read_card(&work).unwrap();
    let at = card.metrics["test"]
        .at_fmr
        .iter()
        .find(|p| p.target == 1e-3)
        .unwrap();
    assert_eq!(fnmr, at.fnmr);
}
