//! `dvsp db migrate|new-key|rotate-key` and `dvsp audit-log`: the store's administration.
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::seal::Keyring;
use crate::store::{Replaced, SealedRow, Store};

/// Where the template keyring comes from: `--template-keys FILE` (env
/// `DVSP_TEMPLATE_KEYS_FILE`) or the keyring text itself in `DVSP_TEMPLATE_KEYS` (e.g. a
/// Kubernetes Secret as a variable); see `crate::seal`.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyringArgs {
    /// The template keyring file: `<key id> <base64 of 32 bytes>` per line, the last one seals.
    #[arg(long = "template-keys", env = "DVSP_TEMPLATE_KEYS_FILE")]
    pub template_keys: Option<PathBuf>,
}

impl KeyringArgs {
    pub fn load(&self) -> anyhow::Result<Keyring> {
        let text = std::env::var("DVSP_TEMPLATE_KEYS").ok();
        Ok(Keyring::load(
            self.template_keys.as_deref(),
            text.as_deref(),
        )?)
    }
}

#[derive(Debug, clap::Args)]
pub struct DbArgs {
    #[command(subcommand)]
    pub action: DbAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum DbAction {
    /// Apply the migrations (also done by `serve` at start).
    Migrate {
        #[arg(long, env = "DVSP_DB", default_value = "sqlite://dvsp.db")]
        db: String,
    },
    /// Append a fresh random master key to a keyring file (created, mode 0600, if missing);
    /// it seals from then on, and `rotate-key` moves the stored templates onto it.
    NewKey {
        /// The keyring file.
        #[arg(long = "template-keys", env = "DVSP_TEMPLATE_KEYS_FILE")]
        template_keys: PathBuf,
        /// The new key's id (default: k<unix seconds>).
        #[arg(long)]
        id: Option<String>,
    },
    /// Move every stored template onto the keyring's last key: re-wrap each data key (and
    /// each gallery's transform secret), and seal templates still in plaintext from before
    /// encryption. In batches, each one
    /// transaction; resumable (run it again); the service keeps serving meanwhile.
    RotateKey {
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
            println!("migrations applied to {}", super::serve::redact(&db));
            Ok(())
        }),
        DbAction::NewKey { template_keys, id } => new_key(&template_keys, id),
        DbAction::RotateKey { db, keys, batch } => {
            let keyring = keys.load()?;
            tokio::runtime::Runtime::new()?.block_on(rotate(&db, &keyring, batch))
        }
    }
}

fn new_key(path: &std::path::Path, id: Option<String>) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let id = id.unwrap_or_else(|| format!("k{}", chrono::Utc::now().timestamp()));
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if !existing.trim().is_empty() {
        // Never append to a keyring that does not parse.
        Keyring::parse(&existing).with_context(|| format!("{}", path.display()))?;
    }
    let line = Keyring::new_key_line(&id)?;
    Keyring::parse(&format!("{existing}\n{line}"))
        .map_err(|_| anyhow::anyhow!("{} already holds a key {id:?}", path.display()))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{line}")?;
    f.sync_all()?;
    println!(
        "added key {id} to {}; it seals new templates from the next start; run `dvsp db rotate-key` to move the stored ones",
        path.display()
    );
    Ok(())
}

async fn rotate(db: &str, keyring: &Keyring, batch: i64) -> anyhow::Result<()> {
    let store = Store::connect(db).await?;
    let active = keyring.active().to_string();
    let total = store.count_not_under(&active).await?;
    let bar = indicatif::ProgressBar::new(total as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} templates onto key {msg} ({eta} left)",
        )?,
    );
    bar.set_message(active.clone());
    let mut moved = 0u64;
    // Plaintext rows first: sealed in full.
    loop {
        let rows = store.plaintext_templates(batch).await?;
        if rows.is_empty() {
            break;
        }
        // Sealed as they are, at epoch 0 (the identity; `dvsp galleries renew` moves them
        // under their gallery's transform).
        let sealed: Vec<Replaced> = rows
            .into_iter()
            .map(|p| Replaced {
                row: SealedRow::new(
                    keyring,
                    p.id,
                    p.gallery_id,
                    p.subject_id,
                    p.model_id,
                    0,
                    &p.feature,
                ),
                from_key: None,
                from_epoch: 0,
            })
            .collect();
        let n = store.replace_seals(&sealed).await?;
        moved += n;
        bar.inc(sealed.len() as u64);
    }
    // Sealed rows under another master key: their data keys re-wrapped.
    let mut after = String::new();
    loop {
        let rows = store.templates_to_rewrap(&active, &after, batch).await?;
        let Some(last) = rows.last() else { break };
        after = last.id.clone();
        let rewrapped = rows
            .iter()
            .map(|r| {
                let mut row = r.clone();
                row.sealed = keyring.rewrap(&r.row(), &r.sealed)?;
                Ok(Replaced {
                    row,
                    from_key: Some(r.sealed.key_id.clone()),
                    from_epoch: r.epoch,
                })
            })
            .collect::<Result<Vec<_>, crate::seal::SealError>>()?;
        moved += store.replace_seals(&rewrapped).await?;
        bar.inc(rows.len() as u64);
    }
    bar.finish();
    // Retained enrollment images, re-wrapped the same way.
    let mut images = 0u64;
    let mut after = String::new();
    loop {
        let rows = store.images_to_rewrap(&active, &after, batch).await?;
        let Some(last) = rows.last() else { break };
        after = last.id.clone();
        let rewrapped = rows
            .iter()
            .map(|r| {
                let mut image = r.clone();
                image.sealed = keyring.rewrap_image(&r.row(), &r.sealed)?;
                Ok((image, r.sealed.key_id.clone()))
            })
            .collect::<Result<Vec<_>, crate::seal::SealError>>()?;
        images += store.replace_image_seals(&rewrapped).await?;
    }
    // The galleries' transform secrets, re-wrapped the same way.
    for secret in store.secrets_not_under(&active).await? {
        let plain = keyring.unwrap_secret(
            &secret.gallery_id,
            secret.epoch,
            &secret.key_id,
            &secret.wrapped,
        )?;
        let (key_id, wrapped) = keyring.wrap_secret(&secret.gallery_id, secret.epoch, &plain);
        let moved = crate::store::GallerySecret {
            key_id,
            wrapped,
            ..secret.clone()
        };
        store.rewrap_secret(&moved, &secret.key_id).await?;
    }
    let left = store.count_not_under(&active).await?
        + store.count_images_not_under(&active).await?
        + store.secrets_not_under(&active).await?.len() as i64;
    println!(
        "{moved} templates and {images} retained images moved onto key {active}; {left} left under other keys{}",
        if left == 0 {
            " (older keys can now be removed from the keyring)"
        } else {
            " (written meanwhile: run it again)"
        }
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct AuditLogArgs {
    /// From when: an RFC 3339 time (2026-12-01T00:00:00Z) or an age (90s, 30m, 12h, 7d).
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// Most entries printed.
    #[arg(long, default_value_t = 10_000)]
    pub limit: i64,
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
    Ok(crate::store::now_ms() - n.saturating_mul(unit_ms))
}

/// Prints the audit trail from `--since` as JSON lines, oldest first.
pub fn audit_log(a: AuditLogArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.limit >= 1, "--limit must be at least 1");
    let since = since_ms(&a.since)?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let store = Store::connect(&a.db).await?;
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
