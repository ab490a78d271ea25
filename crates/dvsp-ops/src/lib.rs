//! dvsp-ops: the operator's use cases, as a library the `dvsp` binary and the benchmarks call.
//!
//! Owns registering a model directory, the promotion gate's decision and its application
//! (`registry`), the admin retraining job (`retrain`: train, evaluate, audit, register, gate,
//! re-embed, promote) and template migration to a new model (`reembed`).
//!
//! Builds on `dvsp-core` (models), `dvsp-custody` (the store) and `dvsp-server` (the service
//! a re-embedding runs through); must not import the binary or `dvsp-lab`.
pub mod keyring;
pub mod keys;
pub mod reembed;
pub mod registry;
pub mod retrain;
