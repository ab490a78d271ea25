//! Benchmarks, each reported as ratios against a reference run of the same command:
//! `dvsp bench train`: training images/s and peak memory per backbone on random input
//! (reference: small CNN, dvib); `dvsp bench attack --model DIR`: CW-L2 pair-steps/s batched
//! vs one pair at a time (reference: one at a time) on test pairs of the model's data;
//! `dvsp bench serve --model DIR`: a bounded load generator on loopback against two real
//! servers (micro-batching on and off) sharing a temporary SQLite store: verify requests/s
//! and p50/p99 latency at concurrency 1, 8, 32, 128, then REST vs gRPC verify on one server
//! at concurrency 32 (reference: REST, batching off, concurrency 1); `dvsp bench http`: the
//! same routes loaded on several running servers in turns (reference: the first);
//! `dvsp bench identify`: 1:N search by gallery size (`identify.rs`); `dvsp bench rollout`:
//! retrain, promotion, switch and re-embedding under load (`rollout.rs`).
mod identify;
mod rollout;

use std::path::PathBuf;
use std::time::Instant;

use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Tensor};

use dvsp_core::config::{Backbone, Method, TrainConfig};
use dvsp_core::model::{Net, NetSpec};
use dvsp_core::spec::InputSpec;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum What {
    /// Training images/s and peak resident memory per backbone.
    Train,
    /// CW-L2 attack throughput, batched vs one pair at a time (needs --model).
    Attack,
    /// Verify throughput and latency of the service: micro-batching on vs off, REST vs gRPC
    /// (needs --model).
    Serve,
    /// Per-photo time of face detection, landmarks, alignment and embedding on the sample
    /// photos (reference: the embedding alone).
    Faces,
    /// The same load against running servers, e.g. builds before and after a change
    /// (reference: the first `--target`; `scripts/before_after.sh`).
    Http,
    /// Embedding throughput in fp32 (reference) and bf16 at batch 32 and 256 (needs --model).
    Precision,
    /// 1:N identify at each `--templates` gallery size: the in-memory index against the
    /// exhaustive store search it replaced and the machine's memory pass (needs --model).
    Identify,
    /// The retraining job's rollout under a steady verify load: retrain B, gate, promote,
    /// switch, re-embed, all subjects on B; p99 per phase against the steady phase on A
    /// (needs --model A).
    Rollout,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to measure.
    #[arg(value_enum)]
    pub what: What,
    /// Timed optimiser steps per case (after one warm-up step).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Model directory (for `attack`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Pairs in the batched attack run (`attack`); the one-at-a-time run uses a sixteenth.
    #[arg(long, default_value_t = 512)]
    pub pairs: usize,
    /// Verify requests per concurrency level and mode (`serve`), per target and route
    /// (`http`).
    #[arg(long, default_value_t = 1000)]
    pub requests: usize,
    /// `http`: a running server as NAME=URL (repeat; the first is the reference), its API key
    /// in `DVSP_BENCH_KEY_<NAME>`.
    #[arg(long)]
    pub target: Vec<String>,
    /// `http`: a route to load as NAME:PATH (repeat), POSTed a test image as image/png.
    #[arg(long)]
    pub route: Vec<String>,
    /// `http`: requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// `http`: rounds the requests are split into, the targets taking turns.
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// `identify`: gallery sizes, e.g. 10000,100000,1000000.
    #[arg(long, value_delimiter = ',')]
    pub templates: Vec<usize>,
    /// `rollout`: the store (default: a temporary SQLite file); its registry must be empty.
    #[arg(long)]
    pub db: Option<String>,
    /// `rollout`: subjects enrolled (with their images kept) and verified.
    #[arg(long, default_value_t = 50)]
    pub subjects: usize,
}

/// PNG bytes of the first `n` test-split images of `data`.
fn test_pngs(
    spec: &dvsp_core::data::DataSpec,
    input: &dvsp_core::spec::InputSpec,
    n: usize,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let split = spec.load(
        &dvsp_core::data::default_root(),
        Some((input.height as u32, input.width as u32)),
    )?;
    let test = split.test.head(n);
    let [c, h, w] = test.shape();
    (0..test.len() as i64)
        .map(|i| {
            let px = Vec::<u8>::try_from(
                test.images
                    .get(i)
                    .permute([1, 2, 0])
                    .contiguous()
                    .flatten(0, -1),
            )?;
            let mut out = std::io::Cursor::new(Vec::new());
            let color = if c == 1 {
                image::ExtendedColorType::L8
            } else {
                image::ExtendedColorType::Rgb8
            };
            image::write_buffer_with_format(
                &mut out,
                &px,
                w as u32,
                h as u32,
                color,
                image::ImageFormat::Png,
            )?;
            Ok(out.into_inner())
        })
        .collect()
}

