//! dvsp: biometric verification whose feature extractor is hard to fool.
//!
//! Implements "A Deep, Information-theoretic Framework for Robust Biometric Recognition"
//! (Xie, Chen, Wo, Wang): deep variational information bottleneck (DVIB, eq. 6-10) with sphere
//! projection (eq. 11-14) and adversarial learning (eq. 15, Algorithm 1), the baselines
//! center loss and SphereFace, the verification metrics of eq. 16, and the service around them.
//!
//! Errors: library code returns [`Error`]; the CLI wraps it with `anyhow` context.

pub mod artifact;
pub mod attack;
pub mod audit;
pub mod cli;
pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod face;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod protect;
pub mod seal;
pub mod server;
pub mod store;
pub mod train;
pub mod tune;

pub use error::{Error, Result};

/// The device every job runs on: the first CUDA GPU when libtorch has one, else the CPU.
pub fn device() -> tch::Device {
    tch::Device::cuda_if_available()
}
