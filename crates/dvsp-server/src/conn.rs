//! The accept loop of an HTTP port (the habit of axum's `low-level-rustls` example: the loop
//! is where per-connection limits live). HTTP/1.1 by hyper with
//! - a header-read timeout: a connection that has not sent a whole request head within
//!   `header_timeout` (a slow-header client, or an idle keep-alive one) is closed;
//! - a connection limit: at `max_connections`, a new connection first evicts the oldest one
//!   that is not serving a request (half-open and idle connections cannot crowd out new
//!   clients such as the kubelet's `/healthz`), and when every connection is busy the new one
//!   gets a JSON 503 with Retry-After and is closed, before any work (on a TLS port it is
//!   closed without an answer: no handshake is spent on it);
//! - TLS, when the listener has a certificate (`tls.rs`, ALPN `http/1.1`): the handshake
//!   runs on an admitted connection, which is idle and so evictable until it completes, and
//!   must complete within `header_timeout` too. A failed handshake (a plaintext client, an
//!   untrusted certificate) just closes the connection.
//!
//! Graceful shutdown: no new connections; idle ones close, in-flight requests finish.
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::metrics::Metrics;
use super::tls::{self, Listener};

/// Limits of one port's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// One open connection: requests it is serving now, and the signal that closes it.
#[derive(Default)]
struct Conn {
    busy: AtomicUsize,
    evict: Notify,
}

/// Counts a request on its connection while it is being served.
struct Busy(Arc<Conn>);

impl Busy {
    fn enter(conn: &Arc<Conn>) -> Busy {
        conn.busy.fetch_add(1, Ordering::SeqCst);
        Busy(conn.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The open connections in accept order (the first idle one is the oldest).
#[derive(Default)]
struct Table {
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next: std::sync::atomic::AtomicU64,
}

impl Table {
    /// Registers a new connection; at `max`, first closes the oldest idle one. `None` when
    /// every open connection is serving a request.
    fn admit(&self, max: usize) -> Option<(u64, Arc<Conn>)> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if conns.len() >= max {
            let idle = conns
                .iter()
                .find(|(_, c)| c.busy.load(Ordering::SeqCst) == 0)
                .map(|(id, _)| *id)?;
            if let Some(c) = conns.remove(&idle) {
                c.evict.notify_one();
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::default());
        conns.insert(id, conn.clone());
        Some((id, conn))
    }

    fn remove(&self, id: u64) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// Answers a connection refused at the limit with a JSON 503 and closes it.
async fn refuse(mut stream: TcpStream) {
    let body = r#"{"error":"unavailable","message":"too many open connections; retry shortly"}"#;
    let res = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(res.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// Serves `router` on `listener` (over TLS when it has a certificate) until `shutdown`
/// resolves, then waits for the open connections to finish their requests. `metrics`, when
/// given, counts open connections and refusals.
pub async fn serve(
    listener: Listener,
    router: Router,
    limits: ConnLimits,
    metrics: Option<Arc<Metrics>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = listener.tls.as_ref().map(|t| t.acceptor(b"http/1.1"));
    let listener = listener.tcp;
    let table = Arc::new(Table::default());
    let (closing, closed) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Per-connection errors (reset before accept) and running out of file
                    // descriptors: keep serving the connections already open.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        while tasks.try_join_next().is_some() {}
        let Some((id, conn)) = table.admit(limits.max_connections) else {
            if let Some(m) = &metrics {
                m.shed.with_label_values(&["connections"]).inc();
            }
            if acceptor.is_none() {
                tasks.spawn(refuse(stream));
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (router, table, metrics, acceptor, mut closed) = (
            router.clone(),
            table.clone(),
            metrics.clone(),
            acceptor.clone(),
            closed.clone(),
        );
        tasks.spawn(async move {
            if let Some(m) = &metrics {
                m.connections.inc();
            }
            let handshake = tokio::time::timeout(
                limits.header_timeout,
                tls::accept(acceptor.as_ref(), stream),
            );
            let stream = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(stream)) => Some(stream),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        None
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        None
                    }
                },
                // Evicted mid-handshake (it counts as idle).
                () = conn.evict.notified() => None,
            };
            if let Some(stream) = stream {
                serve_connection(stream, router, conn, limits, &mut closed).await;
            }
            table.remove(id);
            if let Some(m) = &metrics {
                m.connections.dec();
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Serves HTTP/1.1 on one connection until it ends, is evicted while idle, or finishes its
/// in-flight requests after `closed` changed (shutdown).
async fn serve_connection(
    stream: tls::Stream,
    router: Router,
    conn: Arc<Conn>,
    limits: ConnLimits,
    closed: &mut watch::Receiver<bool>,
) {
    let on_conn = conn.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let busy = Busy::enter(&on_conn);
        let router = router.clone();
        async move {
            let res = router.oneshot(req).await;
            drop(busy);
            res
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let served = http.serve_connection(TokioIo::new(stream), service);
    let mut served = std::pin::pin!(served);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended");
                }
                break;
            }
            // Evicted while idle: dropping the connection closes it.
            () = conn.evict.notified() => break,
            _ = closed.changed(), if !stopping => {
                stopping = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
}