/// Runs `total` calls of `call(i)` from `conc` concurrent tasks; returns requests/s and the
/// sorted latencies in ms.
async fn load<F, Fut>(conc: usize, total: usize, call: F) -> anyhow::Result<(f64, Vec<f64>)>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..conc)
        .map(|_| {
            let (next, call) = (next.clone(), call.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let t = Instant::now();
                    call(i).await?;
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                }
                anyhow::Ok(lat)
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let rps = lat.len() as f64 / start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok((rps, lat))
}

/// The `p` quantile of sorted values.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The probes of the benchmarks that load a server: 64 test images of the model's data set,
/// as PNG.
fn probe_pngs(dir: &std::path::Path) -> anyhow::Result<std::sync::Arc<Vec<Vec<u8>>>> {
    let card = dvsp_core::artifact::read_card(dir)?;
    Ok(std::sync::Arc::new(test_pngs(
        &card.training.dataset.parse()?,
        &card.net.input,
        64,
    )?))
}

/// POSTs `png` as image/png to `url` with `key`; an error unless the answer is a success.
async fn post_png(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    png: Vec<u8>,
) -> anyhow::Result<()> {
    let r = client
        .post(url)
        .bearer_auth(key)
        .header("content-type", "image/png")
        .body(png)
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "{}: {}", r.url(), r.status());
    r.bytes().await?;
    Ok(())
}

