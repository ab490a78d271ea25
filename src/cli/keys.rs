//! `dvsp keys create|revoke` and `dvsp db migrate`: administration against the store.
use crate::server::auth::{self, Role};
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
        #[arg(long, value_enum)]
        role: Role,
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
}

pub fn keys(a: KeysArgs) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(async {
        match a.action {
            KeysAction::Create { role, db } => {
                let store = Store::connect(&db).await?;
                let k = auth::generate();
                store.insert_key(&k.id, &k.hash, role.name()).await?;
                eprintln!(
                    "created {} key {} (shown once; store it safely)",
                    role.name(),
                    k.id
                );
                println!("{}", k.key);
            }
            KeysAction::Revoke { id, db } => {
                let store = Store::connect(&db).await?;
                anyhow::ensure!(store.revoke_key(&id).await?, "no active key with id {id}");
                println!("revoked {id}");
            }
        }
        Ok(())
    })
}

pub fn db(a: DbArgs) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(async {
        let DbAction::Migrate { db } = a.action;
        Store::connect(&db).await?;
        println!("migrations applied to {}", super::serve::redact(&db));
        Ok(())
    })
}
