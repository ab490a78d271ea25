//! An audit as a job: its settings from the command line (`AuditArgs`), the audit of a model
//! directory written beside the model (audit.json, the heat map of H_{k,l} (Figure 4), the
//! convergence plot, a grid of adversarial samples (Figure 5), the card's summary), and the
//! pair mode that attacks two photos.
use std::path::{Path, PathBuf};

use crate::artifact::{self, RobustnessSummary};
use crate::attack::ensemble;
use crate::attack::Goal;
use crate::audit::AuditReport;
use crate::config::CwConfig;
use crate::config::DdnConfig;
use crate::config::EnsembleConfig;
use crate::config::{AuditConfig, ThresholdAt};
use crate::data::DataArgs;
use crate::{Error, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Sampled pairs per ordered class pair (90 class pairs on MNIST).
    #[arg(long, default_value_t = 20)]
    pub pairs: usize,
    /// The threshold to cross: eer, or fmr=X for a target of the model card.
    #[arg(long, default_value = "eer")]
    pub threshold_at: ThresholdAt,
    /// CW: most Adam steps per binary-search round.
    #[arg(long, default_value_t = EnsembleConfig::default().cw.steps)]
    pub cw_steps: usize,
    /// CW: binary-search rounds over c (0: CW is not in the ensemble, the default; 6 turns
    /// it on as Table 1 ran it).
    #[arg(long, default_value_t = EnsembleConfig::default().cw.search)]
    pub cw_search: usize,
    /// CW: Adam learning rate at the start of a round (cosine-decayed to 1/100).
    #[arg(long, default_value_t = EnsembleConfig::default().cw.lr)]
    pub cw_lr: f64,
    /// CW: the first c.
    #[arg(long, default_value_t = EnsembleConfig::default().cw.c0)]
    pub cw_c0: f64,
    /// CW: confidence margin kappa of the hinge.
    #[arg(long, default_value_t = EnsembleConfig::default().cw.kappa)]
    pub cw_kappa: f64,
    /// CW: a round ends after this many steps without a relative improvement of --cw-tol.
    #[arg(long, default_value_t = EnsembleConfig::default().cw.patience)]
    pub cw_patience: usize,
    /// CW: the relative improvement a round must make within --cw-patience steps.
    #[arg(long, default_value_t = EnsembleConfig::default().cw.tol)]
    pub cw_tol: f64,
    /// DDN: steps.
    #[arg(long, default_value_t = EnsembleConfig::default().ddn.steps)]
    pub ddn_steps: usize,
    /// DDN: the first L2 radius.
    #[arg(long, default_value_t = EnsembleConfig::default().ddn.init_norm)]
    pub ddn_init_norm: f64,
    /// DDN: the first step length alpha (cosine-decayed to 1/100).
    #[arg(long, default_value_t = EnsembleConfig::default().ddn.alpha)]
    pub ddn_alpha: f64,
    /// DDN: the first radius factor gamma (cosine-decayed to 1/100).
    #[arg(long, default_value_t = EnsembleConfig::default().ddn.gamma)]
    pub ddn_gamma: f64,
    /// DDN: runs from random starts at the segment bound's distance from x1.
    #[arg(long, default_value_t = EnsembleConfig::default().ddn.restarts)]
    pub ddn_restarts: usize,
    /// Steps of the PGD-L2 check at each pair's ensemble budget.
    #[arg(long, default_value_t = EnsembleConfig::default().pgd_steps)]
    pub pgd_check_steps: usize,
    /// Bisection steps (shrinking successes towards x1, the segment [x1, x2], 8 bits).
    #[arg(long, default_value_t = EnsembleConfig::default().bisect)]
    pub bisect: usize,
    /// L2 budgets of the fixed-budget FGSM and PGD-L2 success rates, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub budgets: Vec<f64>,
    /// PGD steps of those success rates.
    #[arg(long, default_value_t = 20)]
    pub pgd_steps: usize,
    /// Pairs optimised at once.
    #[arg(long, default_value_t = 600)]
    pub batch: usize,
    /// Seed for sampling the attacked pairs.
    #[arg(long, default_value_t = 0)]
    pub audit_seed: u64,
    /// About this many pairs (as many from every class pair) are attacked again at each
    /// multiple of the budget in --convergence-budgets.
    #[arg(long, default_value_t = 180)]
    pub convergence_pairs: usize,
    /// Multiples of the attack budget for the convergence re-attack; given with no value,
    /// none (no convergence evidence: the audit then says so).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "3,10")]
    pub convergence_budgets: Vec<usize>,
}

