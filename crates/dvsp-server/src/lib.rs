//! dvsp-server: the verification service, `fn app(state) -> Router` plus the pieces it is
//! built from.
//!
//! Owns the HTTP (axum) and gRPC (tonic) adapters, the service layer both call (`service`),
//! request decoding (`input`, `decode`), authentication, the in-memory gallery index, the
//! inference worker, the registry watch, metrics, TLS, the embedded console and the service's
//! configuration (`config`). Builds on `dvsp-core` (models) and `dvsp-custody` (the store);
//! must not import `dvsp-ops`, `dvsp-lab` or the binary. The service layer must not import
//! the adapters (`routes`, `grpc`, `input`).
//!
//! Routes (all JSON; see `openapi.rs`, served at /openapi.json):
//! subjects CRUD, enroll, verify 1:1 against a subject or between two images, identify 1:N,
//! model card and plots, the caller's key, the replica's status, galleries and their keys,
//! health and readiness, the operators' console (`/console`, `console.rs`); Prometheus
//! metrics on a port of their own
//! (`metrics_app`). `serve` runs the API's accept loop (`conn.rs`): header-read timeout,
//! connection limit, load shedding; the REST and gRPC ports serve TLS when their listener
//! has a certificate (`tls.rs`), the metrics port is plaintext.
pub mod auth;
pub mod config;
mod conn;
pub mod console;
pub mod decode;
pub mod error;
pub mod grpc;
pub mod index;
pub mod input;
pub mod metrics;
pub mod openapi;
pub mod request_id;
mod routes;
pub mod served;
pub mod service;
pub mod tls;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue};
use axum::routing::{delete, get, post};
use axum::Router;
use tower_http::request_id::PropagateRequestIdLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use dvsp_custody::store::Store;

/// Request limits and the brute-force guard.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_pixels: u64,
    /// Probes whose posterior spread r(x) (eq. 14) exceeds this are refused.
    pub max_uncertainty: Option<f64>,
    /// Attempts (verify, or identify revealing it) on a subject by one key per window before
    /// 429.
    pub max_attempts: i64,
    /// Attempts on a subject by all keys together per window.
    pub max_subject_attempts: i64,
    /// Probes (verify, pair verify, identify) per API key per window before 429: the
    /// distances they return must not become an oracle to hill-climb on.
    pub max_key_probes: i64,
    pub attempt_window: Duration,
    pub timeout: Duration,
    /// A connection that has not sent a whole request head within this is closed.
    pub header_timeout: Duration,
    /// Open connections on the API port; beyond it the oldest idle one is closed, or the new
    /// one answered 503 when none is idle.
    pub max_connections: usize,
    /// `/v1` requests being served at once; beyond it 503 with Retry-After, before any work.
    pub max_in_flight: usize,
}

/// Everything a handler needs.
pub struct App {
    /// Galleries, templates, API keys and the audit trail (the only state).
    pub store: Store,
    /// The master keys that seal and open templates and retained images.
    pub keyring: dvsp_custody::seal::Keyring,
    /// Appends the audit trail (group commit).
    pub trail: service::trail::TrailWriter,
    /// The galleries' transforms by (gallery, epoch), as their secrets are needed.
    pub transforms: std::sync::Mutex<
        std::collections::HashMap<(String, i64), Arc<dvsp_custody::protect::Transform>>,
    >,
    /// API keys recently looked up (`auth::KEY_TTL`).
    pub keys: auth::KeyCache,
    /// The models served now, with the serving model's gallery index (`served.rs`).
    lineup: std::sync::RwLock<Arc<served::Lineup>>,
    /// One switch to a new model at a time.
    switching: tokio::sync::Mutex<()>,
    /// How a newly promoted model is loaded.
    pub loading: served::Loading,
    /// Whether enrollment images are kept, sealed, for re-embedding with a new model.
    pub retain_images: bool,
    /// When this replica started (the console's uptime).
    pub started: std::time::Instant,
    pub metrics: Arc<metrics::Metrics>,
    pub limits: Limits,
    /// Images being decoded at once: one per core (each may allocate the decode budget).
    pub decode_slots: tokio::sync::Semaphore,
}

pub type AppState = Arc<App>;

/// Micro-batching of the inference worker.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Largest micro-batch (default 32 on the CPU, 128 on a GPU).
    pub max_batch: Option<usize>,
    /// Longest wait for more work when others are waiting (default 0 on the CPU, 2 ms on a
    /// GPU).
    pub max_wait: Option<Duration>,
    pub queue: usize,
}

/// What a replica is started with, besides its models.
pub struct Setup {
    pub store: Store,
    pub keyring: dvsp_custody::seal::Keyring,
    pub loading: served::Loading,
    pub limits: Limits,
    pub retain_images: bool,
}

impl App {
    /// The app serving `serving` (and `previous`, for subjects still only enrolled with it),
    /// whose inference threads were started on `metrics`.
    pub fn new(
        setup: Setup,
        metrics: Arc<metrics::Metrics>,
        serving: served::Served,
        previous: Option<served::Served>,
    ) -> AppState {
        let lineup = served::Lineup::new(serving, previous);
        lineup.publish(&metrics);
        Arc::new(App {
            trail: service::trail::TrailWriter::start(setup.store.clone()),
            store: setup.store,
            keyring: setup.keyring,
            transforms: Default::default(),
            keys: Default::default(),
            lineup: std::sync::RwLock::new(Arc::new(lineup)),
            switching: Default::default(),
            loading: setup.loading,
            retain_images: setup.retain_images,
            started: std::time::Instant::now(),
            metrics,
            limits: setup.limits,
            decode_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
        })
    }
}