/// `bench http`: the same load against several running servers (e.g. the build before a
/// change and after it), interleaved round by round, each route's throughput reported as a
/// ratio to the first target's. Targets are `NAME=URL`; NAME's API key comes from the
/// environment variable `DVSP_BENCH_KEY_<NAME>` (never from the command line).
fn http(a: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        !a.target.is_empty(),
        "bench http needs --target NAME=URL (one or more)"
    );
    anyhow::ensure!(
        !a.route.is_empty(),
        "bench http needs --route NAME:PATH (one or more)"
    );
    anyhow::ensure!(
        a.concurrency >= 1 && a.rounds >= 1,
        "--concurrency and --rounds are at least 1"
    );
    let dir = a.model.as_ref().ok_or_else(|| {
        anyhow::anyhow!("bench http needs --model DIR (its test images are the probes)")
    })?;
    let pngs = probe_pngs(dir)?;
    let split = |s: &str, sep: char, what: &str| {
        s.split_once(sep)
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .ok_or_else(|| anyhow::anyhow!("{what} {s:?}: expected NAME{sep}VALUE"))
    };
    let targets = a
        .target
        .iter()
        .map(|t| {
            let (name, url) = split(t, '=', "--target")?;
            let var = format!("DVSP_BENCH_KEY_{}", name.to_uppercase());
            let key = std::env::var(&var)
                .map_err(|_| anyhow::anyhow!("set {var} to the API key of target {name}"))?;
            Ok((name, url, key))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let routes = a
        .route
        .iter()
        .map(|r| split(r, ':', "--route"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let per_round = a.requests.div_ceil(a.rounds).max(1);
    tokio::runtime::Runtime::new()?.block_on(async {
        let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
        println!("{} requests per target and route in {} interleaved rounds, concurrency {}", per_round * a.rounds, a.rounds, a.concurrency);
        println!("| route | target | requests/s | p50 ms | p99 ms | ratio to {} |\n|---|---|---|---|---|---|", targets[0].0);
        for (route, path) in &routes {
            let mut lat: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
            let mut secs = vec![0.0; targets.len()];
            for _ in 0..a.rounds {
                for (t, (_, url, key)) in targets.iter().enumerate() {
                    let (client, pngs, key, url) = (client.clone(), pngs.clone(), key.clone(), format!("{url}{path}"));
                    let start = Instant::now();
                    let (_, l) = load(a.concurrency, per_round, move |i| {
                        let (client, url, key, png) = (client.clone(), url.clone(), key.clone(), pngs[i % pngs.len()].clone());
                        async move { post_png(&client, &url, &key, png).await }
                    })
                    .await?;
                    secs[t] += start.elapsed().as_secs_f64();
                    lat[t].extend(l);
                }
            }
            let rps: Vec<f64> = lat.iter().zip(&secs).map(|(l, s)| l.len() as f64 / s).collect();
            for (t, (name, _, _)) in targets.iter().enumerate() {
                lat[t].sort_by(f64::total_cmp);
                println!("| {route} | {name} | {:.0} | {:.2} | {:.2} | {:.3} |", rps[t], quantile(&lat[t], 0.5), quantile(&lat[t], 0.99), rps[t] / rps[0]);
            }
        }
        Ok(())
    })
}

fn serve(a: &Args) -> anyhow::Result<()> {
    use dvsp_server::grpc::proto;
    let dir = a
        .model
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("bench serve needs --model DIR"))?;
    let pngs = probe_pngs(dir)?;
    let tmp = std::env::temp_dir().join(format!("dvsp-bench-{}.db", std::process::id()));
    let db = format!("sqlite://{}", tmp.display());
    let keyring = std::env::temp_dir().join(format!("dvsp-bench-{}.keys", std::process::id()));
    std::fs::write(
        &keyring,
        dvsp_custody::seal::Keyring::new_key_line("bench")? + "\n",
    )?;
    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(async {
        let key = {
            let store = dvsp_custody::store::Store::connect(&db).await?;
            let k = dvsp_server::auth::generate();
            let admin = [dvsp_server::auth::Role::Admin];
            let scores = dvsp_server::auth::ScorePolicy::Full;
            store.insert_key(&k.row(&admin, Some("default"), scores)).await?;
            store.create_subject("default", "bench", None).await?;
            k.key
        };
        let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
        println!("verify throughput on {} ({} threads), {} requests per cell", dir.display(), tch::get_num_threads(), a.requests);
        println!("| protocol | micro-batching | concurrency | requests/s | p50 ms | p99 ms | mean batch | ratio to reference |\n|---|---|---|---|---|---|---|---|");
        let mut reference = None;
        // REST with micro-batching off and on over four concurrencies, then REST vs gRPC on
        // one server at concurrency 32.
        let cells: [(&str, &str, &[usize]); 3] = [
            ("off", "1", &[1, 8, 32, 128]),
            ("on", "32", &[1, 8, 32, 128]),
            ("on", "32", &[32]),
        ];
        for (cell, (mode, batch, concs)) in cells.into_iter().enumerate() {
            let m = dir.to_str().unwrap_or_default();
            let args = dvsp_server::config::ServeArgs::from_argv(["serve", "--model", m, "--db", &db, "--template-keys", keyring.to_str().unwrap_or_default(), "--max-batch", batch, "--max-attempts", "1000000000", "--max-subject-attempts", "1000000000", "--max-key-probes", "1000000000", "--queue", "1024"])?;
            let state = args.state().await?;
            let batches = state.metrics.batch_size.with_label_values(&[&state.lineup().serving.card.model_id]);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let base = format!("http://{}", listener.local_addr()?);
            let grpc_url = format!("http://{}", grpc_listener.local_addr()?);
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            let server = tokio::spawn(dvsp_server::serve(listener, state.clone(), until(stopped.clone())));
            let grpc_server = tokio::spawn(dvsp_server::grpc::serve(grpc_listener, state, until(stopped)));
            if cell == 0 {
                post_png(&client, &format!("{base}/v1/subjects/bench/templates"), &key, pngs[0].clone()).await?;
            }
            let protocols: &[&str] = if cell == 2 { &["REST", "gRPC"] } else { &["REST"] };
            for &protocol in protocols {
                for &conc in concs {
                    let (b0, n0) = (batches.get_sample_sum(), batches.get_sample_count());
                    let (rps, lat) = if protocol == "REST" {
                        let (client, pngs, key, url) = (client.clone(), pngs.clone(), key.clone(), format!("{base}/v1/subjects/bench/verify"));
                        load(conc, a.requests, move |i| {
                            let (client, url, key, png) = (client.clone(), url.clone(), key.clone(), pngs[i % pngs.len()].clone());
                            async move { post_png(&client, &url, &key, png).await }
                        })
                        .await?
                    } else {
                        // One HTTP/2 connection multiplexes every call, as gRPC clients do.
                        let channel = tonic::transport::Endpoint::from_shared(grpc_url.clone())?.connect().await?;
                        let client = proto::verification_client::VerificationClient::new(channel);
                        let (pngs, key) = (pngs.clone(), key.clone());
                        load(conc, a.requests, move |i| {
                            let mut client = client.clone();
                            let mut req = tonic::Request::new(proto::VerifyRequest { subject_id: "bench".into(), image: pngs[i % pngs.len()].clone().into() });
                            let auth = format!("Bearer {key}").parse();
                            async move {
                                req.metadata_mut().insert("authorization", auth?);
                                client.verify(req).await?;
                                Ok(())
                            }
                        })
                        .await?
                    };
                    let mean_batch = (batches.get_sample_sum() - b0) / (batches.get_sample_count() - n0).max(1) as f64;
                    let r = *reference.get_or_insert(rps);
                    println!("| {protocol} | {mode} | {conc} | {rps:.0} | {:.2} | {:.2} | {mean_batch:.1} | {:.2} |", quantile(&lat, 0.5), quantile(&lat, 0.99), rps / r);
                }
            }
            let _ = stop.send(true);
            server.await??;
            grpc_server.await??;
        }
        Ok(())
    });
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", tmp.display()));
    }
    let _ = std::fs::remove_file(&keyring);
    result
}

/// `bench precision`: images/s of the serving embedding (feature and spread in one pass) on
/// the model's input shape, fp32 (reference) then bf16, at batch 32 (the service's largest
/// micro-batch) and at batch 256 (where per-batch overheads matter less), `20 x --steps`
/// timed batches each.
fn precision(a: &Args) -> anyhow::Result<()> {
    use dvsp_core::model::Precision;
    let dir = a
        .model
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("bench precision needs --model DIR"))?;
    let batches = 20 * a.steps.max(1);
    println!(
        "embedding throughput of {}, {} threads, {batches} batches per cell",
        dir.display(),
        tch::get_num_threads()
    );
    println!("| batch | precision | img/s | ratio to fp32 at that batch |\n|---|---|---|---|");
    for batch in [32, 256] {
        let mut reference = None;
        for p in [Precision::Fp32, Precision::Bf16] {
            let mut model = dvsp_core::artifact::load(dir, dvsp_core::device())?;
            model.net.set_precision(&mut model.vs, p);
            let input = &model.card.net.input;
            let x = Tensor::rand(
                [batch, input.channels, input.height, input.width],
                (Kind::Float, model.vs.device()),
            );
            let _guard = tch::no_grad_guard();
            let run = || {
                let (f, s) = model.net.embed(&x);
                let _ = Vec::<f32>::try_from(f.flatten(0, -1));
                s.map(Vec::<f32>::try_from);
            };
            for _ in 0..5 {
                run();
            }
            let t = Instant::now();
            for _ in 0..batches {
                run();
            }
            let ips = (batch as usize * batches) as f64 / t.elapsed().as_secs_f64();
            let r = *reference.get_or_insert(ips);
            println!("| {batch} | {p:?} | {ips:.0} | {:.2} |", ips / r);
        }
    }
    Ok(())
}