impl AuditArgs {
    /// The settings `dvsp audit` takes from `argv` (its first item is the command's name),
    /// then the defaults.
    pub fn from_argv<I, T>(argv: I) -> std::result::Result<AuditArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Audit {
            #[command(flatten)]
            args: AuditArgs,
        }
        <Audit as clap::Parser>::try_parse_from(argv).map(|a| a.args)
    }

    pub fn config(&self) -> AuditConfig {
        AuditConfig {
            pairs: self.pairs,
            threshold_at: self.threshold_at,
            attack: EnsembleConfig {
                cw: CwConfig {
                    steps: self.cw_steps,
                    search: self.cw_search,
                    lr: self.cw_lr,
                    c0: self.cw_c0,
                    kappa: self.cw_kappa,
                    patience: self.cw_patience,
                    tol: self.cw_tol,
                },
                ddn: DdnConfig {
                    steps: self.ddn_steps,
                    init_norm: self.ddn_init_norm,
                    alpha: self.ddn_alpha,
                    gamma: self.ddn_gamma,
                    restarts: self.ddn_restarts,
                },
                pgd_steps: self.pgd_check_steps,
                bisect: self.bisect,
            },
            budgets: self.budgets.clone(),
            pgd_steps: self.pgd_steps,
            batch: self.batch,
            seed: self.audit_seed,
            convergence_pairs: self.convergence_pairs,
            convergence_budgets: self.convergence_budgets.clone(),
        }
    }
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
    /// The smallest verified L2 perturbation found by the ensemble (pixels in [0, 1]).
    pub l2: f64,
    /// Its root mean square per pixel value.
    pub rms: f64,
    /// The attack that found it.
    pub winner: ensemble::Attack,
    /// The same perturbation with the image rounded to 8 bits.
    pub l2_8bit: f64,
}

