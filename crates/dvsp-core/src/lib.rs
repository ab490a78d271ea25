//! dvsp-core: the model side of dvsp, on tch (libtorch).
//!
//! Implements "A Deep, Information-theoretic Framework for Robust Biometric Recognition"
//! (Xie, Chen, Wo, Wang): deep variational information bottleneck (DVIB, eq. 6-10) with sphere
//! projection (eq. 11-14) and adversarial learning (eq. 15, Algorithm 1), the baselines
//! center loss and SphereFace, the verification metrics of eq. 16 and the robustness index of
//! eq. 17.
//!
//! Owns every job's settings (`config`, `spec`), the data sets (`data`), the face pipeline
//! (`face`), the networks and losses (`model`, `loss`), training, evaluation and tuning, the
//! attacks and the robustness audit with its outputs (`attack`, `audit`, `certify`), the model
//! card and directory (`artifact`), the promotion gate (`registry`) and plots.
//!
//! Must not import the store, the service or anything above them (`dvsp-custody`,
//! `dvsp-server`, `dvsp-ops`, `dvsp-lab`): its `Cargo.toml` does not name them. Inside it,
//! modules import downwards only (`scripts/import_cycles.py` checks it).
//!
//! Errors: it returns [`Error`]; the layers above wrap it with `anyhow` context.

pub mod artifact;
pub mod attack;
pub mod audit;
pub mod certify;
pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod face;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod progress;
pub mod registry;
pub mod spec;
pub mod train;
pub mod tune;

pub use error::{Error, Result};

/// The device of every job, chosen once at start (`--device` of the commands that run a model).
static DEVICE: std::sync::OnceLock<tch::Device> = std::sync::OnceLock::new();

/// Where models run and train (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    Cpu,
    /// The first CUDA GPU; an error when libtorch sees none.
    Cuda,
    /// The first CUDA GPU when libtorch sees one, else the CPU.
    Auto,
}

/// Sets the device of every job from `choice`, once per process (the command line's); a
/// later call with another device is an error.
pub fn set_device(choice: DeviceChoice) -> Result<tch::Device> {
    let d = match choice {
        DeviceChoice::Cpu => tch::Device::Cpu,
        DeviceChoice::Auto => tch::Device::cuda_if_available(),
        DeviceChoice::Cuda if tch::Cuda::is_available() => tch::Device::Cuda(0),
        DeviceChoice::Cuda => {
            return Err(Error::Invalid(
                "--device cuda: libtorch sees no CUDA device (a CPU build of libtorch, or no \
                 GPU); build against a CUDA libtorch 2.11 (README) or use --device cpu|auto"
                    .into(),
            ))
        }
    };
    match *DEVICE.get_or_init(|| d) {
        set if set == d => Ok(set),
        set => Err(Error::Invalid(format!(
            "the device is already {set:?}; it cannot change to {d:?} in one process"
        ))),
    }
}

/// The device every job runs on: the one `set_device` chose, by default the first CUDA GPU
/// when libtorch has one, else the CPU.
pub fn device() -> tch::Device {
    *DEVICE.get_or_init(tch::Device::cuda_if_available)
}
