//! dvsp-custody: what the service keeps and how it keeps it safe.
//!
//! Owns the sealing of templates and retained images under the keyring's master keys
//! (`seal`), the galleries' template transforms (`protect`) and the SQLite/PostgreSQL store
//! with its migrations (`store`).
//!
//! Must not import tch, the model side (`dvsp-core`) or the service (`dvsp-server`): a
//! database and its keys are read and written without a model.
pub mod protect;
pub mod seal;
pub mod store;
