//! `dvsp train`: train a feature extractor and write a model directory.
use dvsp_core::train::{train_job, TrainArgs};

pub fn run(a: TrainArgs) -> anyhow::Result<()> {
    let card = train_job(&a)?;
    println!(
        "trained {} on {} ({} images, {} epochs) in {:.1}s, {:.0} img/s, final loss {:.4}, accuracy {:.4}\nmodel: {}",
        card.net.method.name(),
        card.training.dataset,
        card.training.train_images,
        a.config.epochs,
        card.training.seconds,
        card.training.images_per_second,
        card.training.final_loss,
        card.training.final_accuracy,
        a.out.display()
    );
    Ok(())
}
