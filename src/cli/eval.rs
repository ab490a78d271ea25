//! `dvsp eval`: verification metrics of a model on its test split(s), written into model.json,
//! and the DET curve as det.png / det.svg in the model directory.
use std::path::PathBuf;

use dvsp_core::artifact;
use dvsp_core::data::DataArgs;
use dvsp_core::eval::{evaluate, evaluate_lfw};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory written by `dvsp train`.
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// LFW protocol instead of all pairs: this pairs.txt over `--data folder:ROOT` (faces
    /// aligned as the model expects, e.g. by `dvsp align`); writes lfw.json.
    #[arg(long, requires = "data")]
    pub lfw_pairs: Option<PathBuf>,
    /// Inference arithmetic. With bf16 the metrics are printed beside the card's fp32 ones
    /// and nothing is written (the card describes the fp32 model).
    #[arg(long, value_enum, default_value_t = dvsp_core::model::Precision::Fp32)]
    pub precision: dvsp_core::model::Precision,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if let Some(pairs) = &a.lfw_pairs {
        let Some(dvsp_core::data::DataSpec::Folder(root)) = &a.data.data else {
            anyhow::bail!("--lfw-pairs needs --data folder:LFW_ROOT");
        };
        evaluate_lfw(&a.model, root, pairs)?;
        println!("wrote {}", a.model.join("lfw.json").display());
        return Ok(());
    }
    evaluate(&a.model, &a.data, a.precision)?;
    if a.precision == dvsp_core::model::Precision::Fp32 {
        println!(
            "wrote {} and det.png / det.svg",
            a.model.join(artifact::CARD).display()
        );
    }
    Ok(())
}