/// A memory figure of this process from /proc/self/status (`field`: VmHWM, VmRSS), in MiB.
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Peak resident set size (VmHWM) in MiB, reset beforehand by `reset_peak`.
fn peak_mib() -> f64 {
    status_mib("VmHWM")
}

/// Resets the kernel's peak-RSS counter of this process (Linux `clear_refs` value 5).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Case {
    name: &'static str,
    backbone: Backbone,
    method: Method,
    shape: [i64; 3],
    batch: i64,
}

fn run_case(c: &Case, steps: usize) -> anyhow::Result<(f64, f64)> {
    let device = dvsp_core::device();
    let cfg = TrainConfig {
        method: c.method,
        batch_size: c.batch as usize,
        ..TrainConfig::default()
    };
    let vs = nn::VarStore::new(device);
    let mut net = Net::new(
        &vs.root(),
        NetSpec {
            method: c.method,
            backbone: c.backbone,
            input: InputSpec::for_shape(c.shape),
            feature_dim: cfg.feature_dim,
            classes: 10,
            radius: cfg.radius,
        },
    );
    let mut opt = nn::Adam::default().build(&vs, cfg.lr)?;
    let [ch, h, w] = c.shape;
    let x = Tensor::rand([c.batch, ch, h, w], (Kind::Float, device));
    let y = Tensor::randint(10, [c.batch], (Kind::Int64, device));
    reset_peak();
    let mut step = |x: &Tensor| -> anyhow::Result<()> {
        let (out, y) = dvsp_core::train::step_loss(&net, x, &y, &cfg, 0)?;
        opt.backward_step(&out.loss);
        net.after_step(&out, &y, &cfg);
        Ok(())
    };
    step(&x)?;
    let t = Instant::now();
    for _ in 0..steps {
        step(&x)?;
    }
    Ok((
        (steps as i64 * c.batch) as f64 / t.elapsed().as_secs_f64(),
        peak_mib(),
    ))
}

