//! `dvsp audit`: the feature-space CW-L2 robustness audit of a model (RI, eq. 17), with the
//! heat map of H_{k,l} (Figure 4) and a grid of adversarial samples (Figure 5).
use std::path::{Path, PathBuf};

use super::DataArgs;
use crate::artifact::{self, RobustnessSummary};
use crate::attack::cw::CwConfig;
use crate::audit::{AuditConfig, AuditReport, ThresholdAt};

#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Sampled pairs per ordered class pair (90 class pairs on MNIST).
    #[arg(long, default_value_t = 20)]
    pub pairs: usize,
    /// Adam steps per binary-search round.
    #[arg(long, default_value_t = CwConfig::default().steps)]
    pub steps: usize,
    /// Binary-search rounds over c.
    #[arg(long, default_value_t = CwConfig::default().search)]
    pub search: usize,
    /// The threshold to cross: eer, or fmr=X for a target of the model card.
    #[arg(long, default_value = "eer")]
    pub threshold_at: ThresholdAt,
    /// L2 budgets for the FGSM and PGD-L2 baselines, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub budgets: Vec<f64>,
    /// Pairs optimised at once.
    #[arg(long, default_value_t = 600)]
    pub batch: usize,
    /// Seed for sampling the attacked pairs.
    #[arg(long, default_value_t = 0)]
    pub audit_seed: u64,
}

