//! `dvsp train`: train a feature extractor and write a model directory.
use std::path::PathBuf;

use anyhow::Context;

use super::DataArgs;
use crate::config::TrainConfig;
use crate::data::DataSpec;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: TrainConfig,
    #[command(flatten)]
    pub data: DataArgs,
    /// Output model directory (model.safetensors + model.json).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    train(&a)?;
    Ok(())
}

/// Trains as `a` says into `a.out` and prints the summary; returns the card.
pub fn train(a: &Args) -> anyhow::Result<crate::artifact::ModelCard> {
    let spec = a.data.data.clone().unwrap_or(DataSpec::Mnist);
    let split = spec
        .load(&a.data.root(), None)
        .with_context(|| format!("loading {spec}"))?;
    let card = crate::train::train(&a.config, &spec, &split, &a.out, crate::device())?;
    println!(
        "trained {} on {} ({} images, {} epochs) in {:.1}s, {:.0} img/s, final loss {:.4}, accuracy {:.4}\nmodel: {}",
        card.net.method.name(),
        spec,
        card.training.train_images,
        a.config.epochs,
        card.training.seconds,
        card.training.images_per_second,
        card.training.final_loss,
        card.training.final_accuracy,
        a.out.display()
    );
    Ok(card)
}
