//! `dvsp eval`: verification metrics of a model on its test split(s), written into model.json,
//! and the DET curve as det.png / det.svg in the model directory.
use std::path::{Path, PathBuf};

use super::DataArgs;
use crate::artifact::{self, ModelCard};
use crate::eval::{score_set, FMR_TARGETS};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory written by `dvsp train`.
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
}

/// Evaluates the model in `dir` on every test set of `data` (default: the card's data set),
/// updates its card and plots; returns the updated card.
pub fn evaluate(dir: &Path, data: &DataArgs) -> anyhow::Result<ModelCard> {
    let device = crate::device();
    let mut model = artifact::load(dir, device)?;
    let (spec, split) = data.load_for(&model.card)?;
    let mut sets = vec![("test".to_string(), &split.test)];
    if let Some((name, set)) = &split.extra_test {
        sets.push((name.clone(), set));
    }
    let mut curves = Vec::new();
    for (name, set) in sets {
        let pb =
            crate::train::progress_bar(1, &format!("eval {name}: embedding and scoring all pairs"));
        pb.tick();
        let scores = score_set(&model.net, set, device)?;
        pb.finish_and_clear();
        let report = scores.report(&FMR_TARGETS);
        println!(
            "{} [{name}] EER {:.3}% (T = {:.4}) over {} genuine / {} impostor pairs",
            dir.display(),
            report.eer * 100.0,
            report.eer_threshold,
            report.genuine_pairs,
            report.impostor_pairs
        );
        for p in &report.at_fmr {
            println!(
                "    FMR {:.0e}: FNMR {:.3}% at T = {:.4} (FMR measured {:.2e})",
                p.target,
                p.fnmr * 100.0,
                p.threshold,
                p.fmr
            );
        }
        curves.push((
            format!("{name} (EER {:.2}%)", report.eer * 100.0),
            scores.det(400),
        ));
        model.card.metrics.insert(name, report);
    }
    let title = format!("DET: {} on {}", model.card.net.method.name(), spec);
    crate::plot::det(&dir.join("det"), &title, &curves)?;
    artifact::write_card(dir, &model.card)?;
    Ok(model.card)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    evaluate(&a.model, &a.data)?;
    println!(
        "wrote {} and det.png / det.svg",
        a.model.join(artifact::CARD).display()
    );
    Ok(())
}
