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
    /// LFW protocol instead of all pairs: this pairs.txt over `--data folder:ROOT` (faces
    /// aligned as the model expects, e.g. by `dvsp align`); writes lfw.json.
    #[arg(long, requires = "data")]
    pub lfw_pairs: Option<PathBuf>,
    /// Inference arithmetic. With bf16 the metrics are printed beside the card's fp32 ones
    /// and nothing is written (the card describes the fp32 model).
    #[arg(long, value_enum, default_value_t = crate::model::Precision::Fp32)]
    pub precision: crate::model::Precision,
}

/// Evaluates the model in `dir` on every test set of `data` (default: the card's data set)
/// in `precision`: at fp32 it updates its card and plots; otherwise it prints each EER beside
/// the card's fp32 one and writes nothing. Returns the card with the new metrics.
pub fn evaluate(
    dir: &Path,
    data: &DataArgs,
    precision: crate::model::Precision,
) -> anyhow::Result<ModelCard> {
    let device = crate::device();
    let mut model = artifact::load(dir, device)?;
    model.net.set_precision(&mut model.vs, precision);
    let fp32 = precision == crate::model::Precision::Fp32;
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
        if let (false, Some(card)) = (fp32, model.card.metrics.get(&name)) {
            println!(
                "    {precision:?} EER {:.3}% vs the card's fp32 {:.3}%: {:+.3} pp",
                report.eer * 100.0,
                card.eer * 100.0,
                (report.eer - card.eer) * 100.0
            );
        }
        curves.push((
            format!("{name} (EER {:.2}%)", report.eer * 100.0),
            scores.det(400),
        ));
        model.card.metrics.insert(name, report);
    }
    if fp32 {
        let title = format!("DET: {} on {}", model.card.net.method.name(), spec);
        crate::plot::det(&dir.join("det"), &title, &curves)?;
        artifact::write_card(dir, &model.card)?;
    }
    Ok(model.card)
}

/// LFW's 10-fold protocol of the model in `dir` on `root`, written to `dir/lfw.json`.
pub fn evaluate_lfw(
    dir: &Path,
    root: &Path,
    pairs_txt: &Path,
) -> anyhow::Result<crate::metrics::lfw::LfwReport> {
    use anyhow::Context;
    let text = std::fs::read_to_string(pairs_txt)
        .with_context(|| format!("reading {}", pairs_txt.display()))?;
    let pairs = crate::metrics::lfw::parse_pairs(&text)
        .with_context(|| format!("parsing {}", pairs_txt.display()))?;
    let model = artifact::load(dir, crate::device())?;
    let pb = crate::train::progress_bar(
        1,
        &format!("LFW: embedding the images of {} pairs", pairs.len()),
    );
    pb.tick();
    let r = crate::eval::lfw(&model.net, root, &pairs, crate::device())?;
    pb.finish_and_clear();
    for (k, f) in r.folds.iter().enumerate() {
        println!(
            "    fold {:2}: accuracy {:.2}% at T = {:.4}",
            k + 1,
            f.accuracy * 100.0,
            f.threshold
        );
    }
    println!(
        "{} LFW {} pairs: accuracy {:.2}% +- {:.2}% (SE; std {:.2}%), EER {:.2}% (T = {:.4})",
        dir.display(),
        r.pairs,
        r.accuracy_mean * 100.0,
        r.accuracy_se * 100.0,
        r.accuracy_std * 100.0,
        r.eer * 100.0,
        r.eer_threshold
    );
    artifact::write_atomic(&dir.join("lfw.json"), &serde_json::to_vec_pretty(&r)?)?;
    Ok(r)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if let Some(pairs) = &a.lfw_pairs {
        let Some(crate::data::DataSpec::Folder(root)) = &a.data.data else {
            anyhow::bail!("--lfw-pairs needs --data folder:LFW_ROOT");
        };
        evaluate_lfw(&a.model, root, pairs)?;
        println!("wrote {}", a.model.join("lfw.json").display());
        return Ok(());
    }
    evaluate(&a.model, &a.data, a.precision)?;
    if a.precision == crate::model::Precision::Fp32 {
        println!(
            "wrote {} and det.png / det.svg",
            a.model.join(artifact::CARD).display()
        );
    }
    Ok(())
}
