//! The galleries' and keys' administration that changes stored state: recording an admin
//! action in the audit trail, and renewing a gallery's template transform (every template
//! re-sealed under the new one).
use dvsp_custody::store::Store;

/// The command line's entry in the audit trail (no key: the operator at the console).
pub async fn record(store: &Store, action: &str, gallery: Option<&str>) -> anyhow::Result<()> {
    store
        .append_audit(&[dvsp_custody::store::AuditEntry {
            seq: 0,
            at: dvsp_custody::store::now_ms(),
            request_id: None,
            key_id: None,
            gallery_id: gallery.map(str::to_string),
            action: action.to_string(),
            subject_id: None,
            outcome: "ok".to_string(),
        }])
        .await?;
    Ok(())
}

/// Renews `gallery`'s transform: a new epoch's secret (or the one a previous, interrupted
/// renewal made: the highest), every older template re-issued under it, the older secrets
/// destroyed. The templates moved and the epoch.
pub async fn renew(
    store: &Store,
    keyring: &dvsp_custody::seal::Keyring,
    gallery: &str,
    batch: i64,
) -> anyhow::Result<(u64, i64)> {
    use dvsp_custody::protect::{transform_of, Transform};
    use std::collections::HashMap;
    let current = store.current_secret(gallery).await?;
    // A renewal left unfinished (epochs above 1 come only from renewals) has moved some
    // templates already: finish it; else make the next epoch's secret.
    let unfinished = match &current {
        Some(s) => s.epoch > 1 && store.count_before_epoch(gallery, s.epoch).await? > 0,
        None => false,
    };
    let epoch = match current {
        Some(s) if unfinished => s.epoch,
        s => {
            let next = s.map_or(1, |s| s.epoch + 1);
            store
                .insert_secret(&dvsp_custody::protect::new_secret(keyring, gallery, next))
                .await?;
            next
        }
    };
    let secret = store
        .gallery_secret(gallery, epoch)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the secret of epoch {epoch} is gone"))?;
    let total = store.count_before_epoch(gallery, epoch).await?;
    let bar = dvsp_core::progress::counter(total as u64, "renew", "templates re-issued");
    let mut old: HashMap<i64, Transform> = HashMap::new();
    let mut new: Option<Transform> = None;
    let mut moved = 0;
    loop {
        let rows = store.templates_before_epoch(gallery, epoch, batch).await?;
        if rows.is_empty() {
            break;
        }
        let mut replaced = Vec::with_capacity(rows.len());
        for r in &rows {
            let t = keyring.open(&r.row(), &r.sealed)?;
            let d = t.len();
            if let std::collections::hash_map::Entry::Vacant(slot) = old.entry(r.epoch) {
                let q = match r.epoch {
                    0 => Transform::identity(d),
                    e => {
                        let s = store.gallery_secret(gallery, e).await?.ok_or_else(|| {
                            anyhow::anyhow!(
                                "template {} is under epoch {e}, whose secret is gone",
                                r.id
                            )
                        })?;
                        transform_of(keyring, &s, d)?
                    }
                };
                slot.insert(q);
            }
            let f = old[&r.epoch].invert(&t);
            if new.as_ref().is_none_or(|q| q.dim() != d) {
                new = Some(transform_of(keyring, &secret, d)?);
            }
            let new = new.as_ref().expect("made above");
            replaced.push(dvsp_custody::store::Replaced {
                row: dvsp_custody::store::SealedRow::new(
                    keyring,
                    r.id.clone(),
                    r.gallery_id.clone(),
                    r.subject_id.clone(),
                    r.model_id.clone(),
                    epoch,
                    &new.apply(&f),
                ),
                from_key: Some(r.sealed.key_id.clone()),
                from_epoch: r.epoch,
            });
        }
        moved += store.replace_seals(&replaced).await?;
        bar.inc(rows.len() as u64);
    }
    bar.finish();
    anyhow::ensure!(
        store.count_before_epoch(gallery, epoch).await? == 0,
        "templates were written under an old epoch meanwhile: run it again"
    );
    store.delete_secrets_before(gallery, epoch).await?;
    Ok((moved, epoch))
}
