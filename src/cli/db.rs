//! `dvsp db migrate|new-key|rotate-key` and `dvsp audit-log`: the store's administration.
use std::io::Write;
use std::path::PathBuf;

use dvsp_custody::store::Store;
use dvsp_ops::keyring::{new_key, rotate};
use dvsp_server::config::KeyringArgs;

#[derive(Debug, clap::Args)]
pub struct DbArgs {
    #[command(subcommand)]
    pub action: DbAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum DbAction {
    /// Apply the migrations (also done by `serve` at start).
    Migrate {
        /// The store: sqlite://PATH or postgres://... (the service's database).
        #[arg(long, env = "DVSP_DB", default_value = "sqlite://dvsp.db")]
        db: String,
    },
    /// Append a fresh random master key to a keyring file (created, mode 0600, if missing);
    /// it seals from then on, and `rotate-key` moves the stored templates onto it.
    NewKey {
        /// The keyring file.
        #[arg(long = "template-keys", env = "DVSP_TEMPLATE_KEYS_FILE")]
        template_keys: PathBuf,
        /// The new key's id (default: `k<unix seconds>`).
        #[arg(long)]
        id: Option<String>,
    },
    /// Move every stored template onto the keyring's last key: re-wrap each data key (and
    /// each gallery's transform secret), and seal templates still in plaintext from before
    /// encryption. In batches, each one
    /// transaction; resumable (run it again); the service keeps serving meanwhile.
    RotateKey {
        /// The store: sqlite://PATH or postgres://... (the service's database).
        #[arg(long, env = "DVSP_DB", default_value = "sqlite://dvsp.db")]
        db: String,
        #[command(flatten)]
        keys: KeyringArgs,
        /// Templates per batch.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        batch: i64,
    },
}

pub fn db(a: DbArgs) -> anyhow::Result<()> {
    match a.action {
        DbAction::Migrate { db } => tokio::runtime::Runtime::new()?.block_on(async {
            Store::connect(&db).await?;
            println!("migrations applied to {}", dvsp_custody::store::redact(&db));
            Ok(())
        }),
        DbAction::NewKey { template_keys, id } => new_key(&template_keys, id),
        DbAction::RotateKey { db, keys, batch } => {
            eprintln!("store: {}", dvsp_custody::store::redact(&db));
            let keyring = keys.load()?;
            tokio::runtime::Runtime::new()?.block_on(rotate(&db, &keyring, batch))
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct AuditLogArgs {
    /// From when: an RFC 3339 time (2026-12-01T00:00:00Z) or an age (90s, 30m, 12h, 7d).
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// Most entries printed.
    #[arg(long, default_value_t = 10_000)]
    pub limit: i64,
    /// The store: sqlite://PATH or postgres://... (the service's database).
    #[arg(long, env = "DVSP_DB", default_value = "sqlite://dvsp.db")]
    pub db: String,
}

/// Milliseconds since the epoch of `--since`.
fn since_ms(s: &str) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| anyhow::anyhow!("--since {s:?}: an RFC 3339 time or an age like 30m"))?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => anyhow::bail!("--since {s:?}: the age's unit is s, m, h or d"),
    };
    Ok(dvsp_custody::store::now_ms() - n.saturating_mul(unit_ms))
}

/// Prints the audit trail from `--since` as JSON lines, oldest first.
pub fn audit_log(a: AuditLogArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.limit >= 1, "--limit must be at least 1");
    let since = since_ms(&a.since)?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let store = super::open_store(&a.db).await?;
        let mut after = 0;
        let mut left = a.limit;
        let out = std::io::stdout();
        let mut out = out.lock();
        while left > 0 {
            let page = store.audit_since(since, after, left.min(1000)).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            left -= page.len() as i64;
            for e in &page {
                writeln!(out, "{}", serde_json::to_string(e)?)?;
            }
        }
        Ok(())
    })
}
