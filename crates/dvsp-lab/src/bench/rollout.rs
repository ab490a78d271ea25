//! `dvsp bench rollout --model A [--db URL] [--subjects 50]`: the admin retraining job's whole
//! rollout under load. A real server (`--models-dir`, `--retain-images`) serves A
//! from the registry; `--subjects` subjects are enrolled with test images, their images kept;
//! a load generator verifies them without pause (4 in flight) while `dvsp retrain` trains B
//! (A's configuration with the next seed), evaluates it, registers it and gates it against A
//! (the report printed) and promotes it; the server switches; `dvsp reembed --to B` (another
//! process) re-embeds the kept images, reporting its rate against B's bare batched embedding
//! rate; every subject is then verified on B. A deliberately bad candidate (one training
//! step) is retrained and refused by the gate. Reported: errors over the whole run, and p50 /
//! p99 latency per phase as ratios to the steady phase on A (the reference).
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{quantile, test_pngs};
use dvsp_custody::store::Store;
use dvsp_ops::registry::GateArgs;

/// One verify of the load: when it started (s since the run began), its latency (ms), its
/// status and the model that answered.
struct Sample {
    at: f64,
    ms: f64,
    ok: bool,
    model: String,
}

pub fn run(a: &super::Args) -> anyhow::Result<()> {
    let model_a = a
        .model
        .as_ref()
        .context("bench rollout needs --model DIR (an evaluated MNIST or Fashion-MNIST model)")?;
    let tmp = tempfile::tempdir()?;
    let db =
        a.db.clone()
            .unwrap_or_else(|| format!("sqlite://{}", tmp.path().join("rollout.db").display()));
    let keys = tmp.path().join("template.keys");
    std::fs::write(
        &keys,
        dvsp_custody::seal::Keyring::new_key_line("bench")? + "\n",
    )?;
    let root = tmp.path().join("models");
    anyhow::ensure!(
        (1..=10_000).contains(&a.subjects),
        "--subjects must be within 1..=10000"
    );
    let card_a = dvsp_core::artifact::read_card(model_a)?;
    // Subject i is enrolled with, and verified by, test image i.
    let pngs = Arc::new(test_pngs(
        &card_a.training.dataset.parse()?,
        &card_a.net.input,
        a.subjects,
    )?);
    let exe = std::env::current_exe()?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let store = Store::connect(&db).await?;
        anyhow::ensure!(
            store.models().await?.is_empty(),
            "bench rollout needs a store with an empty registry (--db)"
        );
        let id_a = dvsp_ops::registry::register(&store, model_a, &root, "bench").await?;
        store
            .promote_model(&id_a, None, "bench", &serde_json::json!({ "bench": "forced" }))
            .await?;
        let key = {
            let k = dvsp_server::auth::generate();
            let admin = [dvsp_server::auth::Role::Admin];
            store
                .insert_key(&k.row(&admin, Some("default"), dvsp_server::auth::ScorePolicy::Full))
                .await?;
            k.key
        };
        let argv = [
            "serve", "--models-dir", root.to_str().unwrap_or_default(), "--db", &db,
            "--template-keys", keys.to_str().unwrap_or_default(), "--retain-images",
            "--fmr", "1e-2", "--registry-poll-ms", "200", "--max-attempts", "1000000000",
            "--max-subject-attempts", "1000000000", "--max-key-probes", "1000000000",
        ];
        let state = dvsp_server::config::ServeArgs::from_argv(argv)?.state().await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop_server, stopped) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(dvsp_server::serve(listener, state.clone(), async move {
            let mut rx = stopped;
            let _ = rx.wait_for(|s| *s).await;
        }));
        let client = reqwest::Client::new();
        for (i, png) in pngs.iter().take(a.subjects).enumerate() {
            let s = format!("s{i}");
            let r = client
                .post(format!("{base}/v1/subjects"))
                .bearer_auth(&key)
                .json(&serde_json::json!({ "id": s }))
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "create {s}: {}", r.status());
            super::post_png(&client, &format!("{base}/v1/subjects/{s}/templates"), &key, png.clone()).await?;
        }
        println!("rollout bench: model A {id_a} serves {} subjects (images kept), store {}", a.subjects, dvsp_custody::store::redact(&db));

        let began = Instant::now();
        let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let load: Vec<_> = (0..4)
            .map(|w| {
                let (client, base, key, pngs, samples, stop) =
                    (client.clone(), base.clone(), key.clone(), pngs.clone(), samples.clone(), stop.clone());
                let n = a.subjects;
                tokio::spawn(async move {
                    let mut i = w;
                    while !stop.load(Ordering::Relaxed) {
                        let s = i % n;
                        let t0 = Instant::now();
                        let r = client
                            .post(format!("{base}/v1/subjects/s{s}/verify"))
                            .bearer_auth(&key)
                            .header("content-type", "image/png")
                            .body(pngs[s].clone())
                            .send()
                            .await;
                        let (ok, model) = match r {
                            Ok(r) if r.status().is_success() => {
                                let v: serde_json::Value = r.json().await.unwrap_or_default();
                                (v["match"] == true, v["model_id"].as_str().unwrap_or_default().to_string())
                            }
                            _ => (false, String::new()),
                        };
                        samples.lock().expect("samples").push(Sample {
                            at: (t0 - began).as_secs_f64(),
                            ms: t0.elapsed().as_secs_f64() * 1e3,
                            ok,
                            model,
                        });
                        i += 4;
                    }
                })
            })
            .collect();
        let now = || began.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(5)).await;

        // The job: B is A's recipe with the next seed.
        let t_retrain = now();
        let mut cfg = card_a.training.config.clone();
        cfg.seed += 1;
        let gate = GateArgs { fmr: 1e-2, test_set: "test".into(), max_fnmr_loss: 0.02, max_ri_loss: 0.05 };
        let retrain = |cfg: dvsp_core::config::TrainConfig, out: std::path::PathBuf| dvsp_ops::retrain::Args {
            train: dvsp_core::train::TrainArgs {
                config: cfg,
                data: dvsp_core::data::DataArgs { data: card_a.training.dataset.parse().ok(), data_dir: None },
                out,
            },
            gate: gate.clone(),
            force: false,
            no_audit: true,
            db: db.clone(),
            models_dir: root.clone(),
            by: Some("bench".into()),
            // Re-embedding runs after the switch here, in its own process, so the migration
            // window (subjects verified with A) is under load too.
            reembed: false,
            keys: dvsp_server::config::KeyringArgs { template_keys: Some(keys.clone()) },
        };
        println!("\n## retrain B (A's configuration, seed {})", cfg.seed);
        dvsp_ops::retrain::run(retrain(cfg, tmp.path().join("b"))).await?;
        let t_promoted = now();
        let id_b = store.serving_model().await?.map(|m| m.id).unwrap_or_default();
        anyhow::ensure!(id_b != id_a, "the gate refused B: the rollout cannot be measured");
        while state.lineup().serving.card.model_id != id_b {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t_switched = now();
        println!("\nswitched to B {id_b} {:.2} s after the promotion committed", t_switched - t_promoted);
        tokio::time::sleep(Duration::from_secs(3)).await;

        println!("\n## dvsp reembed --to B (another process)");
        let t_reembed = now();
        let out = tokio::process::Command::new(&exe)
            .args(["reembed", "--to", &id_b, "--db", &db, "--models-dir"])
            .arg(&root)
            .arg("--template-keys")
            .arg(&keys)
            .args(["--measure", "--by", "bench"])
            .output()
            .await?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        anyhow::ensure!(out.status.success(), "reembed failed: {}", String::from_utf8_lossy(&out.stderr));
        let t_reembedded = now();
        // Every subject on B (the index takes the new templates in from the store).
        let mut on_b = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while on_b < a.subjects && Instant::now() < deadline {
            on_b = 0;
            for (s, png) in pngs.iter().take(a.subjects).enumerate() {
                let r = client
                    .post(format!("{base}/v1/subjects/s{s}/verify"))
                    .bearer_auth(&key)
                    .header("content-type", "image/png")
                    .body(png.clone())
                    .send()
                    .await?;
                let v: serde_json::Value = r.json().await?;
                on_b += (v["model_id"] == id_b.as_str() && v["migrating"] == false && v["match"] == true) as usize;
            }
        }
        let t_all_b = now();
        println!("{on_b} of {} subjects verified on B", a.subjects);
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop.store(true, Ordering::Relaxed);
        for t in load {
            t.await?;
        }
        let t_end = now();

        println!("\n## a bad candidate (one training step)");
        let mut bad = card_a.training.config.clone();
        (bad.epochs, bad.limit, bad.seed) = (1, bad.batch_size, bad.seed + 2);
        dvsp_ops::retrain::run(retrain(bad, tmp.path().join("bad"))).await?;
        let serving = store.serving_model().await?.map(|m| m.id).unwrap_or_default();
        println!("serving after the bad candidate: {serving} ({})", if serving == id_b { "B: refused" } else { "NOT B" });

        let samples = std::mem::take(&mut *samples.lock().expect("samples"));
        let errors = samples.iter().filter(|s| !s.ok).count();
        println!(
            "\n## the load: {} verifies over {:.0} s, {errors} errors (non-2xx or no match), answered by A {} and B {}",
            samples.len(),
            t_end,
            samples.iter().filter(|s| s.model == id_a).count(),
            samples.iter().filter(|s| s.model == id_b).count()
        );
        let phases = [
            ("steady on A (reference)", 0.0, t_retrain),
            ("retrain B (training shares the 2 cores)", t_retrain, t_promoted),
            ("swap: promotion to 2 s after the switch", t_promoted, t_switched + 2.0),
            ("reembed (another process)", t_reembed, t_reembedded),
            ("steady on B", t_all_b, t_end),
        ];
        println!("| phase | verifies | errors | p50 ms | p99 ms | p99 ratio to reference |\n|---|---|---|---|---|---|");
        let mut reference = None;
        for (name, from, to) in phases {
            let mut ms: Vec<f64> = samples.iter().filter(|s| s.at >= from && s.at < to).map(|s| s.ms).collect();
            ms.sort_by(f64::total_cmp);
            let e = samples.iter().filter(|s| s.at >= from && s.at < to && !s.ok).count();
            if ms.is_empty() {
                println!("| {name} | 0 | 0 | - | - | - |");
                continue;
            }
            let p99 = quantile(&ms, 0.99);
            let r = *reference.get_or_insert(p99);
            println!("| {name} | {} | {e} | {:.1} | {:.1} | {:.2} |", ms.len(), quantile(&ms, 0.5), p99, p99 / r);
        }
        let _ = stop_server.send(true);
        server.await??;
        anyhow::ensure!(errors == 0 && on_b == a.subjects, "the rollout had {errors} errors and {on_b} of {} subjects on B", a.subjects);
        Ok(())
    })
}