/// The API: `/v1` (behind the in-flight limit), health, readiness and the OpenAPI document.
pub fn app(state: AppState) -> Router {
    let limits = state.limits.clone();
    let metrics = state.metrics.clone();
    let shed = tower::ServiceBuilder::new()
        .layer(axum::error_handling::HandleErrorLayer::new(
            move |_: tower::BoxError| {
                let metrics = metrics.clone();
                async move {
                    metrics.shed.with_label_values(&["in_flight"]).inc();
                    error::ApiError::Unavailable(
                        "too many requests in flight; retry shortly".into(),
                    )
                }
            },
        ))
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            limits.max_in_flight.max(1),
        ));
    let v1 = Router::new()
        .route(
            "/v1/subjects",
            post(routes::create_subject).get(routes::list_subjects),
        )
        .route(
            "/v1/subjects/{id}",
            get(routes::get_subject).delete(routes::delete_subject),
        )
        .route("/v1/subjects/{id}/templates", post(routes::enroll))
        .route(
            "/v1/subjects/{id}/templates/{template_id}",
            delete(routes::delete_template),
        )
        .route("/v1/subjects/{id}/verify", post(routes::verify_subject))
        .route("/v1/verify", post(routes::verify_pair))
        .route("/v1/identify", post(routes::identify))
        .route("/v1/model", get(routes::model))
        .route("/v1/model/plots/{name}", get(routes::model_plot))
        .route("/v1/whoami", get(routes::whoami))
        .route("/v1/status", get(routes::status))
        .route(
            "/v1/galleries",
            post(routes::create_gallery).get(routes::list_galleries),
        )
        .route("/v1/galleries/{id}/keys", post(routes::create_key))
        .route("/v1/keys/{id}", delete(routes::revoke_key))
        .route_layer(shed);
    let api = v1
        .merge(console::router())
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/openapi.json", get(routes::openapi))
        .fallback(routes::no_route)
        .method_not_allowed_fallback(routes::method_not_allowed);
    api.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        metrics::track,
    ))
    .layer(DefaultBodyLimit::max(limits.max_body_bytes))
    .layer(
        // The router never fails, so the only error here is the timeout's: a JSON 408.
        tower::ServiceBuilder::new()
            .layer(axum::error_handling::HandleErrorLayer::new(
                move |_: tower::BoxError| async move {
                    error::ApiError::Timeout(format!(
                        "the request took longer than {} s",
                        limits.timeout.as_secs_f64()
                    ))
                },
            ))
            .timeout(limits.timeout),
    )
    .layer(PropagateRequestIdLayer::x_request_id())
    .layer(
        TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            // No query string, no headers: nothing biometric or secret, the request id on
            // every line.
            tracing::info_span!(
                "request",
                method = %req.method(),
                path = %req.uri().path(),
                request_id = %req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-"),
            )
        }),
    )
    // No reply is to be sniffed as another type or shown in a frame.
    .layer(SetResponseHeaderLayer::if_not_present(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ))
    .layer(SetResponseHeaderLayer::if_not_present(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("DENY"),
    ))
    // Outermost: a sane x-request-id on every request (the client's, else a new one), the
    // one the trace, the response header and every error body then carry.
    .layer(axum::middleware::from_fn(request_id::layer))
    .with_state(state)
}

/// The metrics port: `GET /metrics` (Prometheus text format), nothing else.
pub fn metrics_app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(routes::metrics))
        .fallback(routes::no_route)
        .with_state(state)
}

/// Serves the API on `listener` (a `TcpListener` for plaintext, or a `tls::Listener`) until
/// `shutdown` resolves; in-flight requests finish first.
pub async fn serve(
    listener: impl Into<tls::Listener>,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = conn::ConnLimits {
        header_timeout: state.limits.header_timeout,
        max_connections: state.limits.max_connections.max(1),
    };
    let metrics = state.metrics.clone();
    conn::serve(listener.into(), app(state), limits, Some(metrics), shutdown).await
}

/// How often the templates gauge is recounted from the store (other replicas enroll and
/// delete too); between counts this replica's own enrolls and deletes move it.
const TEMPLATES_RECOUNT: Duration = Duration::from_secs(300);

/// Serves `/metrics` until `shutdown` resolves, recounting the templates gauge at start and
/// every five minutes (never per scrape). Plaintext: the port is scraped from inside the
/// cluster, never exposed with the API.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let recount = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TEMPLATES_RECOUNT);
            loop {
                every.tick().await;
                match state.store.count_templates().await {
                    Ok(n) => state.metrics.templates.set(n),
                    Err(e) => tracing::warn!(error = %e, "counting templates for the gauge"),
                }
            }
        })
    };
    let limits = conn::ConnLimits {
        header_timeout: state.limits.header_timeout,
        max_connections: 64,
    };
    let served = conn::serve(listener.into(), metrics_app(state), limits, None, shutdown).await;
    recount.abort();
    served
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
