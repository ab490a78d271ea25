//! The training loop (Algorithm 1 for dvsp; plain mini-batch Adam for the others).
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::artifact::{self, ModelCard, Training};
use crate::config::TrainConfig;
use crate::data::{to_input, DataSpec, Split};
use crate::loss;
use crate::model::{InputSpec, Net, NetSpec, StepOut};
use crate::{Error, Result};

/// A progress bar for a long job: hidden when stderr is not a terminal.
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:30}} {{pos}}/{{len}} [{{elapsed_precise}}<{{eta_precise}}] {{msg}}"
        ))
        .expect("static template"),
    );
    pb
}

/// Steps between reads of the running loss and accuracy from the device (each read is a
/// host sync; a non-finite loss is caught at the next one).
const SYNC_EVERY: usize = 50;

/// The loss of one optimiser step (Algorithm 1, lines 4-6) and the labels it was taken on.
/// With the eq. 15 step, the adversarial batch x' = x + eps * grad_x L' / ||grad_x L'|| is
/// built from the gradient of the clean batch's loss with respect to each input, and the
/// update takes the loss of the concatenated batch [x; x']. The clean half is forwarded twice
/// (for the gradient, then in the update): keeping the first pass's graph and forwarding x'
/// alone was measured slower on this 2-core CPU (`dvsp bench train`, README), as two
/// half-size passes cost more than one full-size one and the kept graph back-propagates to
/// the clean input too.
pub fn step_loss(
    net: &Net,
    x: &Tensor,
    y: &Tensor,
    cfg: &TrainConfig,
    iter: usize,
) -> Result<(StepOut, Tensor)> {
    if cfg.eps() <= 0.0 {
        return Ok((net.loss(x, y, cfg, iter)?, y.shallow_clone()));
    }
    let xg = x.detach().set_requires_grad(true);
    let clean = net.loss(&xg, y, cfg, iter)?;
    let grad = Tensor::f_run_backward(&[&clean.loss], &[&xg], false, false)?.remove(0);
    let xa = loss::dvsp::adversarial_step(x, &grad, cfg.eps()).detach();
    let (x, y) = (Tensor::cat(&[x, &xa], 0), Tensor::cat(&[y, y], 0));
    Ok((net.loss(&x, &y, cfg, iter)?, y))
}

/// The paper's face augmentation: each image of `[B, C, H, W]` mirrored left-right with
/// probability 1/2 (applied to RGB, i.e. face, data).
pub fn random_mirror(x: &Tensor) -> Tensor {
    let b = x.size()[0];
    let flip = Tensor::rand([b, 1, 1, 1], (Kind::Float, x.device())).lt(0.5);
    x.flip([3]).where_self(&flip, x)
}

/// Trains a model on `split.train` and writes it to `out` (weights + card). Returns the card.
pub fn train(
    cfg: &TrainConfig,
    data: &DataSpec,
    split: &Split,
    out: &Path,
    device: Device,
) -> Result<ModelCard> {
    let train = if cfg.limit > 0 {
        split.train.head(cfg.limit)
    } else {
        split.train.head(usize::MAX)
    };
    let n = train.len();
    if n < cfg.batch_size || cfg.batch_size == 0 {
        return Err(Error::Invalid(format!(
            "{n} training images cannot fill a batch of {}",
            cfg.batch_size
        )));
    }
    if cfg.epochs == 0 || cfg.samples < 1 || cfg.feature_dim < 2 {
        return Err(Error::Invalid(
            "epochs and samples must be >= 1, feature_dim >= 2".into(),
        ));
    }
    tch::manual_seed(cfg.seed as i64);
    let shape = train.shape();
    let mut input = InputSpec::for_shape(shape);
    if cfg.align_faces {
        if shape != [3, 112, 96] {
            return Err(Error::Invalid(format!(
                "--align-faces needs 3x112x96 faces (dvsp align), the data are {shape:?}"
            )));
        }
        input.face = Some(crate::model::FaceCrop::Sphereface112x96);
        crate::face::photo::copy_detector(&crate::face::model_dir(), out)?;
    }
    let spec = NetSpec {
        method: cfg.method,
        backbone: cfg.backbone_for(shape),
        input,
        feature_dim: cfg.feature_dim,
        classes: train.classes as i64,
        radius: cfg.radius,
    };
    let vs = nn::VarStore::new(device);
    let mut net = Net::new(&vs.root(), spec.clone());
    let mut opt = nn::Adam::default().build(&vs, cfg.lr)?;
    let batches = n / cfg.batch_size;
    let pb = progress_bar(
        (batches * cfg.epochs) as u64,
        &format!("train {}", cfg.method.name()),
    );
    let start = Instant::now();
    let (mut iter, mut last_loss, mut last_acc) = (0usize, f64::NAN, 0.0);
    for epoch in 0..cfg.epochs {
        let perm = Tensor::randperm(n as i64, (Kind::Int64, Device::Cpu));
        let (mut sum_loss, mut correct, mut seen) = (0.0, 0.0, 0usize);
        let mut sum_loss_t = Tensor::zeros([], (Kind::Float, device));
        let mut correct_t = Tensor::zeros([], (Kind::Float, device));
        for b in 0..batches {
            let idx = perm.narrow(0, (b * cfg.batch_size) as i64, cfg.batch_size as i64);
            let mut x = to_input(&train.images.index_select(0, &idx), device);
            if spec.input.channels == 3 {
                x = random_mirror(&x);
            }
            let y = train.labels.index_select(0, &idx).to_device(device);
            let (step, y) = step_loss(&net, &x, &y, cfg, iter)?;
            opt.backward_step(&step.loss);
            net.after_step(&step, &y, cfg);
            // Summed on the device; read back every SYNC_EVERY steps, not twice per step.
            sum_loss_t += step.loss.detach();
            correct_t += step
                .scores
                .argmax(-1, false)
                .eq_tensor(&y)
                .to_kind(Kind::Float)
                .sum(Kind::Float);
            seen += y.size()[0] as usize;
            iter += 1;
            pb.inc(1);
            if (b + 1).is_multiple_of(SYNC_EVERY) || b + 1 == batches {
                sum_loss = sum_loss_t.double_value(&[]);
                correct = correct_t.double_value(&[]);
                if !sum_loss.is_finite() {
                    return Err(Error::Invalid(format!(
                        "loss became {sum_loss} at epoch {} within steps {}..={b}; lower --lr",
                        epoch + 1,
                        (b / SYNC_EVERY) * SYNC_EVERY
                    )));
                }
                let ips = (iter * cfg.batch_size) as f64 / start.elapsed().as_secs_f64();
                pb.set_message(format!(
                    "epoch {} loss {:.4} acc {:.3} {ips:.0} img/s",
                    epoch + 1,
                    sum_loss / (b + 1) as f64,
                    correct / seen as f64
                ));
            }
        }
        last_loss = sum_loss / batches as f64;
        last_acc = correct / seen as f64;
        tracing::info!(
            epoch = epoch + 1,
            loss = last_loss,
            accuracy = last_acc,
            "epoch done"
        );
    }
    pb.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let training = Training {
        config: cfg.clone(),
        dataset: data.to_string(),
        split: split.description.clone(),
        train_images: n,
        seconds,
        images_per_second: (batches * cfg.batch_size * cfg.epochs) as f64 / seconds,
        final_loss: last_loss,
        final_accuracy: last_acc,
        device: format!("{device:?}"),
        threads: tch::get_num_threads(),
    };
    artifact::save_new(out, spec, training, &vs)
}
