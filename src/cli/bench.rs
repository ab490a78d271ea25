//! Benchmarks, each reported as ratios against a reference run of the same command:
//! `dvsp bench train`: training images/s and peak memory per backbone on random input
//! (reference: small CNN, dvib); `dvsp bench attack --model DIR`: CW-L2 pair-steps/s batched
//! vs one pair at a time (reference: one at a time) on test pairs of the model's data.
use std::path::PathBuf;
use std::time::Instant;

use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Tensor};

use crate::config::{Backbone, Method, TrainConfig};
use crate::model::{InputSpec, Net, NetSpec};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum What {
    /// Training images/s and peak resident memory per backbone.
    Train,
    /// CW-L2 attack throughput, batched vs one pair at a time (needs --model).
    Attack,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(value_enum)]
    pub what: What,
    /// Timed optimiser steps per case (after one warm-up step).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Model directory (for `attack`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Pairs in the batched attack run (`attack`); the one-at-a-time run uses a sixteenth.
    #[arg(long, default_value_t = 512)]
    pub pairs: usize,
}

/// Peak resident set size (VmHWM) in MiB, reset beforehand by `reset_peak`.
fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Resets the kernel's peak-RSS counter of this process (Linux `clear_refs` value 5).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Case {
    name: &'static str,
    backbone: Backbone,
    method: Method,
    shape: [i64; 3],
    batch: i64,
}

fn run_case(c: &Case, steps: usize) -> anyhow::Result<(f64, f64)> {
    let device = crate::device();
    let cfg = TrainConfig {
        method: c.method,
        batch_size: c.batch as usize,
        ..TrainConfig::default()
    };
    let vs = nn::VarStore::new(device);
    let mut net = Net::new(
        &vs.root(),
        NetSpec {
            method: c.method,
            backbone: c.backbone,
            input: InputSpec::for_shape(c.shape),
            feature_dim: cfg.feature_dim,
            classes: 10,
            radius: cfg.radius,
        },
    );
    let mut opt = nn::Adam::default().build(&vs, cfg.lr)?;
    let [ch, h, w] = c.shape;
    let x = Tensor::rand([c.batch, ch, h, w], (Kind::Float, device));
    let y = Tensor::randint(10, [c.batch], (Kind::Int64, device));
    reset_peak();
    let mut step = |x: &Tensor| -> anyhow::Result<()> {
        let (x, y) = if c.method == Method::Dvsp {
            let xg = x.detach().set_requires_grad(true);
            let g =
                Tensor::f_run_backward(&[&net.loss(&xg, &y, &cfg, 0)?.loss], &[&xg], false, false)?
                    .remove(0);
            let xa = crate::loss::dvsp::adversarial_step(x, &g, cfg.eps).detach();
            (Tensor::cat(&[x, &xa], 0), Tensor::cat(&[&y, &y], 0))
        } else {
            (x.shallow_clone(), y.shallow_clone())
        };
        let out = net.loss(&x, &y, &cfg, 0)?;
        opt.backward_step(&out.loss);
        net.after_step(&out, &y, &cfg);
        Ok(())
    };
    step(&x)?;
    let t = Instant::now();
    for _ in 0..steps {
        step(&x)?;
    }
    Ok((
        (steps as i64 * c.batch) as f64 / t.elapsed().as_secs_f64(),
        peak_mib(),
    ))
}

fn attack(a: &Args) -> anyhow::Result<()> {
    let dir = a
        .model
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("bench attack needs --model DIR"))?;
    let device = crate::device();
    let model = crate::artifact::load(dir, device)?;
    let input = &model.card.net.input;
    let spec: crate::data::DataSpec = model.card.training.dataset.parse()?;
    let split = spec.load(
        &crate::data::default_root(),
        Some((input.height as u32, input.width as u32)),
    )?;
    let labels: Vec<i64> = Vec::<i64>::try_from(&split.test.labels)?;
    let per_class_pair = a
        .pairs
        .div_ceil(split.test.classes * (split.test.classes - 1));
    let pairs = crate::audit::sample_pairs(&labels, split.test.classes, per_class_pair, 0);
    let cfg = crate::attack::cw::CwConfig {
        steps: a.steps,
        search: 1,
        refine: 0,
        ..Default::default()
    };
    let take = |n: usize| -> (Tensor, Tensor) {
        let idx = |f: fn(&(usize, usize, usize, usize)) -> usize| {
            Tensor::from_slice(
                &pairs
                    .iter()
                    .take(n)
                    .map(|p| f(p) as i64)
                    .collect::<Vec<_>>(),
            )
        };
        let x1 = crate::data::to_input(&split.test.images.index_select(0, &idx(|p| p.2)), device);
        let x2 = crate::data::to_input(&split.test.images.index_select(0, &idx(|p| p.3)), device);
        (
            x1,
            tch::no_grad(|| crate::model::unit(&model.net.features(&x2))),
        )
    };
    let t = crate::audit::ThresholdAt::Eer.from_card(&model.card)?;
    let single = (a.pairs / 16).max(1);
    let (x1, target) = take(single);
    let t0 = Instant::now();
    for i in 0..single as i64 {
        crate::attack::cw::attack(
            &model.net,
            &x1.narrow(0, i, 1),
            &target.narrow(0, i, 1),
            t,
            &cfg,
        );
    }
    let one = (single * a.steps) as f64 / t0.elapsed().as_secs_f64();
    let (x1, target) = take(a.pairs);
    let t0 = Instant::now();
    crate::attack::cw::attack(&model.net, &x1, &target, t, &cfg);
    let batched = (a.pairs.min(pairs.len()) * a.steps) as f64 / t0.elapsed().as_secs_f64();
    println!(
        "CW-L2 attack throughput on {} ({} threads, {} steps)",
        dir.display(),
        tch::get_num_threads(),
        a.steps
    );
    println!("| mode | pairs | pair-steps/s | ratio to reference |\n|---|---|---|---|");
    println!("| one pair at a time (reference) | {single} | {one:.1} | 1.00 |");
    println!(
        "| batched | {} | {batched:.1} | {:.2} |",
        a.pairs.min(pairs.len()),
        batched / one
    );
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if let What::Attack = a.what {
        return attack(&a);
    }
    let cases = [
        Case {
            name: "small 1x28x28, dvib (reference)",
            backbone: Backbone::Small,
            method: Method::Dvib,
            shape: [1, 28, 28],
            batch: 128,
        },
        Case {
            name: "small 1x28x28, dvsp (+eq. 15 adversarial)",
            backbone: Backbone::Small,
            method: Method::Dvsp,
            shape: [1, 28, 28],
            batch: 128,
        },
        Case {
            name: "sphere20 3x112x96, dvib",
            backbone: Backbone::Sphere20,
            method: Method::Dvib,
            shape: [3, 112, 96],
            batch: 16,
        },
    ];
    println!(
        "training throughput, {} threads, {} steps per case",
        tch::get_num_threads(),
        a.steps
    );
    println!("| case | batch | img/s | ratio to reference | peak RSS MiB |\n|---|---|---|---|---|");
    let mut reference = None;
    for c in &cases {
        let steps = if c.backbone == Backbone::Sphere20 {
            a.steps.div_ceil(4)
        } else {
            a.steps
        };
        let (ips, mib) = run_case(c, steps)?;
        let r = *reference.get_or_insert(ips);
        println!(
            "| {} | {} | {ips:.1} | {:.4} | {mib:.0} |",
            c.name,
            c.batch,
            ips / r
        );
    }
    Ok(())
}
