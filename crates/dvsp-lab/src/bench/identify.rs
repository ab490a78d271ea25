//! `dvsp bench identify --model DIR --templates N[,N...]`: 1:N identification at gallery size
//! N. For each N, a temporary SQLite store gets N subjects with one random template each
//! (protected and sealed as enrollment does) through the bulk path, then:
//! - reference: the exhaustive search identify did before the index (read every template of
//!   the model from the store, open it, best distance per subject in a map, full sort);
//! - the index: loaded by a real server on the store (the load's time includes the model's), then identify over HTTP on loopback
//!   (inference included), and the search alone (`dvsp_index_search_seconds`);
//! - the machine's limit for that matrix: one streaming pass over N x d f32 in memory.
use std::collections::HashMap;
use std::time::Instant;

use rand::Rng;

use super::{post_png, probe_pngs, quantile};
use dvsp_custody::store::{SealedRow, Store};

/// Median seconds of `reps` runs of `f`.
fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn random_unit(rng: &mut impl Rng, d: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..d).map(|_| rng.random::<f32>() - 0.5).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

/// N subjects `s<i>` with one random template each in gallery `default`, under its epoch-1
/// transform, sealed: seconds taken.
async fn fill(
    store: &Store,
    keyring: &dvsp_custody::seal::Keyring,
    model_id: &str,
    d: usize,
    n: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let secret = dvsp_custody::protect::new_secret(keyring, "default", 1);
    store.insert_secret(&secret).await?;
    let q = dvsp_custody::protect::transform_of(keyring, &secret, d)?;
    let mut rng = rand::rng();
    let chunk = 10_000;
    for start in (0..n).step_by(chunk) {
        let ids: Vec<String> = (start..(start + chunk).min(n))
            .map(|i| format!("s{i}"))
            .collect();
        store.create_subjects("default", &ids).await?;
        let rows: Vec<(SealedRow, Option<f64>, Option<String>)> = ids
            .into_iter()
            .map(|s| {
                let f = q.apply(&random_unit(&mut rng, d));
                let row = SealedRow::new(
                    keyring,
                    uuid::Uuid::new_v4().to_string(),
                    "default".into(),
                    s,
                    model_id.to_string(),
                    1,
                    &f,
                );
                (row, None, None)
            })
            .collect();
        store.add_templates(&rows).await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The exhaustive search of before the index, top 5: seconds.
async fn exhaustive(
    store: &Store,
    keyring: &dvsp_custody::seal::Keyring,
    model_id: &str,
    probe: &[f32],
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut after = String::new();
    loop {
        let page = store
            .gallery_templates("default", model_id, &after, 100_000)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.id.clone();
        rows.extend(page);
    }
    let mut best: HashMap<&str, f64> = HashMap::new();
    for r in &rows {
        let f = keyring.open(&r.row(), &r.sealed)?;
        let d = dvsp_core::metrics::distance(probe, &f);
        let e = best.entry(r.subject_id.as_str()).or_insert(f64::INFINITY);
        *e = e.min(d);
    }
    let mut ranked: Vec<(&str, f64)> = best.into_iter().collect();
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(b.0)));
    ranked.truncate(5);
    anyhow::ensure!(!ranked.is_empty(), "the exhaustive search found nothing");
    Ok(started.elapsed().as_secs_f64())
}

