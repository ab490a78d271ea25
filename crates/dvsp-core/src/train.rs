//! The training loop (Algorithm 1 for dvsp; plain mini-batch Adam for the others).
use std::path::Path;
use std::time::Instant;

use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::artifact::{self, ModelCard, Training};
use crate::config::TrainConfig;
use crate::data::{to_input, DataSpec, Split};
use crate::loss;
use crate::model::{Net, NetSpec, StepOut};
use crate::spec::InputSpec;
use crate::{Error, Result};

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

/// The weights and state of an unfinished run, written to the output directory after every
/// epoch and removed when the model is saved.
const CHECKPOINT_WEIGHTS: &str = "checkpoint.safetensors";
const CHECKPOINT: &str = "checkpoint.json";

/// Where an unfinished run stopped. `run` describes the run (configuration, data, split):
/// a checkpoint of another run is not resumed.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    run: String,
    epochs_done: usize,
    iter: usize,
    seconds: f64,
    loss: f64,
    accuracy: f64,
}

impl Checkpoint {
    /// The checkpoint in `out` of the run `run`, if there is one.
    fn find(out: &Path, run: &str) -> Option<Checkpoint> {
        let text = std::fs::read_to_string(out.join(CHECKPOINT)).ok()?;
        let c: Checkpoint = serde_json::from_str(&text).ok()?;
        if c.run != run {
            tracing::warn!(out = %out.display(), "the checkpoint there is of another run: starting afresh");
            return None;
        }
        out.join(CHECKPOINT_WEIGHTS).is_file().then_some(c)
    }

    /// Writes the weights, then the state (each atomically: a kill leaves the last complete
    /// checkpoint).
    fn save(&self, out: &Path, vs: &nn::VarStore) -> Result<()> {
        std::fs::create_dir_all(out).map_err(Error::io(out))?;
        let tmp = out.join("checkpoint.tmp.safetensors");
        vs.save(&tmp)?;
        let path = out.join(CHECKPOINT_WEIGHTS);
        std::fs::rename(&tmp, &path).map_err(Error::io(&path))?;
        artifact::write_atomic(
            &out.join(CHECKPOINT),
            serde_json::to_string(self)?.as_bytes(),
        )
    }

    fn remove(out: &Path) {
        for f in [CHECKPOINT, CHECKPOINT_WEIGHTS] {
            let _ = std::fs::remove_file(out.join(f));
        }
    }
}

/// Trains a model on `split.train` and writes it to `out` (weights + card). Returns the card.
///
/// A checkpoint is written to `out` after every epoch; a run killed and started again with
/// the same configuration and data resumes after the last finished epoch. Each epoch's
/// randomness (batch order, mirroring, sampling) comes from the seed and the epoch number, so
/// the resumed epochs see the data in the order an uninterrupted run would; the optimiser's
/// moment estimates are not checkpointed (tch does not expose Adam's state) and restart from
/// zero, so a resumed model is close to, not bit for bit, the uninterrupted one.
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
        input.face = Some(crate::spec::FaceCrop::Sphereface112x96);
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
    let mut vs = nn::VarStore::new(device);
    let mut net = Net::new(&vs.root(), spec.clone());
    let mut opt = nn::Adam::default().build(&vs, cfg.lr)?;
    let batches = n / cfg.batch_size;
    let run = serde_json::to_string(&(cfg, data.to_string(), &split.description, n))?;
    let resumed = Checkpoint::find(out, &run);
    let (first, mut iter, before, mut last_loss, mut last_acc) = match &resumed {
        Some(c) => {
            vs.load(out.join(CHECKPOINT_WEIGHTS))?;
            tracing::info!(epochs_done = c.epochs_done, "resuming from the checkpoint");
            (c.epochs_done, c.iter, c.seconds, c.loss, c.accuracy)
        }
        None => (0, 0, 0.0, f64::NAN, 0.0),
    };
    let pb = crate::progress::progress_bar(
        (batches * cfg.epochs) as u64,
        &format!("train {}", cfg.method.name()),
    );
    pb.inc((batches * first.min(cfg.epochs)) as u64);
    let start = Instant::now();
    for epoch in first..cfg.epochs {
        tch::manual_seed(cfg.seed as i64 + epoch as i64);
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
                let ips = ((iter - first * batches) * cfg.batch_size) as f64
                    / start.elapsed().as_secs_f64();
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
        Checkpoint {
            run: run.clone(),
            epochs_done: epoch + 1,
            iter,
            seconds: before + start.elapsed().as_secs_f64(),
            loss: last_loss,
            accuracy: last_acc,
        }
        .save(out, &vs)?;
    }
    pb.finish_and_clear();
    let seconds = before + start.elapsed().as_secs_f64();
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
    let card = artifact::save_new(out, spec, training, &vs)?;
    Checkpoint::remove(out);
    Ok(card)
}

/// A training job as the command line gives it: settings, data and the model directory.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: TrainConfig,
    #[command(flatten)]
    pub data: crate::data::DataArgs,
    /// Output model directory (model.safetensors + model.json).
    #[arg(long)]
    pub out: std::path::PathBuf,
}

/// Trains as `a` says into `a.out` (MNIST unless `--data` says otherwise); returns the card.
pub fn train_job(a: &TrainArgs) -> Result<ModelCard> {
    let spec = a.data.data.clone().unwrap_or(DataSpec::Mnist);
    let split = spec.load(&a.data.root(), None)?;
    train(&a.config, &spec, &split, &a.out, crate::device())
}
