//! The template keyring's administration: a new master key appended to a keyring file, and
//! re-sealing every template, retained image and transform secret under the newest key.
use std::io::Write;

use anyhow::Context;
use dvsp_custody::seal::Keyring;
use dvsp_custody::store::{Replaced, SealedRow, Store};

pub fn new_key(path: &std::path::Path, id: Option<String>) -> anyhow::Result<()> {
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

pub async fn rotate(db: &str, keyring: &Keyring, batch: i64) -> anyhow::Result<()> {
    let store = Store::connect_existing(db).await?;
    let active = keyring.active().to_string();
    let total = store.count_not_under(&active).await?;
    let bar = dvsp_core::progress::counter(total as u64, "rotate-key", "templates onto key {msg}");
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
            .collect::<Result<Vec<_>, dvsp_custody::seal::SealError>>()?;
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
            .collect::<Result<Vec<_>, dvsp_custody::seal::SealError>>()?;
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
        let moved = dvsp_custody::store::GallerySecret {
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
