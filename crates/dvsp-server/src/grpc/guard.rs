//! A tower layer in front of the `Verification` service: the API key is checked from the
//! metadata before the body is read (a caller without a valid key costs one key lookup, never
//! a decode), then the body is read up to the message limit and its gRPC framing checked
//! (exactly one uncompressed length-prefixed message), so a truncated or mis-framed body is
//! INVALID_ARGUMENT instead of tonic's INTERNAL. The caller travels to the handlers in the
//! request's extensions.
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Bytes;
use axum::http;
use http_body_util::{BodyExt, Full, Limited};
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::Status;
use tower::Service;

use crate::{request_id, AppState};

/// The service's methods: the only `method` label values besides `OTHER`.
pub const METHODS: [&str; 10] = [
    "CreateSubject",
    "GetSubject",
    "ListSubjects",
    "DeleteSubject",
    "Enroll",
    "DeleteTemplate",
    "Verify",
    "VerifyPair",
    "Identify",
    "GetModel",
];

/// The `method` label of a request path `/dvsp.v1.Verification/<Method>`.
pub fn method_label(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or("");
    METHODS
        .iter()
        .find(|m| **m == name)
        .copied()
        .unwrap_or("OTHER")
}

/// `inner` behind the key check and the framing check.
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    app: AppState,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, app: AppState) -> Guarded<S> {
        Guarded { inner, app }
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

/// gRPC's message prefix: a compressed flag and a big-endian u32 length.
const PREFIX: usize = 5;

/// Authenticates the request and checks its framing; the request to pass on, or the status
/// to answer with.
async fn admit(app: &AppState, req: http::Request<Body>) -> Result<http::Request<Body>, Status> {
    let caller = app.authenticate(req.headers()).await?;
    let (mut parts, body) = req.into_parts();
    let limit = app.limits.max_body_bytes;
    let bytes: Bytes = match Limited::new(body, limit + PREFIX).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Status::out_of_range(format!(
                "the message exceeds {limit} bytes"
            )))
        }
        Err(_) => {
            return Err(Status::invalid_argument(
                "the request body could not be read",
            ))
        }
    };
    let framed = bytes.len() >= PREFIX
        && bytes[0] == 0
        && u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize
            == bytes.len() - PREFIX;
    if !framed {
        return Err(Status::invalid_argument(
            "malformed gRPC request: expected one uncompressed length-prefixed message",
        ));
    }
    parts.extensions.insert(caller);
    Ok(http::Request::from_parts(
        parts,
        Body::new(Full::new(bytes)),
    ))
}

impl<S> Service<http::Request<Body>> for Guarded<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this call (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let app = self.app.clone();
        let id = request_id::from_header(req.headers().get("x-request-id"));
        Box::pin(request_id::scope(id, async move {
            let start = Instant::now();
            let method = method_label(req.uri().path());
            match admit(&app, req).await {
                Ok(req) => inner.call(req).await,
                Err(status) => {
                    let m = &app.metrics;
                    m.grpc_requests
                        .with_label_values(&[method, &format!("{:?}", status.code())])
                        .inc();
                    m.grpc_latency
                        .with_label_values(&[method])
                        .observe(start.elapsed().as_secs_f64());
                    Ok(status.into_http())
                }
            }
        }))
    }
}
