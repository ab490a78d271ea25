//! What the service tests share: a real (small, trained once and cached) DVSP model, real
//! MNIST digits as PNG, a real server on loopback ports, API keys, and a fresh PostgreSQL
//! database per run. Each test binary uses part of it.
#![allow(dead_code)]
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::OnceLock;

use dvsp_custody::store::Store;
use dvsp_server::auth;
use reqwest::{Client, StatusCode};
use serde_json::Value;

/// A DVSP model trained on 20,000 MNIST images for 3 epochs and evaluated (thresholds in
/// its card), cached in cargo's test tmpdir across runs. Servers run at FMR 1e-2.
pub fn model() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        trained(
            "server-model",
            &dvsp_core::config::TrainConfig {
                epochs: 3,
                limit: 20_000,
                ..Default::default()
            },
        )
    })
    .clone()
}

/// A model trained on MNIST with `cfg` and evaluated, in cargo's test tmpdir under `name`;
/// reused while its card says it was trained with `cfg` and evaluated. One at a time: two
/// tests of one binary asking for the same model must not train it into one folder together.
pub fn trained(name: &str, cfg: &dvsp_core::config::TrainConfig) -> PathBuf {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _held = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let cached = dvsp_core::artifact::load(&dir, tch::Device::Cpu)
        .is_ok_and(|m| m.card.training.config == *cfg && m.card.metrics.contains_key("test"));
    if !cached {
        let split = dvsp_core::data::DataSpec::Mnist
            .load(&dvsp_core::data::default_root(), None)
            .expect("MNIST from `make setup`");
        dvsp_core::train::train(
            cfg,
            &dvsp_core::data::DataSpec::Mnist,
            &split,
            &dir,
            tch::Device::Cpu,
        )
        .unwrap();
        dvsp_core::eval::evaluate(
            &dir,
            &dvsp_core::data::DataArgs {
                data: None,
                data_dir: None,
            },
            dvsp_core::model::Precision::Fp32,
        )
        .unwrap();
    }
    dir
}

/// PNG bytes of test-split digits: `digits(3, 4)` = four different '3's.
pub fn digits(d: i64, n: usize) -> Vec<Vec<u8>> {
    static TEST: OnceLock<(Vec<u8>, Vec<i64>)> = OnceLock::new();
    let (px, labels) = TEST.get_or_init(|| {
        let split = dvsp_core::data::DataSpec::Mnist
            .load(&dvsp_core::data::default_root(), None)
            .unwrap();
        (
            Vec::<u8>::try_from(split.test.images.flatten(0, -1)).unwrap(),
            Vec::<i64>::try_from(&split.test.labels).unwrap(),
        )
    });
    labels
        .iter()
        .enumerate()
        .filter(|(_, &l)| l == d)
        .take(n)
        .map(|(i, _)| {
            let img =
                image::GrayImage::from_raw(28, 28, px[i * 784..(i + 1) * 784].to_vec()).unwrap();
            let mut out = Vec::new();
            img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
                .unwrap();
            out
        })
        .collect()
}

/// A real server: HTTP, gRPC and metrics on loopback ports, sharing one state.
pub struct Server {
    pub base: String,
    pub grpc: String,
    pub metrics: String,
    pub state: dvsp_server::AppState,
    pub stop: Option<tokio::sync::watch::Sender<bool>>,
    pub handles: Vec<tokio::task::JoinHandle<()>>,
}

/// The template keyring every test server seals with (one per test binary run).
pub fn keyring_file() -> &'static str {
    static FILE: OnceLock<String> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("dvsp-test-{}.keys", std::process::id()));
        let line = dvsp_custody::seal::Keyring::new_key_line("test").unwrap();
        std::fs::write(&path, line + "\n").unwrap();
        path.to_str().unwrap().to_string()
    })
}

pub fn keyring() -> dvsp_custody::seal::Keyring {
    dvsp_custody::seal::Keyring::load(Some(std::path::Path::new(keyring_file())), None).unwrap()
}

