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
    /// Log lines on stderr: text (colour only on a terminal, never with NO_COLOR), or json
    /// (one object per line, for log shippers).
    #[arg(long, global = true, env = "DVSP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Where and how a command that runs a model computes (only those commands take it).
#[derive(Debug, clap::Args)]
pub struct Compute {
    /// Intra-op threads for libtorch (default: all cores).
    #[arg(long, env = "DVSP_THREADS")]
    pub threads: Option<i32>,
    /// Where models run and train: cpu, cuda (an error without a GPU) or auto.
    #[arg(long, env = "DVSP_DEVICE", value_enum, default_value_t = dvsp_core::DeviceChoice::Auto)]
    pub device: dvsp_core::DeviceChoice,
}

impl Compute {
    /// Sets libtorch's threads and the process's device.
    fn apply(&self) -> anyhow::Result<()> {
        if let Some(t) = self.threads {
            anyhow::ensure!(t >= 1, "--threads must be at least 1");
            tch::set_num_threads(t);
        }
        let device = dvsp_core::set_device(self.device)?;
        tracing::info!(device = ?device, "device");
        Ok(())
    }
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
    Train {
        #[command(flatten)]
        compute: Compute,
        #[command(flatten)]
        args: dvsp_core::train::TrainArgs,
    },
    /// EER, FNMR at FMR targets and the DET curve of a trained model.
    Eval {
        #[command(flatten)]
        compute: Compute,
        #[command(flatten)]
        args: eval::Args,
    },
    /// The robustness audit: RI (eq. 17) by a converged minimal-perturbation ensemble, the
    /// certified bound, heat map, adversarial samples.
    Audit {
        #[command(flatten)]
        compute: Compute,
        #[command(flatten)]
        args: audit::Args,
    },
    /// Choose a method's hyperparameters on a validation split of the training images.
    Tune {
        #[command(flatten)]
        compute: Compute,
        #[command(flatten)]
        args: dvsp_core::tune::TuneArgs,
    },
    /// Reproduce the paper's tables end to end.
    Reproduce {
        #[command(flatten)]
        compute: Compute,
        #[command(flatten)]
        args: dvsp_lab::reproduce::Args,
    },
    /// Benchmarks, reported as ratios against a reference run in the same command.
    Bench {
        #[command(flatten)]
        compute: Compute,
        #[command(flatten)]
        args: dvsp_lab::bench::Args,
    },
    /// The verification service (enroll, verify, identify) on REST, gRPC and metrics ports.
    Serve {
        #[command(flatten)]
        compute: Compute,
        #[command(flatten)]
        args: dvsp_server::config::ServeArgs,
    },
    /// API keys for the service.
    Keys(keys::KeysArgs),
    /// Galleries (tenants) of the service.
    Galleries(keys::GalleriesArgs),
    /// The model registry: register, list, show, promote (through the gate), retire.
    Models(models::Args),
    /// The admin retraining job: train, evaluate, audit, register, gate, promote.
    Retrain {
        #[command(flatten)]
        compute: Compute,
        #[command(flatten)]
        args: dvsp_ops::retrain::Args,
    },
    /// Template migration: embed every retained enrollment image with a new model.
    Reembed {
        #[command(flatten)]
        compute: Compute,
        #[command(flatten)]
        args: dvsp_ops::reembed::Args,
    },
    /// Database administration: migrations, template keys and their rotation.
    Db(db::DbArgs),
    /// The service's audit trail as JSON lines (who did what to whom, with what outcome).
    AuditLog(db::AuditLogArgs),
    /// Import a pretrained model (face-api's face recognition net).
    Import {
        #[command(flatten)]
        compute: Compute,
        #[command(flatten)]
        args: faces::ImportArgs,
    },
    /// Detect, landmark and align face photos into crops a face model takes.
    Align {
        #[command(flatten)]
        compute: Compute,
        #[command(flatten)]
        args: faces::AlignArgs,
    },
}

/// Opens the store an administration command works on, saying which on stderr; a SQLite
/// file that is not there is an error, not a new empty store.
pub async fn open_store(url: &str) -> anyhow::Result<dvsp_custody::store::Store> {
    eprintln!("store: {}", dvsp_custody::store::redact(url));
    Ok(dvsp_custody::store::Store::connect_existing(url).await?)
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train { compute, args } => compute.apply().and_then(|()| train::run(args)),
        Command::Eval { compute, args } => compute.apply().and_then(|()| eval::run(args)),
        Command::Audit { compute, args } => compute.apply().and_then(|()| audit::run(args)),
        Command::Tune { compute, args } => compute.apply().and_then(|()| tune::run(args)),
        Command::Reproduce { compute, args } => {
            compute.apply()?;
            dvsp_lab::reproduce::run(args)
        }
        Command::Bench { compute, args } => {
            compute.apply()?;
            dvsp_lab::bench::run(args)
        }
        Command::Serve { compute, args } => compute.apply().and_then(|()| serve::run(args)),
        Command::Keys(a) => keys::keys(a),
        Command::Galleries(a) => keys::galleries(a),
        Command::Models(a) => tokio::runtime::Runtime::new()?.block_on(models::run(a)),
        Command::Retrain { compute, args } => {
            compute.apply()?;
            eprintln!("store: {}", dvsp_custody::store::redact(&args.db));
            tokio::runtime::Runtime::new()?.block_on(dvsp_ops::retrain::run(args))
        }
        Command::Reembed { compute, args } => {
            compute.apply()?;
            eprintln!("store: {}", dvsp_custody::store::redact(&args.db));
            dvsp_ops::reembed::run(args)
        }
        Command::Db(a) => db::db(a),
        Command::AuditLog(a) => db::audit_log(a),
        Command::Import { compute, args } => compute.apply().and_then(|()| faces::import(args)),
        Command::Align { compute, args } => compute.apply().and_then(|()| faces::align(args)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    /// Every subcommand and every argument a person can pass says what it is in `--help`.
    #[test]
    fn every_command_and_argument_is_described() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {}", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "dvsp", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
