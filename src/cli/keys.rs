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
}

/// The command line's entry in the audit trail (no key: the operator at the console).
async fn record(store: &Store, action: &str, gallery: Option<&str>) -> anyhow::Result<()> {
    store
        .append_audit(&crate::store::AuditEntry {
            seq: 0,
            at: crate::store::now_ms(),
            request_id: None,
            key_id: None,
            gallery_id: gallery.map(str::to_string),
            action: action.to_string(),
            subject_id: None,
            outcome: "ok".to_string(),
        })
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
