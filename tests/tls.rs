//! TLS end to end, with certificates made here by rcgen (a CA, server certificates for
//! localhost and 127.0.0.1): a real server (REST and gRPC on loopback ports, the cached
//! `server-model` of tests/common, SQLite) reached by real TLS clients trusting only the
//! test CA; certificate rotation by rewriting the files; the real PostgreSQL over TLS with
//! `sslmode=verify-full` (its certificate from `scripts/postgres.sh`). And starting against
//! a store migrated elsewhere: `serve --no-migrate` and the schema version check.
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{keyring_file, model};
use dvsp_custody::store::schema::SchemaError;
use dvsp_custody::store::{PoolConfig, Store};
use dvsp_server::tls::Listener;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A certificate authority made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for localhost and 127.0.0.1 and its key, both PEM.
    fn server(&self) -> (String, String) {
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a new server certificate and key over `files`' paths (in place, cert first: a
    /// reload may catch the pair half-written).
    fn issue_to(&self, files: &CertPaths) {
        let (cert, key) = self.server();
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
    }
}

/// Where a server's certificate and key live.
struct CertPaths {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl CertPaths {
    fn new() -> CertPaths {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        CertPaths {
            _dir: dir,
            cert,
            key,
        }
    }
}

/// A real server with TLS on REST and gRPC (loopback ports, a fresh SQLite file).
struct Server {
    rest: String,
    grpc: String,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    handles: Vec<tokio::task::JoinHandle<()>>,
    _db: tempfile::TempDir,
}

impl Server {
    async fn start(files: &CertPaths) -> Server {
        let model = model();
        let db_dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", db_dir.path().join("dvsp.db").display());
        let argv = [
            "serve",
            "--model",
            model.to_str().unwrap(),
            "--db",
            &db,
            "--template-keys",
            keyring_file(),
            "--fmr",
            "1e-2",
            "--header-timeout-secs",
            "2",
            "--tls-cert",
            files.cert.to_str().unwrap(),
            "--tls-key",
            files.key.to_str().unwrap(),
        ];
        let args = dvsp_server::config::ServeArgs::from_argv(argv).unwrap();
        let state = args.state().await.unwrap();
        let tls = args.tls().unwrap();
        assert!(tls.is_some());
        let rest = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (rest_addr, grpc_addr) = (rest.local_addr().unwrap(), grpc.local_addr().unwrap());
        let (rest, grpc) = (
            Listener::new(rest, tls.clone()),
            Listener::new(grpc, tls.clone()),
        );
        let (stop, rx) = tokio::sync::watch::channel(false);
        let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let (grpc_state, grpc_rx) = (state.clone(), rx.clone());
        let handles = vec![
            tokio::spawn(async move {
                dvsp_server::grpc::serve(grpc, grpc_state, until(grpc_rx))
                    .await
                    .unwrap()
            }),
            tokio::spawn(async move { dvsp_server::serve(rest, state, until(rx)).await.unwrap() }),
        ];
        Server {
            rest: format!("https://{rest_addr}"),
            grpc: format!("https://127.0.0.1:{}", grpc_addr.port()),
            stop: Some(stop),
            handles,
            _db: db_dir,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(true);
        for h in self.handles.drain(..) {
            h.await.unwrap();
        }
    }
}

/// An HTTPS client trusting only `ca` (no connection reuse: each request handshakes).
fn client(ca: &Ca) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn healthz(c: &reqwest::Client, s: &Server) -> reqwest::Result<reqwest::StatusCode> {
    Ok(c.get(format!("{}/healthz", s.rest)).send().await?.status())
}

/// gRPC health over TLS, trusting only `ca`.
async fn grpc_health(ca: &Ca, s: &Server) -> Result<i32, String> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    let channel = Channel::from_shared(s.grpc.clone())
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let res = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(res.into_inner().status)
}

#[tokio::test]
async fn rest_and_grpc_over_tls() {
    let (ca, other) = (Ca::new("dvsp test CA"), Ca::new("another CA"));
    let files = CertPaths::new();
    ca.issue_to(&files);
    let s = Server::start(&files).await;

    assert_eq!(healthz(&client(&ca), &s).await.unwrap(), 200);
    // A client trusting another CA refuses the server's certificate.
    let refused = healthz(&client(&other), &s).await.unwrap_err();
    assert!(refused.is_connect(), "{refused:?}");

    // gRPC: SERVING (1) over TLS with ALPN h2; refused under another CA.
    assert_eq!(grpc_health(&ca, &s).await.unwrap(), 1);
    assert!(grpc_health(&other, &s).await.is_err());

    // Plaintext HTTP to the TLS port: no answer, and the server serves on.
    let plain = reqwest::Client::new()
        .get(s.rest.replace("https://", "http://") + "/healthz")
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    // A client that connects and never says hello is closed after the header timeout (2 s).
    let mut idle = tokio::net::TcpStream::connect(s.rest.trim_start_matches("https://"))
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(
        Duration::from_secs(6),
        tokio::io::AsyncReadExt::read(&mut idle, &mut byte),
    )
    .await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    assert_eq!(healthz(&client(&ca), &s).await.unwrap(), 200);
    assert_eq!(grpc_health(&ca, &s).await.unwrap(), 1);
    s.stop().await;
}

#[tokio::test]
async fn certificate_rotation_without_restart() {
    let (old, new) = (Ca::new("old CA"), Ca::new("new CA"));
    let files = CertPaths::new();
    old.issue_to(&files);
    let s = Server::start(&files).await;
    assert_eq!(healthz(&client(&old), &s).await.unwrap(), 200);

    // A broken key is not loaded: the old certificate keeps serving.
    std::fs::write(&files.key, "-----BEGIN PRIVATE KEY-----\nnot a key\n").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(healthz(&client(&old), &s).await.unwrap(), 200);
    assert!(healthz(&client(&new), &s).await.is_err());

    // The new CA's certificate is served within a few reload periods, on REST and gRPC.
    new.issue_to(&files);
    let start = Instant::now();
    while healthz(&client(&new), &s).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the new certificate was not served within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(healthz(&client(&old), &s).await.is_err());
    assert_eq!(grpc_health(&new, &s).await.unwrap(), 1);
    s.stop().await;
}

/// The CA of the local PostgreSQL's certificate (`scripts/postgres.sh`).
fn pg_ca() -> PathBuf {
    match std::env::var("DVSP_PG_TLS") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/dvsp/pg-tls"),
    }
    .join("ca.pem")
}

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh database on the test server; its name.
async fn fresh_pg_db() -> String {
    let admin = std::env::var("DVSP_TEST_PG").unwrap_or(PG_ADMIN.into());
    let name = format!("dvsp_test_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(&admin)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432 (scripts/postgres.sh)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .unwrap();
    name
}

async fn drop_pg_db(name: &str) {
    let admin = std::env::var("DVSP_TEST_PG").unwrap_or(PG_ADMIN.into());
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&pool)
        .await;
}

