//! Verification evaluation: embeddings without gradients, all genuine and impostor pairs,
//! error rates (eq. 16), DET curve.
use tch::Tensor;

use crate::data::Dataset;
use crate::metrics::eer::Scores;
use crate::model::{embed, Net};
use crate::Result;

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
