//! The gRPC port's connections, before tonic sees them: at most `max_connections` open (a
//! connection beyond it is closed at once, so half-open clients cannot exhaust the file
//! descriptors the REST port needs too), and a connection that has not sent the HTTP/2
//! preface within `header_timeout` is closed without ever reaching tonic (the preface is read
//! here and replayed to tonic). On a TLS port (`tls.rs`, ALPN `h2`) the handshake comes
//! first, and handshake plus preface share that timeout: a client stalling mid-handshake is
//! closed too, and a failed handshake just closes the connection.
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::metrics::Metrics;
use crate::tls::{self, Listener, Stream};

/// HTTP/2's connection preface: what a client sends first.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An accepted connection holding one of the port's connection slots until it closes; its
/// first reads replay the preface already read.
pub struct Admitted {
    stream: Stream,
    replayed: usize,
    _slot: OwnedSemaphorePermit,
}

impl Connected for Admitted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.tcp().connect_info()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.replayed < PREFACE.len() {
            let n = buf.remaining().min(PREFACE.len() - self.replayed);
            buf.put_slice(&PREFACE[self.replayed..self.replayed + n]);
            self.replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Reads the client's first bytes: whether they are the HTTP/2 preface.
async fn preface(stream: &mut Stream) -> bool {
    let mut buf = [0u8; PREFACE.len()];
    stream.read_exact(&mut buf).await.is_ok() && buf == PREFACE
}

/// The TLS handshake (with `acceptor`) and the preface: the connection, when both succeed.
async fn open(acceptor: Option<tokio_rustls::TlsAcceptor>, tcp: TcpStream) -> Option<Stream> {
    let mut stream = match tls::accept(acceptor.as_ref(), tcp).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(error = %e, "gRPC TLS handshake failed");
            return None;
        }
    };
    preface(&mut stream).await.then_some(stream)
}

/// The connections of `listener` that hold a slot, completed the TLS handshake (on a TLS
/// port) and sent the preface in time, for tonic's `serve_with_incoming_shutdown`.
pub fn admitted(
    listener: Listener,
    max_connections: usize,
    header_timeout: std::time::Duration,
    metrics: Arc<Metrics>,
) -> ReceiverStream<io::Result<Admitted>> {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let acceptor = listener.tls.as_ref().map(|t| t.acceptor(b"h2"));
    let listener = listener.tcp;
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "gRPC accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                // tonic stopped taking connections (shutdown).
                () = tx.closed() => return,
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                metrics.shed.with_label_values(&["grpc_connections"]).inc();
                continue;
            };
            let (tx, acceptor) = (tx.clone(), acceptor.clone());
            tokio::spawn(async move {
                let opened = tokio::time::timeout(header_timeout, open(acceptor, stream)).await;
                if let Ok(Some(stream)) = opened {
                    let admitted = Admitted {
                        stream,
                        replayed: 0,
                        _slot: slot,
                    };
                    let _ = tx.send(Ok(admitted)).await;
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