fn attack(a: &Args) -> anyhow::Result<()> {
    let dir = a
        .model
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("bench attack needs --model DIR"))?;
    let device = dvsp_core::device();
    let model = dvsp_core::artifact::load(dir, device)?;
    let input = &model.card.net.input;
    let spec: dvsp_core::data::DataSpec = model.card.training.dataset.parse()?;
    let split = spec.load(
        &dvsp_core::data::default_root(),
        Some((input.height as u32, input.width as u32)),
    )?;
    let labels: Vec<i64> = Vec::<i64>::try_from(&split.test.labels)?;
    let per_class_pair = a
        .pairs
        .div_ceil(split.test.classes * (split.test.classes - 1));
    let pairs = dvsp_core::audit::sample_pairs(&labels, split.test.classes, per_class_pair, 0);
    // Early stopping off: every pair takes exactly `steps` steps.
    let cfg = dvsp_core::config::CwConfig {
        steps: a.steps,
        search: 1,
        patience: usize::MAX,
        ..Default::default()
    };
    let take = |n: usize| -> (Tensor, Tensor) {
        let idx = |f: fn(&(usize, usize, usize, usize)) -> usize| {
            Tensor::from_slice(
                &pairs
                    .iter()
                    .take(n)
                    .map(|p| f(p) as i64)
                    .collect::<Vec<_>>(),
            )
        };
        let x1 =
            dvsp_core::data::to_input(&split.test.images.index_select(0, &idx(|p| p.2)), device);
        let x2 =
            dvsp_core::data::to_input(&split.test.images.index_select(0, &idx(|p| p.3)), device);
        (
            x1,
            tch::no_grad(|| dvsp_core::model::unit(&model.net.features(&x2))),
        )
    };
    let t = dvsp_core::config::ThresholdAt::Eer.from_card(&model.card)?;
    let single = (a.pairs / 16).max(1);
    let (x1, target) = take(single);
    let t0 = Instant::now();
    for i in 0..single as i64 {
        let target = target.narrow(0, i, 1);
        let goal = dvsp_core::attack::Goal { target: &target, t };
        dvsp_core::attack::cw::attack(&model.net, &x1.narrow(0, i, 1), goal, &cfg);
    }
    let one = (single * a.steps) as f64 / t0.elapsed().as_secs_f64();
    let (x1, target) = take(a.pairs);
    let t0 = Instant::now();
    let goal = dvsp_core::attack::Goal { target: &target, t };
    dvsp_core::attack::cw::attack(&model.net, &x1, goal, &cfg);
    let batched = (a.pairs.min(pairs.len()) * a.steps) as f64 / t0.elapsed().as_secs_f64();
    println!(
        "CW-L2 attack throughput on {} ({} threads, {} steps)",
        dir.display(),
        tch::get_num_threads(),
        a.steps
    );
    println!("| mode | pairs | pair-steps/s | ratio to reference |\n|---|---|---|---|");
    println!("| one pair at a time (reference) | {single} | {one:.1} | 1.00 |");
    println!(
        "| batched | {} | {batched:.1} | {:.2} |",
        a.pairs.min(pairs.len()),
        batched / one
    );
    Ok(())
}

/// Mean milliseconds of `f` over `reps` runs on every photo (after one warm-up run each).
fn per_photo(
    photos: &[Tensor],
    reps: usize,
    mut f: impl FnMut(&Tensor) -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    for p in photos {
        f(p)?;
    }
    let t0 = Instant::now();
    for _ in 0..reps {
        for p in photos {
            f(p)?;
        }
    }
    Ok(t0.elapsed().as_secs_f64() * 1e3 / (reps * photos.len()) as f64)
}