pub fn run(a: &super::Args) -> anyhow::Result<()> {
    let dir = a
        .model
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("bench identify needs --model DIR"))?;
    anyhow::ensure!(
        !a.templates.is_empty(),
        "bench identify needs --templates N[,N...]"
    );
    let pngs = probe_pngs(dir)?;
    let card = dvsp_core::artifact::read_card(dir)?;
    let d = card.net.feature_dim as usize;
    let tmp = tempfile::tempdir()?;
    let keys = tmp.path().join("bench.keys");
    std::fs::write(
        &keys,
        dvsp_custody::seal::Keyring::new_key_line("bench")? + "\n",
    )?;
    let keyring = dvsp_custody::seal::Keyring::load(Some(&keys), None)?;
    let rt = tokio::runtime::Runtime::new()?;
    println!(
        "1:N identify on {} ({d}-d features), one template per subject, {} identify calls per size",
        dir.display(),
        a.requests
    );
    println!("| templates | bulk insert templates/s | exhaustive (reference) ms | index load s | identify HTTP p50 ms | p99 ms | index search ms | reference / search | templates/s searched | memory pass ms | memory pass / search | index bytes/template | RSS MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let result = rt.block_on(async {
        for &n in &a.templates {
            let db_path = tmp.path().join(format!("{n}.db"));
            let db = format!("sqlite://{}", db_path.display());
            let store = Store::connect(&db).await?;
            let inserted = fill(&store, &keyring, &card.model_id, d, n).await?;
            let mut rng = rand::rng();
            let probe = random_unit(&mut rng, d);
            let reps = if n >= 1_000_000 { 3 } else { 5 };
            let mut reference = Vec::new();
            for _ in 0..reps {
                reference.push(exhaustive(&store, &keyring, &card.model_id, &probe).await?);
            }
            reference.sort_by(f64::total_cmp);
            let reference = reference[reps / 2];
            let k = dvsp_server::auth::generate();
            let roles = [dvsp_server::auth::Role::Identify];
            store
                .insert_key(&k.row(&roles, Some("default"), dvsp_server::auth::ScorePolicy::Full))
                .await?;
            let args = dvsp_server::config::ServeArgs::from_argv([
                "serve", "--model", dir.to_str().unwrap_or_default(), "--db", &db,
                "--template-keys", keys.to_str().unwrap_or_default(),
                "--max-key-probes", "1000000000", "--max-attempts", "1000000000",
                "--max-subject-attempts", "1000000000",
            ])?;
            let loading = Instant::now();
            let state = args.state().await?;
            let load = loading.elapsed().as_secs_f64();
            let bytes = state.metrics.index_bytes.get() as f64;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}/v1/identify?top_k=5", listener.local_addr()?);
            let (stop, mut stopped) = tokio::sync::watch::channel(false);
            let server = tokio::spawn(dvsp_server::serve(listener, state.clone(), async move {
                let _ = stopped.wait_for(|s| *s).await;
            }));
            let client = reqwest::Client::new();
            post_png(&client, &url, &k.key, pngs[0].clone()).await?;
            let (s0, c0) = (
                state.metrics.index_search_seconds.get_sample_sum(),
                state.metrics.index_search_seconds.get_sample_count(),
            );
            let mut lat = Vec::new();
            for i in 0..a.requests {
                let t = Instant::now();
                post_png(&client, &url, &k.key, pngs[i % pngs.len()].clone()).await?;
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            lat.sort_by(f64::total_cmp);
            let searches = state.metrics.index_search_seconds.get_sample_count() - c0;
            let search = (state.metrics.index_search_seconds.get_sample_sum() - s0)
                / searches.max(1) as f64;
            let rss = super::status_mib("VmRSS");
            let _ = stop.send(true);
            server.await??;
            drop(state);
            // The limit: one pass over the same matrix, f32, in memory.
            let m: Vec<f32> = (0..n * d).map(|i| (i % 7) as f32).collect();
            let pass = median_secs(5, || {
                let mut acc = [0.0f32; 16];
                for c in m.chunks_exact(16) {
                    for (a, x) in acc.iter_mut().zip(c) {
                        *a += x;
                    }
                }
                std::hint::black_box(acc);
            });
            drop(m);
            println!(
                "| {n} | {:.0} | {:.1} | {load:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.3e} | {:.2} | {:.2} | {:.0} | {rss:.0} |",
                n as f64 / inserted,
                reference * 1e3,
                quantile(&lat, 0.5),
                quantile(&lat, 0.99),
                search * 1e3,
                reference / search,
                n as f64 / search,
                pass * 1e3,
                pass / search,
                bytes / n as f64,
            );
            drop(store);
            for ext in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{ext}", db_path.display()));
            }
        }
        Ok(())
    });
    result
}
