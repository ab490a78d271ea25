//! `dvsp keys create|revoke` and `dvsp galleries create|list`: API keys and galleries,
//! administered against the store directly (the bootstrap: the first global admin key).
use crate::server::auth::{self, Role, ScorePolicy};
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub action: KeysAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysAction {
    /// Create an API key and print it once (only its hash is stored).
    Create {
        /// A role (repeat for several): verify, identify, read, enroll, admin.
        #[arg(long = "role", value_enum, required = true)]
        roles: Vec<Role>,
        /// The key's gallery (it never reaches another).
        #[arg(long, default_value = auth::DEFAULT_GALLERY, conflicts_with = "global")]
        gallery: String,
        /// A global admin key: of no gallery, choosing one per call with `x-gallery`.
        #[arg(long)]
        global: bool,
        /// How much of a score replies carry.
        #[arg(long, value_enum, default_value_t = ScorePolicy::Decision)]
        scores: ScorePolicy,
        #[arg(long, env = "DVSP_DB", default_value = "sqlite://dvsp.db")]
        db: String,
    },
    /// Revoke a key by its id (the part after `dvsp_`, before the second `_`).
    Revoke {
        id: String,
        #[arg(long, env = "DVSP_DB", default_value = "sqlite://dvsp.db")]
        db: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct GalleriesArgs {
    #[command(subcommand)]
    pub action: GalleriesAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum GalleriesAction {
    /// Create a gallery (a tenant: its keys see only its subjects).
    Create {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, env = "DVSP_DB", default_value = "sqlite://dvsp.db")]
        db: String,
    },
    /// List the galleries.
    List {
        #[arg(long, env = "DVSP_DB", default_value = "sqlite://dvsp.db")]
        db: String,
    },
    /// Renew a gallery's template transform: a new secret, every template re-issued under
    /// it without a photo (t' = Q' Q^T t), in batches, resumable, while serving; then the old
    /// secrets are destroyed, so old templates (a backup, a leak) match nothing.
    Renew {
        id: String,
        #[arg(long, env = "DVSP_DB", default_value = "sqlite://dvsp.db")]
        db: String,
        #[command(flatten)]
        keys: super::db::KeyringArgs,
        /// Templates per batch.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        batch: i64,
    },
}

/// The command line's entry in the audit trail (no key: the operator at the console).
async fn record(store: &Store, action: &str, gallery: Option<&str>) -> anyhow::Result<()> {
    store
        .append_audit(&[crate::store::AuditEntry {
            seq: 0,
            at: crate::store::now_ms(),
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

pub fn keys(a: KeysArgs) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(async {
        match a.action {
            KeysAction::Create {
                roles,
                gallery,
                global,
                scores,
                db,
            } => {
                anyhow::ensure!(
                    !global || roles == [Role::Admin],
                    "a global key is an admin key: --global takes only --role admin"
                );
                let store = Store::connect(&db).await?;
                let gallery = (!global).then_some(gallery);
                if let Some(g) = &gallery {
                    crate::server::service::validate::valid_id("gallery", g)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    anyhow::ensure!(
                        store.get_gallery(g).await?.is_some(),
                        "no gallery {g:?}: create it with `dvsp galleries create {g}`"
                    );
                }
                let k = auth::generate();
                store
                    .insert_key(&k.row(&roles, gallery.as_deref(), scores))
                    .await?;
                record(&store, "create_key", gallery.as_deref()).await?;
                eprintln!(
                    "created key {} ({}; {}; scores: {}; shown once, store it safely)",
                    k.id,
                    Role::join(&roles),
                    gallery.map_or("global".to_string(), |g| format!("gallery {g}")),
                    scores.name()
                );
                println!("{}", k.key);
            }
            KeysAction::Revoke { id, db } => {
                let store = Store::connect(&db).await?;
                anyhow::ensure!(
                    store.revoke_key(&id, None).await?,
                    "no active key with id {id:?}"
                );
                record(&store, "revoke_key", None).await?;
                println!("revoked {id}");
            }
        }
        Ok(())
    })
}

pub fn galleries(a: GalleriesArgs) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(async {
        match a.action {
            GalleriesAction::Create { id, name, db } => {
                crate::server::service::validate::valid_id("gallery", &id)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                if let Some(n) = &name {
                    crate::server::service::validate::valid_name(n)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                let store = Store::connect(&db).await?;
                store
                    .create_gallery(&id, name.as_deref())
                    .await
                    .map_err(|e| match e {
                        crate::store::StoreError::Conflict => {
                            anyhow::anyhow!("gallery {id:?} already exists")
                        }
                        other => other.into(),
                    })?;
                record(&store, "create_gallery", Some(&id)).await?;
                println!("created gallery {id}");
            }
            GalleriesAction::Renew {
                id,
                db,
                keys,
                batch,
            } => {
                let keyring = keys.load()?;
                let store = Store::connect(&db).await?;
                anyhow::ensure!(
                    store.get_gallery(&id).await?.is_some(),
                    "no gallery {id:?}"
                );
                let (moved, epoch) = renew(&store, &keyring, &id, batch).await?;
                record(&store, "renew_gallery", Some(&id)).await?;
                println!(
                    "gallery {id}: {moved} templates re-issued under epoch {epoch}; older secrets destroyed"
                );
            }
            GalleriesAction::List { db } => {
                let store = Store::connect(&db).await?;
                for g in store.list_galleries().await? {
                    println!("{}\t{}", g.id, g.name.unwrap_or_default());
                }
            }
        }
        Ok(())
    })
}

/// Renews `gallery`'s transform: a new epoch's secret (or the one a previous, interrupted
/// renewal made: the highest), every older template re-issued under it, the older secrets
/// destroyed. The templates moved and the epoch.
async fn renew(
    store: &Store,
    keyring: &crate::seal::Keyring,
    gallery: &str,
    batch: i64,
) -> anyhow::Result<(u64, i64)> {
    use crate::protect::{transform_of, Transform};
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
                .insert_secret(&crate::protect::new_secret(keyring, gallery, next))
                .await?;
            next
        }
    };
    let secret = store
        .gallery_secret(gallery, epoch)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the secret of epoch {epoch} is gone"))?;
    let total = store.count_before_epoch(gallery, epoch).await?;
    let bar = indicatif::ProgressBar::new(total as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} templates re-issued ({eta} left)",
        )?,
    );
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
            replaced.push(crate::store::Replaced {
                row: crate::store::SealedRow::new(
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
