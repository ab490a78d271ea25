//! Verification evaluation: embeddings without gradients, all genuine and impostor pairs,
//! error rates (eq. 16), DET curve.
use std::path::Path;

use tch::Tensor;

use crate::data::Dataset;
use crate::metrics::eer::Scores;
use crate::model::{embed, Net};
use crate::{Error, Result};

/// FMR targets reported everywhere: FNMR at FMR = 1e-2, 1e-3, 1e-4.
pub const FMR_TARGETS: [f64; 3] = [1e-2, 1e-3, 1e-4];

/// Cosine distances D = 1 - cos of all pairs i < j, split into genuine (same label) and
/// impostor pairs. `emb`: unit-norm `[N, k]` on the CPU; `labels`: `[N]`.
pub fn pair_scores(emb: &Tensor, labels: &Tensor) -> Result<Scores> {
    let n = emb.size()[0];
    let labels: Vec<i64> = Vec::<i64>::try_from(labels)?;
    let (mut genuine, mut impostor) = (Vec::new(), Vec::with_capacity((n * (n - 1) / 2) as usize));
    let block = 512;
    let mut i0 = 0;
    while i0 < n {
        let b = block.min(n - i0);
        let sim = emb.narrow(0, i0, b).matmul(&emb.tr()); // [b, N]
        let sim: Vec<f32> = Vec::<f32>::try_from(sim.flatten(0, -1))?;
        for r in 0..b as usize {
            let i = i0 as usize + r;
            let row = &sim[r * n as usize..(r + 1) * n as usize];
            for j in i + 1..n as usize {
                let d = (1.0 - row[j]).clamp(0.0, 2.0);
                if labels[i] == labels[j] {
                    genuine.push(d);
                } else {
                    impostor.push(d);
                }
            }
        }
        i0 += b;
    }
    Scores::new(genuine, impostor)
}

/// Scores of every pair in `set` under `net`.
pub fn score_set(net: &Net, set: &Dataset, device: tch::Device) -> Result<Scores> {
    let emb = embed(net, &set.images, 500, device);
    pair_scores(&emb, &set.labels)
}

/// LFW's protocol on `root` (one folder per identity): every image `pairs` names is loaded at
/// the net's input size (decoded on all cores) and embedded once, each pair scored by cosine
/// distance, then the folds cross-validated.
pub fn lfw(
    net: &Net,
    root: &std::path::Path,
    pairs: &[crate::metrics::lfw::Pair],
    device: tch::Device,
) -> Result<crate::metrics::lfw::LfwReport> {
    use std::collections::BTreeMap;
    let images: BTreeMap<&crate::metrics::lfw::Image, usize> = pairs
        .iter()
        .flat_map(|p| [&p.a, &p.b])
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .enumerate()
        .map(|(i, im)| (im, i))
        .collect();
    let paths: Vec<std::path::PathBuf> = images.keys().map(|im| im.path(root)).collect();
    let input = &net.spec.input;
    if input.channels != 3 {
        return Err(crate::Error::Invalid(format!(
            "the LFW protocol needs a model on RGB faces; this one takes {} channel(s)",
            input.channels
        )));
    }
    let stacked =
        crate::data::folder::load_images(&paths, input.height as u32, input.width as u32)?;
    let emb = embed(net, &stacked, 64, device);
    let emb: Vec<f32> = Vec::<f32>::try_from(emb.flatten(0, -1))?;
    let k = net.spec.feature_dim as usize;
    let row = |im: &crate::metrics::lfw::Image| &emb[images[im] * k..(images[im] + 1) * k];
    let scored: Vec<(f32, bool, usize)> = pairs
        .iter()
        .map(|p| {
            let cos: f32 = row(&p.a).iter().zip(row(&p.b)).map(|(x, y)| x * y).sum();
            ((1.0 - cos).clamp(0.0, 2.0), p.same, p.fold)
        })
        .collect();
    let folds = pairs.iter().map(|p| p.fold).max().map_or(0, |f| f + 1);
    crate::metrics::lfw::cross_validate(&scored, folds)
}

/// Evaluates the model in `dir` on every test set of `data` (default: the card's data set)
/// in `precision`: at fp32 it updates its card and plots; otherwise it prints each EER beside
/// the card's fp32 one and writes nothing. Returns the card with the new metrics.
pub fn evaluate(
    dir: &Path,
    data: &crate::data::DataArgs,
    precision: crate::model::Precision,
) -> Result<crate::artifact::ModelCard> {
    let device = crate::device();
    let mut model = crate::artifact::load(dir, device)?;
    model.net.set_precision(&mut model.vs, precision);
    let fp32 = precision == crate::model::Precision::Fp32;
    let (spec, split) = data.load_for(&model.card)?;
    let mut sets = vec![("test".to_string(), &split.test)];
    if let Some((name, set)) = &split.extra_test {
        sets.push((name.clone(), set));
    }
    let mut curves = Vec::new();
    for (name, set) in sets {
        let pb = crate::progress::progress_bar(
            1,
            &format!("eval {name}: embedding and scoring all pairs"),
        );
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
        crate::artifact::write_card(dir, &model.card)?;
    }
    Ok(model.card)
}

/// LFW's 10-fold protocol of the model in `dir` on `root`, written to `dir/lfw.json`.
pub fn evaluate_lfw(
    dir: &Path,
    root: &Path,
    pairs_txt: &Path,
) -> Result<crate::metrics::lfw::LfwReport> {
    let text = std::fs::read_to_string(pairs_txt).map_err(Error::io(pairs_txt))?;
    let pairs = crate::metrics::lfw::parse_pairs(&text).map_err(|e| Error::BadData {
        path: pairs_txt.into(),
        message: e.to_string(),
    })?;
    let model = crate::artifact::load(dir, crate::device())?;
    let pb = crate::progress::progress_bar(
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
    crate::artifact::write_atomic(&dir.join("lfw.json"), &serde_json::to_vec_pretty(&r)?)?;
    Ok(r)
}