/// The model input of a photo: the face crop for face models (with `faces`), else the
/// resized image.
fn input_of(
    model: &artifact::Model,
    faces: Option<&crate::face::FaceApi>,
    path: &Path,
) -> Result<tch::Tensor> {
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

/// Pair mode: the smallest perturbation the ensemble finds making the model accept `probe` as `target`,
/// and `target` as `probe` (both optimised in one batch). Writes attack_pair.json and the
/// Figure-5-style grid attack_pair.png (original, adversarial, amplified perturbation,
/// target) into the model directory.
pub fn audit_pair(
    dir: &Path,
    probe: &Path,
    target: &Path,
    impostors: i64,
    args: &AuditArgs,
) -> Result<Vec<PairAttack>> {
    let model = artifact::load(dir, crate::device())?;
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
        if model.card.net.input.face.is_none() {
            return Err(Error::Invalid("--impostors needs a face model".into()));
        }
        let input = &model.card.net.input;
        let pool =
            crate::data::faces::lfw_inputs(&crate::face::faces_root(), input.height, input.width)?;
        for i in 0..impostors.min(pool.size()[0]) {
            x1.push(a.shallow_clone());
            x2.push(pool.get(i));
            names.push((
                probe.to_path_buf(),
                PathBuf::from(format!("lfw_subset.npy#{i}")),
            ));
        }
    }
    let device = model.vs.device();
    let (x1, x2) = (
        tch::Tensor::stack(&x1, 0).to_device(device),
        tch::Tensor::stack(&x2, 0).to_device(device),
    );
    let goals = tch::no_grad(|| crate::model::unit(&model.net.features(&x2)));
    let before = tch::no_grad(|| crate::attack::distance(&model.net, &x1, &goals));
    let goal = Goal {
        target: &goals,
        t: threshold,
    };
    let out = ensemble::attack(&model.net, &x1, &x2, goal, &cfg.attack)?;
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
            rms: out.l2[i] / n.sqrt(),
            winner: out.winner[i],
            l2_8bit: out.l2_8bit[i],
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

/// The file name of an audit's output `stem.ext` at threshold `t`: `stem.ext` at the EER
/// threshold, `stem_fmr=1e-3.ext` at another, so audits at both thresholds live side by side.
pub fn output_name(stem: &str, ext: &str, t: ThresholdAt) -> String {
    match t {
        ThresholdAt::Eer => format!("{stem}.{ext}"),
        other => format!("{stem}_{other}.{ext}"),
    }
}

/// Audits the model in `dir`; writes audit.json, heatmap.{png,svg}, adversarial.png (with the
/// threshold in their names when it is not the EER one, see `output_name`) and the
/// summary into model.json. With `transfer_from`, also the transfer check from that model.
/// Returns the report.
pub fn audit(
    dir: &Path,
    data: &DataArgs,
    cfg: &AuditConfig,
    transfer_from: Option<&Path>,
) -> Result<AuditReport> {
    let device = crate::device();
    let mut model = artifact::load(dir, device)?;
    let threshold = cfg.threshold_at.from_card(&model.card)?;
    let (_, split) = data.load_for(&model.card)?;
    // The transfer source is read before the audit, so a bad one fails at once.
    let source = transfer_from
        .map(|from| -> Result<_> {
            let source = artifact::load(from, device)?;
            if source.card.net.input != model.card.net.input {
                return Err(Error::Invalid(format!(
                    "--transfer-from {}: its input ({:?}) is not the audited model's ({:?})",
                    from.display(),
                    source.card.net.input,
                    model.card.net.input
                )));
            }
            let threshold = cfg.threshold_at.from_card(&source.card)?;
            Ok((source, threshold))
        })
        .transpose()?;
    let (mut report, adv) = crate::audit::run(
        &model.net,
        &model.card.model_id,
        threshold,
        &split.test,
        cfg,
    )?;
    if let Some((source, source_threshold)) = source {
        report.transfer = Some(crate::audit::transfer(
            &model.net,
            &source.net,
            &source.card.model_id,
            source_threshold,
            &split.test,
            &report,
        )?);
    }
    artifact::write_atomic(
        &dir.join(output_name("audit", "json", cfg.threshold_at)),
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
    let stem = |s: &str| dir.join(output_name(s, "png", cfg.threshold_at));
    crate::plot::heatmap(&stem("heatmap"), &[(title, &report.robustness.h)])?;
    crate::plot::convergence(
        &stem("ri_vs_budget"),
        model.card.net.method.name(),
        &report.convergence.points,
    )?;
    // Figure 5: the first pair from each source class.
    let mut rows = Vec::new();
    for k in 0..split.test.classes {
        if let Some((i, r)) = report
            .pairs
            .iter()
            .enumerate()
            .find(|(_, r)| r.source_class == k)
        {
            let img = |j: usize| {
                crate::data::to_input(&split.test.images.get(j as i64), tch::Device::Cpu)
            };
            rows.push([img(r.source_index), adv.get(i as i64), img(r.target_index)]);
        }
    }
    if !rows.is_empty() {
        crate::plot::attack_grid(&stem("adversarial"), &rows, 4)?;
    }
    model.card.robustness = Some(RobustnessSummary {
        ri: report.robustness.ri,
        ri_8bit: report.robustness_8bit.ri,
        convergence_ratio: Some(report.convergence.ratio),
        converged: Some(report.convergence.converged),
        threshold,
        threshold_at: cfg.threshold_at.to_string(),
        pairs_per_class_pair: cfg.pairs,
        seconds: report.seconds,
        config: Some(cfg.clone()),
    });
    artifact::write_card(dir, &model.card)?;
    Ok(report)
}