impl Server {
    pub async fn start(db: &str, extra: &[&str]) -> Server {
        let model = model();
        let mut argv = vec![
            "serve",
            "--model",
            model.to_str().unwrap(),
            "--db",
            db,
            "--max-body-bytes",
            "200000",
            "--fmr",
            "1e-2",
        ];
        // The shared keyring unless the test brings its own.
        if !extra.contains(&"--template-keys") {
            argv.extend_from_slice(&["--template-keys", keyring_file()]);
        }
        argv.extend_from_slice(extra);
        let args = dvsp_server::config::ServeArgs::from_argv(argv).unwrap();
        let state = args.state().await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let grpc = format!("http://{}", grpc_listener.local_addr().unwrap());
        let metrics = format!("http://{}/metrics", metrics_listener.local_addr().unwrap());
        let (stop, rx) = tokio::sync::watch::channel(false);
        let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let (grpc_state, grpc_rx) = (state.clone(), rx.clone());
        let (metrics_state, metrics_rx) = (state.clone(), rx.clone());
        let http_state = state.clone();
        let handles = vec![
            tokio::spawn(async move {
                dvsp_server::serve_metrics(metrics_listener, metrics_state, until(metrics_rx))
                    .await
                    .unwrap()
            }),
            tokio::spawn(async move {
                dvsp_server::grpc::serve(grpc_listener, grpc_state, until(grpc_rx))
                    .await
                    .unwrap()
            }),
            tokio::spawn(async move {
                dvsp_server::serve(listener, http_state, until(rx))
                    .await
                    .unwrap()
            }),
        ];
        Server {
            base,
            grpc,
            metrics,
            state,
            stop: Some(stop),
            handles,
        }
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(true);
        for h in self.handles.drain(..) {
            h.await.unwrap();
        }
    }

    pub fn url(&self, p: &str) -> String {
        format!("{}{p}", self.base)
    }
}

/// Keys with full scores: a global admin, and of gallery `default` an enroller (enroll, read)
/// and a verifier (verify, identify, read).
pub struct Keys {
    pub admin: String,
    pub enroll: String,
    pub verify: String,
}

/// A new key in `gallery` (`None`: global) with `roles` and `scores`.
pub async fn key_with(
    db: &str,
    roles: &[auth::Role],
    gallery: Option<&str>,
    scores: auth::ScorePolicy,
) -> String {
    let store = Store::connect(db).await.unwrap();
    let k = auth::generate();
    store
        .insert_key(&k.row(roles, gallery, scores))
        .await
        .unwrap();
    k.key
}

pub async fn keys(db: &str) -> Keys {
    use auth::Role::*;
    let full = auth::ScorePolicy::Full;
    Keys {
        admin: key_with(db, &[Admin], None, full).await,
        enroll: key_with(db, &[Enroll, Read], Some("default"), full).await,
        verify: key_with(db, &[Verify, Identify, Read], Some("default"), full).await,
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub fn png_body(c: &Client, url: &str, key: &str, png: &[u8]) -> reqwest::RequestBuilder {
    c.post(url)
        .bearer_auth(key)
        .header("content-type", "image/png")
        .body(png.to_vec())
}

pub fn assert_error(r: &(StatusCode, Value), status: u16) {
    assert_eq!(r.0.as_u16(), status, "{:?}", r.1);
    assert!(
        r.1["error"].is_string() && r.1["message"].is_string(),
        "not a JSON error: {:?}",
        r.1
    );
}

/// A fresh PostgreSQL database for this run, dropped afterwards.
pub struct PgDb {
    pub url: String,
    pub name: String,
}

impl PgDb {
    const ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

    pub async fn new() -> PgDb {
        let admin = std::env::var("DVSP_TEST_PG").unwrap_or(Self::ADMIN.into());
        let name = format!("dvsp_test_{}", uuid::Uuid::new_v4().simple());
        let pool = sqlx::PgPool::connect(&admin)
            .await
            .expect("PostgreSQL on 127.0.0.1:5432 (see README)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .unwrap();
        let url = match admin.rfind('/') {
            Some(i) => format!("{}/{name}", &admin[..i]),
            None => unreachable!(),
        };
        PgDb { url, name }
    }

    pub async fn drop_db(self) {
        let admin = std::env::var("DVSP_TEST_PG").unwrap_or(Self::ADMIN.into());
        let pool = sqlx::PgPool::connect(&admin).await.unwrap();
        let _ = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&pool)
        .await;
    }
}

/// Calls `f` every 50 ms until it holds: the time it took (panics after `limit`).
pub async fn within<F, Fut>(limit: std::time::Duration, what: &str, mut f: F) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Two tests of the async fn `body(db_url)`, as `body::on_sqlite` (a fresh SQLite file) and
/// `body::on_postgres` (a fresh PostgreSQL database, dropped afterwards): both stores must
/// behave the same.
#[macro_export]
macro_rules! on_both_stores {
    ($body:ident) => {
        mod $body {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let db = format!("sqlite://{}", dir.path().join("test.db").display());
                super::$body(&db).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                let pg = $crate::common::PgDb::new().await;
                super::$body(&pg.url).await;
                pg.drop_db().await;
            }
        }
    };
}
