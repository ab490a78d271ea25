//! `dvsp bench train`: training throughput (images/s) and peak memory of each backbone on
//! random input, reported as ratios against the reference run (small CNN, dvib) of the same
//! command.
use std::time::Instant;

use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Tensor};

use crate::config::{Backbone, Method, TrainConfig};
use crate::model::{InputSpec, Net, NetSpec};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum What {
    /// Training images/s and peak resident memory per backbone.
    Train,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(value_enum)]
    pub what: What,
    /// Timed optimiser steps per case (after one warm-up step).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
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

pub fn run(a: Args) -> anyhow::Result<()> {
    let What::Train = a.what;
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
