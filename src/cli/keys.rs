//! `dvsp keys create|revoke` and `dvsp galleries create|list`: API keys and galleries,
//! administered against the store directly (the bootstrap: the first global admin key).
use dvsp_ops::keys::{record, renew};
use dvsp_server::auth::{self, Role, ScorePolicy};

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
        /// The store: sqlite://PATH or postgres://... (the service's database).
        #[arg(long, env = "DVSP_DB", default_value = "sqlite://dvsp.db")]
        db: String,
    },
    /// Revoke a key by its id (the part after `dvsp_`, before the second `_`).
    Revoke {
        /// The key's id.
        id: String,
        /// The store: sqlite://PATH or postgres://... (the service's database).
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
        /// The gallery's id: 1-128 characters of A-Z a-z 0-9 - _ . @ (not `.` or `..`).
        id: String,
        /// A display name (at most 256 characters, no control characters).
        #[arg(long)]
        name: Option<String>,
        /// The store: sqlite://PATH or postgres://... (the service's database).
        #[arg(long, env = "DVSP_DB", default_value = "sqlite://dvsp.db")]
        db: String,
    },
    /// List the galleries.
    List {
        /// The store: sqlite://PATH or postgres://... (the service's database).
        #[arg(long, env = "DVSP_DB", default_value = "sqlite://dvsp.db")]
        db: String,
    },
    /// Renew a gallery's template transform: a new secret, every template re-issued under
    /// it without a photo (t' = Q' Q^T t), in batches, resumable, while serving; then the old
    /// secrets are destroyed, so old templates (a backup, a leak) match nothing.
    Renew {
        /// The gallery's id.
        id: String,
        /// The store: sqlite://PATH or postgres://... (the service's database).
        #[arg(long, env = "DVSP_DB", default_value = "sqlite://dvsp.db")]
        db: String,
        #[command(flatten)]
        keys: dvsp_server::config::KeyringArgs,
        /// Templates per batch.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        batch: i64,
    },
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
                let store = super::open_store(&db).await?;
                let gallery = (!global).then_some(gallery);
                if let Some(g) = &gallery {
                    dvsp_server::service::validate::valid_id("gallery", g)
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
                let store = super::open_store(&db).await?;
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
                dvsp_server::service::validate::valid_id("gallery", &id)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                if let Some(n) = &name {
                    dvsp_server::service::validate::valid_name(n)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                let store = super::open_store(&db).await?;
                store
                    .create_gallery(&id, name.as_deref())
                    .await
                    .map_err(|e| match e {
                        dvsp_custody::store::StoreError::Conflict => {
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
                let store = super::open_store(&db).await?;
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
                let store = super::open_store(&db).await?;
                for g in store.list_galleries().await? {
                    println!("{}\t{}", g.id, g.name.unwrap_or_default());
                }
            }
        }
        Ok(())
    })
}
