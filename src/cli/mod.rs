//! The `dvsp` command line: one module per subcommand, each with `Args` and `run`.
pub mod audit;
pub mod bench;
pub mod db;
pub mod eval;
pub mod faces;
pub mod keys;
pub mod models;
pub mod reembed;
pub mod reproduce;
pub mod retrain;
pub mod serve;
pub mod train;
pub mod tune;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::data::DataSpec;

#[derive(Debug, Parser)]
#[command(
    name = "dvsp",
    version,
    about = "Biometric verification with adversarially robust features (DVSP)"
)]
pub struct Cli {
    /// Intra-op threads for libtorch (default: all cores).
    #[arg(long, global = true, env = "DVSP_THREADS")]
    pub threads: Option<i32>,
    /// Where models run and train: cpu, cuda (an error without a GPU) or auto.
    #[arg(long, global = true, env = "DVSP_DEVICE", value_enum, default_value_t = crate::DeviceChoice::Auto)]
    pub device: crate::DeviceChoice,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a feature extractor (dvsp, dvib, center, sphereface).
    Train(train::Args),
    /// EER, FNMR at FMR targets and the DET curve of a trained model.
    Eval(eval::Args),
    /// Feature-space CW-L2 robustness audit: RI (eq. 17), heat map, adversarial samples.
    Audit(audit::Args),
    /// Choose a method's hyperparameters on a validation split of the training images.
    Tune(tune::Args),
    /// Reproduce the paper's tables end to end.
    Reproduce(reproduce::Args),
    /// Benchmarks, reported as ratios against a reference run in the same command.
    Bench(bench::Args),
    /// The HTTP verification service (enroll, verify, identify).
    Serve(serve::Args),
    /// API keys for the service.
    Keys(keys::KeysArgs),
    /// Galleries (tenants) of the service.
    Galleries(keys::GalleriesArgs),
    /// The model registry: register, list, show, promote (through the gate), retire.
    Models(models::Args),
    /// The admin retraining job: train, evaluate, audit, register, gate, promote.
    Retrain(retrain::Args),
    /// Template migration: embed every retained enrollment image with a new model.
    Reembed(reembed::Args),
    /// Database administration: migrations, template keys and their rotation.
    Db(db::DbArgs),
    /// The service's audit trail as JSON lines (who did what to whom, with what outcome).
    AuditLog(db::AuditLogArgs),
    /// Import a pretrained model (face-api's face recognition net).
    Import(faces::ImportArgs),
    /// Detect, landmark and align face photos into crops a face model takes.
    Align(faces::AlignArgs),
}

/// Where the data comes from (shared by the subcommands that read data).
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// Data set: mnist, fashion-mnist or folder:PATH (one sub-folder per identity).
    #[arg(long)]
    pub data: Option<DataSpec>,
    /// Folder holding the data sets (default: $DVSP_DATA or ~/.cache/dvsp/data, filled by `make setup`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl DataArgs {
    pub fn root(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(crate::data::default_root)
    }

    /// Loads the data a model is evaluated on (`--data`, else the card's data set) at the
    /// model's input size, refusing data whose images do not fit the model.
    pub fn load_for(
        &self,
        card: &crate::artifact::ModelCard,
    ) -> anyhow::Result<(DataSpec, crate::data::Split)> {
        use anyhow::Context;
        let spec: DataSpec = match &self.data {
            Some(d) => d.clone(),
            None => card.training.dataset.parse()?,
        };
        let input = &card.net.input;
        let size = Some((input.height as u32, input.width as u32));
        let split = spec
            .load(&self.root(), size)
            .with_context(|| format!("loading {spec}"))?;
        anyhow::ensure!(
            split.test.shape() == input.shape(),
            "{spec} has images of shape {:?} but the model takes {:?}",
            split.test.shape(),
            input.shape()
        );
        Ok((spec, split))
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(t) = cli.threads {
        anyhow::ensure!(t >= 1, "--threads must be at least 1");
        tch::set_num_threads(t);
    }
    // Only the commands that run a model choose a device (`dvsp keys` works anywhere).
    let store_only = matches!(
        cli.command,
        Command::Keys(_)
            | Command::Galleries(_)
            | Command::Models(_)
            | Command::Db(_)
            | Command::AuditLog(_)
    );
    if !store_only {
        let device = crate::set_device(cli.device)?;
        tracing::info!(device = ?device, "device");
    }
    match cli.command {
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Audit(a) => audit::run(a),
        Command::Tune(a) => tune::run(a),
        Command::Reproduce(a) => reproduce::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Keys(a) => keys::keys(a),
        Command::Galleries(a) => keys::galleries(a),
        Command::Models(a) => tokio::runtime::Runtime::new()?.block_on(models::run(a)),
        Command::Retrain(a) => tokio::runtime::Runtime::new()?.block_on(retrain::run(a)),
        Command::Reembed(a) => reembed::run(a),
        Command::Db(a) => db::db(a),
        Command::AuditLog(a) => db::audit_log(a),
        Command::Import(a) => faces::import(a),
        Command::Align(a) => faces::align(a),
    }
}