/// The URL of database `name` on localhost (the name in the server's certificate), verifying
/// the server against `ca`.
fn verify_full(name: &str, ca: &Path) -> String {
    format!(
        "postgres://postgres@localhost:5432/{name}?sslmode=verify-full&sslrootcert={}",
        ca.display()
    )
}

#[tokio::test]
async fn postgres_over_tls_verify_full() {
    let name = fresh_pg_db().await;
    let url = verify_full(&name, &pg_ca());
    let store = Store::connect(&url).await.unwrap();
    store.ping().await.unwrap();
    let Store::Postgres(pool) = &store else {
        panic!("a PostgreSQL URL opened another store")
    };
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(ssl, "the store's connection is not TLS");
    store.check_schema().await.unwrap();

    // A CA that did not issue the server's certificate: refused.
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-ca.pem");
    std::fs::write(&wrong, Ca::new("not the PostgreSQL CA").pem()).unwrap();
    let refused = Store::connect(&verify_full(&name, &wrong)).await;
    assert!(refused.is_err(), "connected with an untrusted certificate");
    drop_pg_db(&name).await;
}

/// Inserts a migration row newer than any this binary embeds.
async fn fake_newer_migration(url: &str, version: i64) {
    match url.starts_with("sqlite:") {
        true => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query(
                "INSERT INTO _sqlx_migrations \
                 (version, description, success, checksum, execution_time) \
                 VALUES ($1, 'from a newer dvsp', TRUE, X'00', 0)",
            )
            .bind(version)
            .execute(&pool)
            .await
            .unwrap();
        }
        false => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(
                "INSERT INTO _sqlx_migrations \
                 (version, description, success, checksum, execution_time) \
                 VALUES ($1, 'from a newer dvsp', TRUE, '\\x00', 0)",
            )
            .bind(version)
            .execute(&pool)
            .await
            .unwrap();
        }
    }
}

/// The schema check on one store URL: refused before migrating, accepted after, refused
/// once a newer binary's migration is recorded.
async fn schema_check(url: &str) {
    let unmigrated = Store::connect_unmigrated(url, PoolConfig::default()).await;
    assert!(
        matches!(unmigrated, Err(SchemaError::NotMigrated { .. })),
        "{unmigrated:?}"
    );
    let migrated = Store::connect(url).await.unwrap();
    let version = migrated.check_schema().await.unwrap();
    assert!(version >= 1);
    let store = Store::connect_unmigrated(url, PoolConfig::default())
        .await
        .unwrap();
    store.ping().await.unwrap();
    fake_newer_migration(url, version + 1).await;
    let ahead = Store::connect_unmigrated(url, PoolConfig::default()).await;
    match ahead {
        Err(e @ SchemaError::Ahead { .. }) => {
            assert!(e.to_string().contains("newer than this binary"), "{e}")
        }
        other => panic!("a newer schema was accepted: {other:?}"),
    }
}

#[tokio::test]
async fn no_migrate_checks_the_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    schema_check(&format!("sqlite://{}", dir.path().join("s.db").display())).await;
    let name = fresh_pg_db().await;
    schema_check(&verify_full(&name, &pg_ca())).await;
    drop_pg_db(&name).await;
}

/// `dvsp serve --no-migrate` on a store nobody migrated: one line saying what to do, and a
/// non-zero exit (no crash loop of half-started servers).
#[test]
fn serve_no_migrate_refuses_an_unmigrated_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("fresh.db").display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dvsp"))
        .args(["serve", "--model"])
        .arg(model())
        .args([
            "--db",
            &db,
            "--template-keys",
            keyring_file(),
            "--bind",
            "127.0.0.1:0",
            "--metrics-bind",
            "127.0.0.1:0",
        ])
        .env("DVSP_NO_MIGRATE", "true")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(
        error[0].contains("no migrations applied") && error[0].contains("dvsp db migrate"),
        "{stderr}"
    );
}
