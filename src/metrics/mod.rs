//! Metrics as pure functions over scores.
pub mod eer;
