//! TLS of the REST and gRPC ports: rustls with the ring provider, the certificate chain and
//! key from PEM files (`--tls-cert`, `--tls-key`). The files are checked every
//! `RELOAD_EVERY` and re-read when either changed (certificate rotation without a restart,
//! e.g. a Kubernetes Secret or cert-manager renewing them); handshakes resolve the current
//! pair through `ResolvesServerCert`. A pair that fails to load (unreadable, not PEM, key not
//! matching the certificate, or caught half-written) keeps the old one and logs a warning
//! once per change of the files.
//!
//! Each port picks its ALPN: `http/1.1` for REST (`conn.rs`), `h2` for gRPC (`incoming.rs`);
//! both run the handshake inside their connection limit and header timeout.
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How often the certificate and key files are checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Why a certificate/key pair did not load. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: no PEM certificate ({reason})")]
    Cert { path: PathBuf, reason: String },
    #[error("{path}: no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    Key { path: PathBuf },
    #[error("{cert} with {key}: {source}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// What identifies a version of a file: its modification time and length.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The serving certificate: a PEM chain and key on disk, re-read when they change.
#[derive(Debug)]
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamps at the last load attempt, successful or not.
    seen: Mutex<(Stamp, Stamp)>,
}

impl CertFiles {
    /// Loads the pair and starts checking the files for changes (a task on the current tokio
    /// runtime, ending when the returned value is dropped).
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertFiles>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let seen = (stamp(cert), stamp(key));
        let pair = read_pair(cert, key, &provider)?;
        let files = Arc::new(CertFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            current: RwLock::new(Arc::new(pair)),
            seen: Mutex::new(seen),
        });
        let watched = Arc::downgrade(&files);
        tokio::spawn(watch(watched));
        Ok(files)
    }

    /// Re-reads the pair if either file changed since the last attempt; a pair that fails
    /// to load leaves the current one serving.
    fn reload_if_changed(&self) {
        let now = (stamp(&self.cert), stamp(&self.key));
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return;
            }
            *seen = now;
        }
        match read_pair(&self.cert, &self.key, &self.provider) {
            Ok(pair) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pair);
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate not reloaded; serving the previous one")
            }
        }
    }

    /// An acceptor for one port, offering `alpn` (e.g. `h2`).
    pub(crate) fn acceptor(self: &Arc<Self>, alpn: &[u8]) -> TlsAcceptor {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![alpn.to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Checks the files every `RELOAD_EVERY` while `files` is alive.
async fn watch(files: Weak<CertFiles>) {
    let mut every = tokio::time::interval(RELOAD_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(files) = files.upgrade() else { return };
        // File reads: off the async workers.
        let _ = tokio::task::spawn_blocking(move || files.reload_if_changed()).await;
    }
}

/// Reads and checks a chain and its key (the key must match the first certificate).
fn read_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_error = |reason: String| TlsError::Cert {
        path: cert.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("the file holds no certificate".into()));
    }
    // The parser's errors may quote the file: never shown for the key.
    let key_der = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|_| TlsError::Key {
        path: key.to_path_buf(),
    })?;
    CertifiedKey::from_der(chain, key_der, provider).map_err(|source| TlsError::Pair {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    })
}

/// A listening socket of the REST or gRPC port, with the certificate its connections are
/// served under when TLS is on. A bare `TcpListener` converts into a plaintext one.
pub struct Listener {
    pub(crate) tcp: TcpListener,
    pub(crate) tls: Option<Arc<CertFiles>>,
}

impl Listener {
    pub fn new(tcp: TcpListener, tls: Option<Arc<CertFiles>>) -> Listener {
        Listener { tcp, tls }
    }
}

impl From<TcpListener> for Listener {
    fn from(tcp: TcpListener) -> Listener {
        Listener { tcp, tls: None }
    }
}

/// An accepted connection, after its TLS handshake when the port has TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }
}

/// Runs the TLS handshake when `acceptor` is given. Callers bound it in time: a client that
/// stalls mid-handshake must not hold the connection.
pub(crate) async fn accept(acceptor: Option<&TlsAcceptor>, tcp: TcpStream) -> io::Result<Stream> {
    match acceptor {
        Some(a) => Ok(Stream::Tls(Box::new(a.accept(tcp).await?))),
        None => Ok(Stream::Plain(tcp)),
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
