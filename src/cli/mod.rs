//! The `dvsp` command line: one module per subcommand, each with `Args` and `run`.
pub mod audit;
pub mod db;
pub mod eval;
pub mod faces;
pub mod keys;
pub mod models;
pub mod serve;
pub mod train;
pub mod tune;

use clap::{Parser, Subcommand};

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
    #[arg(long, global = true, env = "DVSP_DEVICE", value_enum, default_value_t = dvsp_core::DeviceChoice::Auto)]
    pub device: dvsp_core::DeviceChoice,
    /// Log lines on stderr: text (colour only on a terminal, never with NO_COLOR), or json
    /// (one object per line, for log shippers).
    #[arg(long, global = true, env = "DVSP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a feature extractor (dvsp, dvib, center, sphereface).
    Train(dvsp_core::train::TrainArgs),
    /// EER, FNMR at FMR targets and the DET curve of a trained model.
    Eval(eval::Args),
    /// Feature-space CW-L2 robustness audit: RI (eq. 17), heat map, adversarial samples.
    Audit(audit::Args),
    /// Choose a method's hyperparameters on a validation split of the training images.
    Tune(dvsp_core::tune::TuneArgs),
    /// Reproduce the paper's tables end to end.
    Reproduce(dvsp_lab::reproduce::Args),
    /// Benchmarks, reported as ratios against a reference run in the same command.
    Bench(dvsp_lab::bench::Args),
    /// The HTTP verification service (enroll, verify, identify).
    Serve(dvsp_server::config::ServeArgs),
    /// API keys for the service.
    Keys(keys::KeysArgs),
    /// Galleries (tenants) of the service.
    Galleries(keys::GalleriesArgs),
    /// The model registry: register, list, show, promote (through the gate), retire.
    Models(models::Args),
    /// The admin retraining job: train, evaluate, audit, register, gate, promote.
    Retrain(dvsp_ops::retrain::Args),
    /// Template migration: embed every retained enrollment image with a new model.
    Reembed(dvsp_ops::reembed::Args),
    /// Database administration: migrations, template keys and their rotation.
    Db(db::DbArgs),
    /// The service's audit trail as JSON lines (who did what to whom, with what outcome).
    AuditLog(db::AuditLogArgs),
    /// Import a pretrained model (face-api's face recognition net).
    Import(faces::ImportArgs),
    /// Detect, landmark and align face photos into crops a face model takes.
    Align(faces::AlignArgs),
}

/// Opens the store an administration command works on, saying which on stderr; a SQLite
/// file that is not there is an error, not a new empty store.
pub async fn open_store(url: &str) -> anyhow::Result<dvsp_custody::store::Store> {
    eprintln!("store: {}", dvsp_custody::store::redact(url));
    Ok(dvsp_custody::store::Store::connect_existing(url).await?)
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
        let device = dvsp_core::set_device(cli.device)?;
        tracing::info!(device = ?device, "device");
    }
    match cli.command {
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Audit(a) => audit::run(a),
        Command::Tune(a) => tune::run(a),
        Command::Reproduce(a) => dvsp_lab::reproduce::run(a),
        Command::Bench(a) => dvsp_lab::bench::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Keys(a) => keys::keys(a),
        Command::Galleries(a) => keys::galleries(a),
        Command::Models(a) => tokio::runtime::Runtime::new()?.block_on(models::run(a)),
        Command::Retrain(a) => {
            eprintln!("store: {}", dvsp_custody::store::redact(&a.db));
            tokio::runtime::Runtime::new()?.block_on(dvsp_ops::retrain::run(a))
        }
        Command::Reembed(a) => {
            eprintln!("store: {}", dvsp_custody::store::redact(&a.db));
            dvsp_ops::reembed::run(a)
        }
        Command::Db(a) => db::db(a),
        Command::AuditLog(a) => db::audit_log(a),
        Command::Import(a) => faces::import(a),
        Command::Align(a) => faces::align(a),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
