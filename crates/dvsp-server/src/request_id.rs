//! The request id of the call being served: the client's `x-request-id` if it is a sane one,
//! else a new UUID (HTTP header and gRPC metadata alike), kept in a task-local for the call's
//! duration so that log lines, error bodies and audit entries carry it.
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request this task serves, if it serves one.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// A request id a client sent, if it is a sane one (1-64 printable ASCII characters); else a
/// fresh UUID.
pub fn from_header(value: Option<&axum::http::HeaderValue>) -> String {
    value
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string)
}

/// Runs `fut` as the request `id`.
pub async fn scope<F: std::future::Future>(id: String, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}

/// Axum middleware: gives the request a sane `x-request-id` (replacing one that is not) and
/// serves it inside that id's scope.
pub async fn layer(mut req: Request, next: Next) -> Response {
    let id = from_header(req.headers().get("x-request-id"));
    let value = HeaderValue::from_str(&id).expect("ids are printable ASCII");
    req.headers_mut().insert("x-request-id", value);
    scope(id, next.run(req)).await
}
