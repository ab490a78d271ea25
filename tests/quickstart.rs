//! docs/quickstart.md, run as written: its bash block is the script, with the test's binary,
//! model, folder, free ports and a database name of its own in the variables the page says to
//! change. Fails when a step of the page fails or its replies are not what the page promises.
mod common;

use std::process::Command;

/// The first ```bash block of the page.
fn script(page: &str) -> String {
    let start = page.find("```bash\n").expect("a ```bash block") + "```bash\n".len();
    let end = start + page[start..].find("\n```").expect("the block's end");
    page[start..end].to_string()
}

/// A port free on loopback now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_quick_start_runs_as_written() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/quickstart.md")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let db = format!("dvsp_quickstart_{}", uuid::Uuid::new_v4().simple());
    let ca = std::env::var_os("DVSP_PG_TLS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("HOME")).join(".cache/dvsp/pg-tls"))
        .join("ca.pem");
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script(&page)])
        .current_dir(root)
        .env("DVSP", env!("CARGO_BIN_EXE_dvsp"))
        .env("MODEL", common::model())
        .env("WORK", work.path())
        .env("API_PORT", free_port().to_string())
        .env("GRPC_PORT", free_port().to_string())
        .env("METRICS_PORT", free_port().to_string())
        .env("PG_CA", &ca)
        .env("PG_DB", &db)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let log = std::fs::read_to_string(work.path().join("serve.log")).unwrap_or_default();
    common::PgDb {
        url: String::new(),
        name: db.clone(),
    }
    .drop_db()
    .await;
    assert!(
        out.status.success(),
        "the quick start failed:\n{stdout}\n{stderr}\nserve.log:\n{log}"
    );
    // The replies the page leads to: the subject made, a template, a match of a '3' against
    // the enrolled '3', identify naming the subject, the metrics and the trail.
    for expected in [
        r#""id":"s-0001""#,
        r#""template_id""#,
        r#""match":true"#,
        r#""subject_id":"s-0001""#,
        "dvsp_decisions_total",
        r#""action":"identify""#,
    ] {
        assert!(
            stdout.contains(expected),
            "{expected} not in the quick start's output:\n{stdout}\n{stderr}"
        );
    }
    // It served HTTPS (on a verified connection to PostgreSQL: sslmode=verify-full).
    assert!(log.contains("https://127.0.0.1:"), "{log}");
}
