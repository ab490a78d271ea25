//! Metrics as pure functions over scores.
pub mod bootstrap;
pub mod eer;
pub mod lfw;
pub mod robustness;
