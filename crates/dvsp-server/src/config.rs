//! The service's configuration from flags and environment (`dvsp serve`, the tests and the
//! benchmarks build the service from it), and the keyring's source.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dvsp_custody::seal::Keyring;
use dvsp_custody::store::{PoolConfig, Store};

use crate::served::{Loading, OperatingPoint, Served};
use crate::tls::CertFiles;
use crate::{Batching, Limits};

/// Where the template keyring comes from: `--template-keys FILE` (env
/// `DVSP_TEMPLATE_KEYS_FILE`) or the keyring text itself in `DVSP_TEMPLATE_KEYS` (e.g. a
/// Kubernetes Secret as a variable); see `dvsp_custody::seal`.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyringArgs {
    /// The template keyring file: `<key id> <base64 of 32 bytes>` per line, the last one seals.
    #[arg(long = "template-keys", env = "DVSP_TEMPLATE_KEYS_FILE")]
    pub template_keys: Option<PathBuf>,
}

impl KeyringArgs {
    pub fn load(&self) -> anyhow::Result<Keyring> {
        let text = std::env::var("DVSP_TEMPLATE_KEYS").ok();
        Ok(Keyring::load(
            self.template_keys.as_deref(),
            text.as_deref(),
        )?)
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Model directory (evaluated: thresholds come from its card).
    #[arg(long, env = "DVSP_MODEL", required_unless_present = "models_dir")]
    pub model: Option<PathBuf>,
    /// Serve the registry's serving model (`dvsp models promote`) from this models directory;
    /// it takes precedence over --model (which the image sets by default).
    #[arg(long, env = "DVSP_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Template store: sqlite://PATH (embedded, default) or postgres://...
    #[arg(long, env = "DVSP_DB", default_value = "sqlite://dvsp.db")]
    pub db: String,
    /// The master keys templates are sealed with (required: templates are encrypted at rest).
    #[command(flatten)]
    pub keys: KeyringArgs,
    /// The REST API's address (and the console's).
    #[arg(long, env = "DVSP_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Also serve the gRPC API (proto/dvsp/v1/dvsp.proto) here, e.g. 127.0.0.1:50051.
    #[arg(long, env = "DVSP_GRPC_BIND")]
    pub grpc_bind: Option<String>,
    /// TLS certificate chain (PEM) of the REST and gRPC ports, re-read when the file changes.
    /// Without it both ports serve plaintext (TLS terminated in front, e.g. by a mesh).
    #[arg(long, env = "DVSP_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "DVSP_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Do not apply migrations (they run elsewhere: `dvsp db migrate`, e.g. a Kubernetes
    /// Job); refuse to start unless the store's schema is exactly this binary's.
    #[arg(long, env = "DVSP_NO_MIGRATE")]
    pub no_migrate: bool,
    /// Prometheus `/metrics`, on a port of its own (never exposed with the API; plaintext).
    #[arg(long, env = "DVSP_METRICS_BIND", default_value = "127.0.0.1:9464")]
    pub metrics_bind: String,
    /// Operating point: the card's threshold at this false match rate.
    #[arg(long, env = "DVSP_FMR", default_value_t = 1e-3)]
    pub fmr: f64,
    /// An explicit cosine-distance threshold T (overrides --fmr).
    #[arg(long, env = "DVSP_THRESHOLD")]
    pub threshold: Option<f64>,
    /// Refuse probes whose posterior spread r(x) (eq. 14) exceeds this (dvsp/dvib models).
    #[arg(long, env = "DVSP_MAX_UNCERTAINTY")]
    pub max_uncertainty: Option<f64>,
    /// Inference arithmetic: fp32, or bf16 (check its EER first: `dvsp eval --precision bf16`).
    #[arg(long, env = "DVSP_PRECISION", value_enum, default_value_t = dvsp_core::model::Precision::Fp32)]
    pub precision: dvsp_core::model::Precision,
    /// Largest micro-batch of the inference worker (1 = no batching; default 32 on the CPU,
    /// 128 on a GPU).
    #[arg(long, env = "DVSP_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// Longest wait for more work before running a micro-batch that others are already
    /// waiting in, in milliseconds (a job alone runs at once). Default 0 on the CPU (take what
    /// is queued: measured best there, README), 2 on a GPU (a large fixed cost per batch).
    #[arg(long, env = "DVSP_MAX_WAIT_MS")]
    pub max_wait_ms: Option<u64>,
    /// Inference jobs allowed to wait; beyond it requests get 503 with Retry-After.
    #[arg(long, env = "DVSP_QUEUE", default_value_t = 256)]
    pub queue: usize,
    /// Largest request body in bytes; beyond it 413 before the body is read.
    #[arg(long, env = "DVSP_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest image accepted, in pixels (checked from the header before decoding; 24 MP =
    /// 6000x4000). A decode may allocate 4 bytes per pixel of it.
    #[arg(long, env = "DVSP_MAX_PIXELS", default_value_t = crate::decode::MAX_PIXELS)]
    pub max_pixels: u64,
    /// Attempts on a subject by one key per window before 429 (verify, and identify
    /// revealing it: then it is withheld).
    #[arg(long, env = "DVSP_MAX_ATTEMPTS", default_value_t = 30)]
    pub max_attempts: i64,
    /// Attempts on a subject by all keys together per window.
    #[arg(long, env = "DVSP_MAX_SUBJECT_ATTEMPTS", default_value_t = 300)]
    pub max_subject_attempts: i64,
    /// Probes (verify, pair verify, identify) per API key per window before 429.
    #[arg(long, env = "DVSP_MAX_KEY_PROBES", default_value_t = 1200)]
    pub max_key_probes: i64,
    /// The window of the attempt and probe limits, in seconds.
    #[arg(long, env = "DVSP_ATTEMPT_WINDOW_SECS", default_value_t = 60)]
    pub attempt_window_secs: u64,
    /// Longest time a request may take; then a JSON 408.
    #[arg(long, env = "DVSP_TIMEOUT_SECS", default_value_t = 30)]
    pub timeout_secs: u64,
    /// Close connections that have not sent a whole request head within this (slow-header
    /// clients, idle keep-alive connections).
    #[arg(long, env = "DVSP_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Open connections on the REST port; beyond it the oldest idle connection is closed, or
    /// the new one gets 503 when all are serving requests. Keep it below `ulimit -n`.
    #[arg(long, env = "DVSP_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// REST `/v1` requests served at once; beyond it 503 with Retry-After, before any work.
    #[arg(long, env = "DVSP_MAX_IN_FLIGHT", default_value_t = 512)]
    pub max_in_flight: usize,
    /// Store connections per replica (default: SQLite 8, PostgreSQL 16).
    #[arg(long, env = "DVSP_DB_MAX_CONNECTIONS")]
    pub db_max_connections: Option<u32>,
    /// How often the in-memory gallery index polls the store for changes made elsewhere
    /// (other replicas, `dvsp galleries renew`); PostgreSQL also notifies at once.
    #[arg(long, env = "DVSP_INDEX_POLL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub index_poll_ms: u64,
    /// Keep every enrollment image, sealed like the templates (AES-256-GCM under the template
    /// keys) and deleted with its subject, so that `dvsp reembed` can embed it with a new
    /// model instead of the subject being enrolled again. Biometric data: opt-in.
    #[arg(long, env = "DVSP_RETAIN_IMAGES")]
    pub retain_images: bool,
    /// With --models-dir: how often the registry is read for a newly promoted model
    /// (PostgreSQL also notifies at once).
    #[arg(long, env = "DVSP_REGISTRY_POLL_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(50..=600_000))]
    pub registry_poll_ms: u64,
    /// Longest wait for a free store connection; then the request is 503 with Retry-After.
    #[arg(long, env = "DVSP_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 5000)]
    pub db_acquire_timeout_ms: u64,
}

impl ServeArgs {
    /// The configuration `dvsp serve` takes from `argv` (its first item is the command's
    /// name), then the environment, then the defaults: how the tests and the benchmarks
    /// build the service.
    pub fn from_argv<I, T>(argv: I) -> Result<ServeArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            args: ServeArgs,
        }
        <Serve as clap::Parser>::try_parse_from(argv).map(|s| s.args)
    }

    /// Loads the model and store, starts the inference worker, loads the gallery index and
    /// starts keeping it in step.
    pub async fn state(&self) -> anyhow::Result<crate::AppState> {
        let pool = PoolConfig {
            max_connections: self.db_max_connections,
            acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms),
        };
        let opened = match self.no_migrate {
            true => Store::connect_unmigrated(&self.db, pool).await,
            false => Store::connect_with(&self.db, pool)
                .await
                .map_err(Into::into),
        };
        let store = opened.with_context(|| {
            format!(
                "opening the store {}",
                dvsp_custody::store::redact(&self.db)
            )
        })?;
        let operating_point = match self.threshold {
            Some(t) => OperatingPoint::Explicit(t),
            None => OperatingPoint::Fmr(self.fmr),
        };
        let loading = Loading {
            operating_point,
            batching: Batching {
                max_batch: self.max_batch,
                max_wait: self.max_wait_ms.map(Duration::from_millis),
                queue: self.queue,
            },
            precision: self.precision,
            max_uncertainty: self.max_uncertainty,
        };
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let (serving, previous) = match (&self.models_dir, &self.model) {
            (Some(root), _) => {
                anyhow::ensure!(
                    self.threshold.is_none(),
                    "--threshold is one model's; with --models-dir each model's T comes from its card at --fmr"
                );
                let row = store.serving_model().await?.context(
                    "--models-dir: no model serves in the registry yet: `dvsp models register`, then `dvsp models promote`",
                )?;
                let serving = Served::load_registered(root, &row, &loading, metrics.clone())?;
                // The model served before stays loaded for subjects not yet re-embedded; one
                // that no longer loads is left out (its subjects get 409 until re-embedded).
                let previous = match store.replaced_by(&row.id).await? {
                    Some(id) => match store.model(&id).await? {
                        Some(prev) => Served::load_registered(root, &prev, &loading, metrics.clone())
                            .inspect_err(|e| {
                                tracing::warn!(model = %id, error = %format!("{e:#}"), "the previous model did not load; its subjects need re-embedding")
                            })
                            .ok(),
                        None => None,
                    },
                    None => None,
                };
                (serving, previous)
            }
            (None, Some(dir)) => (Served::load(dir, &loading, metrics.clone())?, None),
            (None, None) => anyhow::bail!("give --model DIR or --models-dir DIR"),
        };
        let keyring = self.keys.load()?;
        let plaintext = store.count_plaintext().await?;
        anyhow::ensure!(
            plaintext == 0,
            "{plaintext} templates are stored in plaintext (from before encryption at rest): \
             seal them first with `dvsp db rotate-key --db ... --template-keys ...`"
        );
        let limits = Limits {
            max_body_bytes: self.max_body_bytes,
            max_pixels: self.max_pixels,
            max_uncertainty: self.max_uncertainty,
            max_attempts: self.max_attempts,
            max_subject_attempts: self.max_subject_attempts,
            max_key_probes: self.max_key_probes,
            attempt_window: Duration::from_secs(self.attempt_window_secs),
            timeout: Duration::from_secs(self.timeout_secs),
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            max_connections: self.max_connections,
            max_in_flight: self.max_in_flight,
        };
        let setup = crate::Setup {
            store,
            keyring,
            loading,
            limits,
            retain_images: self.retain_images,
        };
        let state = crate::App::new(setup, metrics, serving, previous);
        state
            .clone()
            .sync_index(Duration::from_millis(self.index_poll_ms))
            .await
            .context("loading the gallery index")?;
        if let Some(root) = &self.models_dir {
            state.watch_registry(root.clone(), Duration::from_millis(self.registry_poll_ms));
        }
        Ok(state)
    }

    /// The serving certificate of `--tls-cert`/`--tls-key` (None: plaintext); it starts the
    /// reload task on the current runtime.
    pub fn tls(&self) -> anyhow::Result<Option<Arc<CertFiles>>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(CertFiles::load(cert, key)?)),
            _ => Ok(None),
        }
    }
}