impl AuditArgs {
    pub fn config(&self) -> AuditConfig {
        AuditConfig {
            pairs: self.pairs,
            threshold_at: self.threshold_at,
            cw: CwConfig {
                steps: self.steps,
                search: self.search,
                ..CwConfig::default()
            },
            budgets: self.budgets.clone(),
            pgd_steps: 10,
            batch: self.batch,
            seed: self.audit_seed,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory (evaluated: the threshold comes from its card).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub audit: AuditArgs,
    /// Pair mode: attack this photo towards `--target` and back instead of sampling pairs
    /// (face models find and crop the face first).
    #[arg(long, requires = "target")]
    pub probe: Option<PathBuf>,
    #[arg(long, requires = "probe")]
    pub target: Option<PathBuf>,
    /// Pair mode on a face model: also attack the probe towards this many faces of the LFW
    /// subset (the impostor pool) in the same batch.
    #[arg(long, default_value_t = 0, requires = "probe")]
    pub impostors: i64,
}

/// One direction of a pair-mode audit.
#[derive(Debug, serde::Serialize)]
pub struct PairAttack {
    pub probe: PathBuf,
    pub target: PathBuf,
    /// Cosine distance D before and after the attack; match when D <= threshold.
    pub distance_before: f64,
    pub distance_after: f64,
    pub threshold: f64,
    /// The smallest L2 perturbation found (pixels in [0, 1]); `None` if the attack failed.
    pub l2: Option<f64>,
    /// Its root mean square per pixel value.
    pub rms: Option<f64>,
}

/// The model input of a photo: the face crop for face models (with `faces`), else the
/// resized image.
fn input_of(
    model: &artifact::Model,
    faces: Option<&crate::face::FaceApi>,
    path: &Path,
) -> anyhow::Result<tch::Tensor> {
    let input = &model.card.net.input;
    Ok(match (input.face, faces) {
        (Some(how), Some(faces)) => crate::face::photo::crop_file(faces, path, how)?,
        _ => {
            let img =
                crate::data::folder::load_image(path, input.height as u32, input.width as u32)?;
            let img = img.to_kind(tch::Kind::Float) / 255.0;
            if input.channels == 1 {
                img.mean_dim(0, true, None)
            } else {
                img
            }
        }
    })
}

/// Pair mode: the minimal CW-L2 perturbation making the model accept `probe` as `target`,
/// and `target` as `probe` (both optimised in one batch). Writes attack_pair.json and the
/// Figure-5-style grid attack_pair.png (original, adversarial, amplified perturbation,
/// target) into the model directory.
pub fn audit_pair(
    dir: &Path,
    probe: &Path,
    target: &Path,
    impostors: i64,
    args: &AuditArgs,
) -> anyhow::Result<Vec<PairAttack>> {
    let model = artifact::load(dir, tch::Device::Cpu)?;
    let cfg = args.config();
    let threshold = cfg.threshold_at.from_card(&model.card)?;
    let faces = match model.card.net.input.face {
        Some(_) => Some(crate::face::photo::load_for(dir)?),
        None => None,
    };
    let (a, b) = (
        input_of(&model, faces.as_ref(), probe)?,
        input_of(&model, faces.as_ref(), target)?,
    );
    let mut x1 = vec![a.shallow_clone(), b.shallow_clone()];
    let mut x2 = vec![b.shallow_clone(), a.shallow_clone()];
    let mut names = vec![
        (probe.to_path_buf(), target.to_path_buf()),
        (target.to_path_buf(), probe.to_path_buf()),
    ];
    if impostors > 0 {
        anyhow::ensure!(
            model.card.net.input.face.is_some(),
            "--impostors needs a face model"
        );
        let input = &model.card.net.input;
        let pool = crate::face::samples::lfw_inputs(
            &crate::data::faces_root(),
            input.height,
            input.width,
        )?;
        for i in 0..impostors.min(pool.size()[0]) {
            x1.push(a.shallow_clone());
            x2.push(pool.get(i));
            names.push((
                probe.to_path_buf(),
                PathBuf::from(format!("lfw_subset.npy#{i}")),
            ));
        }
    }
    let (x1, x2) = (tch::Tensor::stack(&x1, 0), tch::Tensor::stack(&x2, 0));
    let goals = tch::no_grad(|| crate::model::unit(&model.net.features(&x2)));
    let before = tch::no_grad(|| crate::attack::distance(&model.net, &x1, &goals));
    let out = crate::attack::cw::attack(&model.net, &x1, &goals, threshold, &cfg.cw);
    let n = a.numel() as f64;
    let result: Vec<PairAttack> = names
        .into_iter()
        .enumerate()
        .map(|(i, (probe, target))| PairAttack {
            probe,
            target,
            distance_before: before.double_value(&[i as i64]),
            distance_after: out.distance[i],
            threshold,
            l2: out.l2[i],
            rms: out.l2[i].map(|l| l / n.sqrt()),
        })
        .collect();
    artifact::write_atomic(
        &dir.join("attack_pair.json"),
        serde_json::to_string_pretty(&result)?.as_bytes(),
    )?;
    let rows: Vec<[tch::Tensor; 3]> = (0..x1.size()[0].min(4))
        .map(|i| [x1.get(i), out.adversarial.get(i), x2.get(i)])
        .collect();
    crate::plot::attack_grid(&dir.join("attack_pair.png"), &rows, 2)?;
    Ok(result)
}

/// Audits the model in `dir`; writes audit.json, heatmap.{png,svg}, adversarial.png and the
/// summary into model.json. Returns the report.
pub fn audit(dir: &Path, data: &DataArgs, args: &AuditArgs) -> anyhow::Result<AuditReport> {
    let device = crate::device();
    let mut model = artifact::load(dir, device)?;
    let cfg = args.config();
    let threshold = cfg.threshold_at.from_card(&model.card)?;
    let (_, split) = data.load_for(&model.card)?;
    let (report, adv) = crate::audit::run(
        &model.net,
        &model.card.model_id,
        threshold,
        &split.test,
        &cfg,
        device,
    )?;
    artifact::write_atomic(
        &dir.join("audit.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    let title = format!(
        "{}: H(k,l), RI {}",
        model.card.net.method.name(),
        report
            .robustness
            .ri
            .map_or("-".into(), |r| format!("{r:.3}"))
    );
    crate::plot::heatmap(&dir.join("heatmap"), &[(title, &report.robustness.h)])?;
    // Figure 5: the first successful pair from each source class.
    let mut rows = Vec::new();
    for k in 0..split.test.classes {
        if let Some((i, r)) = report
            .pairs
            .iter()
            .enumerate()
            .find(|(_, r)| r.source_class == k && r.l2.is_some())
        {
            let img = |j: usize| {
                crate::data::to_input(&split.test.images.get(j as i64), tch::Device::Cpu)
            };
            rows.push([img(r.source_index), adv.get(i as i64), img(r.target_index)]);
        }
    }
    if !rows.is_empty() {
        crate::plot::attack_grid(&dir.join("adversarial.png"), &rows, 4)?;
    }
    model.card.robustness = Some(RobustnessSummary {
        ri: report.robustness.ri,
        success_rate: report.robustness.success_rate,
        threshold,
        threshold_at: cfg.threshold_at.to_string(),
        pairs_per_class_pair: cfg.pairs,
        seconds: report.seconds,
    });
    artifact::write_card(dir, &model.card)?;
    Ok(report)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if let (Some(probe), Some(target)) = (&a.probe, &a.target) {
        let results = audit_pair(&a.model, probe, target, a.impostors, &a.audit)?;
        for r in &results {
            println!(
                "{} -> {}: D {:.4} -> {:.4} (T = {:.4}), L2 {} (RMS per pixel value {})",
                r.probe.display(),
                r.target.display(),
                r.distance_before,
                r.distance_after,
                r.threshold,
                r.l2.map_or("- (attack failed)".into(), |v| format!("{v:.3}")),
                r.rms.map_or("-".into(), |v| format!("{v:.4}"))
            );
        }
        if a.impostors > 0 {
            let mut l2: Vec<f64> = results[2..].iter().filter_map(|r| r.l2).collect();
            l2.sort_by(f64::total_cmp);
            println!(
                "impostor pool: {} of {} LFW faces reached, L2 min {} median {}",
                l2.len(),
                results.len() - 2,
                l2.first().map_or("-".into(), |v| format!("{v:.3}")),
                l2.get(l2.len() / 2)
                    .map_or("-".into(), |v| format!("{v:.3}"))
            );
        }
        println!(
            "wrote {} and {} (first four pairs)",
            a.model.join("attack_pair.json").display(),
            a.model.join("attack_pair.png").display()
        );
        return Ok(());
    }
    let r = audit(&a.model, &a.data, &a.audit)?;
    let rb = &r.robustness;
    let failed: usize = rb.failures.iter().flatten().sum();
    println!(
        "{}: RI {} at T = {:.4} ({}), success {:.1}% ({} of {} pairs failed), L2 median {} mean {}, {:.0}s, {:.0} pair-steps/s",
        a.model.display(),
        rb.ri.map_or("-".into(), |v| format!("{v:.3}")),
        r.threshold,
        r.config.threshold_at,
        rb.success_rate * 100.0,
        failed,
        r.pairs.len(),
        rb.median_l2.map_or("-".into(), |v| format!("{v:.3}")),
        rb.mean_l2.map_or("-".into(), |v| format!("{v:.3}")),
        r.seconds,
        r.pair_steps_per_second
    );
    for b in &r.baselines {
        println!(
            "    {} at eps {}: success {:.1}%",
            b.attack,
            b.eps,
            b.success_rate * 100.0
        );
    }
    println!(
        "wrote audit.json, heatmap.png/svg, adversarial.png in {}",
        a.model.display()
    );
    Ok(())
}
