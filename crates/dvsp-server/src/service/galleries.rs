//! Galleries and their keys. Galleries themselves are a global admin's; a gallery's admin
//! creates and revokes that gallery's keys, and another gallery's look like they do not exist.
use super::types::{CreatedKey, GalleryList};
use super::validate::{valid_id, valid_name};
use crate::auth::{self, Caller, Role, ScorePolicy};
use crate::error::ApiError;
use crate::App;
use dvsp_custody::store::{Gallery, StoreError};

impl App {
    pub async fn create_gallery(
        &self,
        caller: &Caller,
        id: &str,
        name: Option<&str>,
    ) -> Result<Gallery, ApiError> {
        self.audited(caller, "create_gallery", None, async {
            caller.require_global()?;
            valid_id("gallery id", id)?;
            name.map(valid_name).transpose()?;
            self.store
                .create_gallery(id, name)
                .await
                .map_err(|e| match e {
                    StoreError::Conflict => {
                        ApiError::Conflict(format!("gallery {id:?} already exists"))
                    }
                    other => other.into(),
                })
        })
        .await
    }

    pub async fn list_galleries(&self, caller: &Caller) -> Result<GalleryList, ApiError> {
        self.audited(caller, "list_galleries", None, async {
            caller.require_global()?;
            Ok(GalleryList {
                galleries: self.store.list_galleries().await?,
            })
        })
        .await
    }

    /// The gallery `id` as the caller may manage it: any existing one for a global admin,
    /// only its own for a gallery's admin (another is "not found").
    async fn managed_gallery(&self, caller: &Caller, id: &str) -> Result<(), ApiError> {
        caller.require(Role::Admin)?;
        valid_id("gallery id", id)?;
        let visible = caller.global || caller.gallery == id;
        if !visible || self.store.get_gallery(id).await?.is_none() {
            return Err(ApiError::NotFound(format!("no gallery {id:?}")));
        }
        Ok(())
    }

    /// A new key of gallery `gallery` with `roles` and score policy `scores`, shown once.
    pub async fn create_key(
        &self,
        caller: &Caller,
        gallery: &str,
        roles: &[Role],
        scores: ScorePolicy,
    ) -> Result<CreatedKey, ApiError> {
        self.audited(caller, "create_key", None, async {
            self.managed_gallery(caller, gallery).await?;
            if roles.is_empty() {
                return Err(ApiError::Unprocessable(
                    "a key needs at least one role".into(),
                ));
            }
            let k = auth::generate();
            self.store
                .insert_key(&k.row(roles, Some(gallery), scores))
                .await?;
            Ok(CreatedKey {
                id: k.id.clone(),
                key: k.key,
                gallery_id: Some(gallery.to_string()),
                roles: Role::set(roles),
                scores,
            })
        })
        .await
    }

    /// Revokes key `id`: any key for a global admin, a key of its own gallery for a
    /// gallery's admin.
    pub async fn revoke_key(&self, caller: &Caller, id: &str) -> Result<(), ApiError> {
        self.audited(caller, "revoke_key", None, async {
            caller.require(Role::Admin)?;
            valid_id("key id", id)?;
            let scope = (!caller.global).then_some(caller.gallery.as_str());
            if self.store.revoke_key(id, scope).await? {
                self.keys.evict(id);
                Ok(())
            } else {
                Err(ApiError::NotFound(format!("no active key {id:?}")))
            }
        })
        .await
    }
}