fn faces(a: &Args) -> anyhow::Result<()> {
    use dvsp_core::face::{photo, FaceApi, FaceRecognitionNet};
    use dvsp_core::spec::FaceCrop;
    let _guard = tch::no_grad_guard();
    let root = dvsp_core::face::faces_root();
    let dir = dvsp_core::face::model_dir();
    let paths: Vec<PathBuf> = dvsp_core::data::faces::photos(&root)?
        .into_iter()
        .flat_map(|(_, v)| v)
        .collect();
    let photos = paths
        .iter()
        .map(|p| dvsp_core::face::load_rgb(p))
        .collect::<dvsp_core::Result<Vec<_>>>()?;
    let api = FaceApi::load(&dir)?;
    let (_vs, net) = FaceRecognitionNet::load(&dir, tch::Device::Cpu)?;
    let crops: Vec<Tensor> = photos
        .iter()
        .map(|p| {
            Ok(photo::best_face(&api, p, FaceCrop::Dlib150)?
                .ok_or_else(|| anyhow::anyhow!("no face"))?
                .1)
        })
        .collect::<anyhow::Result<_>>()?;
    let reps = a.steps.max(1);
    let mut next = 0;
    let embed = per_photo(&photos, reps, |_| {
        let _ = net.forward(&crops[next % crops.len()].unsqueeze(0));
        next += 1;
        Ok(())
    })?;
    let detect = per_photo(&photos, reps, |p| {
        api.detector
            .detect(p, FaceApi::INPUT_SIZE, FaceApi::SCORE_THRESHOLD)?;
        Ok(())
    })?;
    let landmarks = per_photo(&photos, reps, |p| {
        api.faces(p)?;
        Ok(())
    })?;
    let align = per_photo(&photos, reps, |p| {
        photo::best_face(&api, p, FaceCrop::Sphereface112x96)?;
        Ok(())
    })?;
    let full = per_photo(&photos, reps, |p| {
        let (_, c) = photo::best_face(&api, p, FaceCrop::Dlib150)?
            .ok_or_else(|| anyhow::anyhow!("no face"))?;
        let _ = net.forward(&c.unsqueeze(0));
        Ok(())
    })?;
    let sizes: Vec<String> = photos
        .iter()
        .map(|p| format!("{}x{}", p.size()[2], p.size()[1]))
        .collect();
    println!(
        "face pipeline per photo on {} photos ({}), {} threads, {reps} runs each",
        photos.len(),
        sizes.join(", "),
        tch::get_num_threads()
    );
    println!("| stage | ms per photo | ratio to reference |\n|---|---|---|");
    for (name, ms) in [
        ("embedding a 150x150 crop (reference)", embed),
        ("detection (tiny face detector, 416)", detect),
        ("detection + 68 landmarks", landmarks),
        ("detection + landmarks + SphereFace 112x96 alignment", align),
        (
            "detection + landmarks + dlib crop + embedding (what the service does)",
            full,
        ),
    ] {
        println!("| {name} | {ms:.1} | {:.2} |", ms / embed);
    }
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a.what {
        What::Attack => return attack(&a),
        What::Serve => return serve(&a),
        What::Faces => return faces(&a),
        What::Http => return http(&a),
        What::Identify => return identify::run(&a),
        What::Precision => return precision(&a),
        What::Rollout => return rollout::run(&a),
        What::Train => {}
    }
    let cases = [
        Case {
            name: "small 1x28x28, dvib (reference)",
            backbone: Backbone::Small,
            method: Method::Dvib,
            shape: [1, 28, 28],
            batch: 128,
        },
        Case {
            name: "small 1x28x28, dvsp (+eq. 15 adversarial)",
            backbone: Backbone::Small,
            method: Method::Dvsp,
            shape: [1, 28, 28],
            batch: 128,
        },
        Case {
            name: "sphere20 3x112x96, dvib",
            backbone: Backbone::Sphere20,
            method: Method::Dvib,
            shape: [3, 112, 96],
            batch: 16,
        },
    ];
    println!(
        "training throughput, {} threads, {} steps per case",
        tch::get_num_threads(),
        a.steps
    );
    println!("| case | batch | img/s | ratio to reference | peak RSS MiB |\n|---|---|---|---|---|");
    let mut reference = None;
    for c in &cases {
        let steps = if c.backbone == Backbone::Sphere20 {
            a.steps.div_ceil(4)
        } else {
            a.steps
        };
        let (ips, mib) = run_case(c, steps)?;
        let r = *reference.get_or_insert(ips);
        println!(
            "| {} | {} | {ips:.1} | {:.4} | {mib:.0} |",
            c.name,
            c.batch,
            ips / r
        );
    }
    Ok(())
}
