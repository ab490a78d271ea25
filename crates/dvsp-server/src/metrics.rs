//! Prometheus metrics with conventional names, and the middleware that records requests by
//! matched route.
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use super::AppState;

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    /// Images per micro-batch and its time, by model id.
    pub batch_size: HistogramVec,
    pub inference_seconds: HistogramVec,
    pub queue_depth: IntGauge,
    pub templates: IntGauge,
    /// Decisions by kind, outcome and model id.
    pub decisions: IntCounterVec,
    /// 1 for each model this replica has loaded, by model id and role (`serving`, or
    /// `previous`: kept for subjects not yet re-embedded).
    pub models: IntGaugeVec,
    /// Switches to a newly promoted model, by result (`switched`, `failed`).
    pub model_switches: IntCounterVec,
    pub auth_failures: IntCounterVec,
    pub grpc_requests: IntCounterVec,
    pub grpc_latency: HistogramVec,
    /// Open HTTP connections (API port).
    pub connections: IntGauge,
    /// Work refused before it started, by reason (`connections`, `in_flight`).
    pub shed: IntCounterVec,
    /// Stored templates that did not open: tampered, or copied onto another row.
    pub integrity_failures: IntCounter,
    /// Templates in this replica's in-memory gallery index, and its estimated bytes.
    pub index_templates: IntGauge,
    pub index_bytes: IntGauge,
    /// Time of one search of the index (1:N, without inference).
    pub index_search_seconds: Histogram,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "dvsp_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("metric");
        let latency_buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "dvsp_http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(latency_buckets.clone()),
            &["route", "method"],
        )
        .expect("metric");
        let grpc_requests = IntCounterVec::new(
            Opts::new(
                "dvsp_grpc_requests_total",
                "gRPC calls by method and status code",
            ),
            &["method", "code"],
        )
        .expect("metric");
        let grpc_latency = HistogramVec::new(
            HistogramOpts::new(
                "dvsp_grpc_request_duration_seconds",
                "gRPC call latency by method",
            )
            .buckets(latency_buckets),
            &["method"],
        )
        .expect("metric");
        let batch_size = HistogramVec::new(
            HistogramOpts::new(
                "dvsp_inference_batch_size",
                "Images per inference micro-batch, by model",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
            &["model"],
        )
        .expect("metric");
        let inference_seconds = HistogramVec::new(
            HistogramOpts::new(
                "dvsp_inference_duration_seconds",
                "Time of one inference micro-batch, by model",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            &["model"],
        )
        .expect("metric");
        let models = IntGaugeVec::new(
            Opts::new(
                "dvsp_model_loaded",
                "Models this replica has loaded (1), by model id and role (serving, previous)",
            ),
            &["model", "role"],
        )
        .expect("metric");
        let model_switches = IntCounterVec::new(
            Opts::new(
                "dvsp_model_switches_total",
                "Switches to a newly promoted model, by result",
            ),
            &["result"],
        )
        .expect("metric");
        let queue_depth = IntGauge::new(
            "dvsp_inference_queue_depth",
            "Inference jobs waiting for the worker",
        )
        .expect("metric");
        let templates =
            IntGauge::new("dvsp_templates_stored", "Templates in the store").expect("metric");
        let decisions = IntCounterVec::new(
            Opts::new(
                "dvsp_decisions_total",
                "Verification and identification decisions by outcome and model",
            ),
            &["kind", "outcome", "model"],
        )
        .expect("metric");
        let auth_failures = IntCounterVec::new(
            Opts::new("dvsp_auth_failures_total", "Rejected API keys by reason"),
            &["reason"],
        )
        .expect("metric");
        let connections = IntGauge::new(
            "dvsp_http_connections",
            "Open HTTP connections on the API port",
        )
        .expect("metric");
        let shed = IntCounterVec::new(
            Opts::new(
                "dvsp_http_shed_total",
                "Connections and requests refused with 503 before any work, by reason",
            ),
            &["reason"],
        )
        .expect("metric");
        let integrity_failures = IntCounter::new(
            "dvsp_template_integrity_failures_total",
            "Stored templates that failed their integrity check (tampered or moved rows)",
        )
        .expect("metric");
        let index_templates = IntGauge::new(
            "dvsp_index_templates",
            "Templates held in this replica's in-memory gallery index",
        )
        .expect("metric");
        let index_bytes = IntGauge::new(
            "dvsp_index_bytes",
            "Estimated memory of the in-memory gallery index (divide by dvsp_index_templates for bytes per template)",
        )
        .expect("metric");
        let index_search_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "dvsp_index_search_seconds",
                "Time of one 1:N search of the in-memory gallery index",
            )
            .buckets(vec![
                0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
        )
        .expect("metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(batch_size.clone()),
            Box::new(inference_seconds.clone()),
            Box::new(queue_depth.clone()),
            Box::new(templates.clone()),
            Box::new(decisions.clone()),
            Box::new(models.clone()),
            Box::new(model_switches.clone()),
            Box::new(auth_failures.clone()),
            Box::new(grpc_requests.clone()),
            Box::new(grpc_latency.clone()),
            Box::new(connections.clone()),
            Box::new(shed.clone()),
            Box::new(integrity_failures.clone()),
            Box::new(index_templates.clone()),
            Box::new(index_bytes.clone()),
            Box::new(index_search_seconds.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        Metrics {
            registry,
            requests,
            latency,
            batch_size,
            inference_seconds,
            queue_depth,
            templates,
            decisions,
            models,
            model_switches,
            auth_failures,
            grpc_requests,
            grpc_latency,
            connections,
            shed,
            integrity_failures,
            index_templates,
            index_bytes,
            index_search_seconds,
        }
    }

    pub fn encode(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The `method` label: one of the standard methods, else `OTHER` (a client may send any
/// token as its method; each would otherwise be a new series).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// Records every request by its matched route (not the raw path, so ids do not explode the
/// label set) and a fixed set of method labels.
pub async fn track(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let method = method_label(req.method());
    let start = Instant::now();
    let res = next.run(req).await;
    app.metrics
        .latency
        .with_label_values(&[route.as_str(), method])
        .observe(start.elapsed().as_secs_f64());
    app.metrics
        .requests
        .with_label_values(&[route.as_str(), method, res.status().as_str()])
        .inc();
    res
}
