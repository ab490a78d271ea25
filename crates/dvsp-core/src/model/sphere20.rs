//! sphere20a, the 20-layer CNN of SphereFace (Liu et al. 2017, "SphereFace: Deep Hypersphere
//! Embedding for Face Recognition", table 2), used by the paper for every method on faces.
//!
//! `[B, 3, 112, 96]` -> four stages, each a stride-2 3x3 conv + PReLU followed by 1, 2, 4, 1
//! residual units (two 3x3 convs + PReLU each) with 64, 128, 256, 512 channels
//! -> `[B, 512, 7, 6]` -> fc5 (21504 -> 512) -> `[B, 512]`. The 20 layers are the 20
//! convolutions (3 + 5 + 9 + 3), as SphereFace counts them; fc5 follows.
use tch::nn::{self, Module};
use tch::Tensor;

use super::prelu;

pub const HIDDEN: i64 = 512;

#[derive(Debug)]
struct ConvAct {
    conv: nn::Conv2D,
    act: Tensor,
}

impl ConvAct {
    /// SphereFace's initialisation (its sphereface_model.prototxt): Xavier for the stride-2
    /// convs, N(0, 0.01) for the convs inside residual units, zero biases. Without batch
    /// norm, the default (Kaiming) initialisation makes the residual sums blow up.
    fn new(p: nn::Path, c_in: i64, c_out: i64, stride: i64) -> ConvAct {
        let ws_init = if stride == 2 {
            let bound = (6.0 / (9 * (c_in + c_out)) as f64).sqrt();
            nn::Init::Uniform {
                lo: -bound,
                up: bound,
            }
        } else {
            nn::Init::Randn {
                mean: 0.0,
                stdev: 0.01,
            }
        };
        let cfg = nn::ConvConfig {
            stride,
            padding: 1,
            ws_init,
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        };
        ConvAct {
            conv: nn::conv2d(&p / "conv", c_in, c_out, 3, cfg),
            act: prelu(&(&p / "act"), c_out),
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.apply(&self.conv).prelu(&self.act)
    }
}

/// One stage: a stride-2 downsampling conv, then `units` residual units `x + f(g(x))`.
#[derive(Debug)]
struct Stage {
    down: ConvAct,
    units: Vec<(ConvAct, ConvAct)>,
}

impl Stage {
    fn new(p: nn::Path, c_in: i64, c_out: i64, units: usize) -> Stage {
        Stage {
            down: ConvAct::new(&p / "down", c_in, c_out, 2),
            units: (0..units)
                .map(|i| {
                    let u = &p / format!("unit{i}");
                    (
                        ConvAct::new(&u / "a", c_out, c_out, 1),
                        ConvAct::new(&u / "b", c_out, c_out, 1),
                    )
                })
                .collect(),
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let mut x = self.down.forward(xs);
        for (a, b) in &self.units {
            x = &x + b.forward(&a.forward(&x));
        }
        x
    }
}

#[derive(Debug)]
pub struct Sphere20 {
    stages: Vec<Stage>,
    fc5: nn::Linear,
}

impl Sphere20 {
    pub fn new(p: &nn::Path, channels: i64) -> Sphere20 {
        let spec = [
            (channels, 64, 1),
            (64, 128, 2),
            (128, 256, 4),
            (256, 512, 1),
        ];
        Sphere20 {
            stages: spec
                .iter()
                .enumerate()
                .map(|(i, &(ci, co, n))| Stage::new(p / format!("stage{}", i + 1), ci, co, n))
                .collect(),
            fc5: nn::linear(p / "fc5", 512 * 7 * 6, HIDDEN, Default::default()),
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let x = self
            .stages
            .iter()
            .fold(xs.shallow_clone(), |x, s| s.forward(&x));
        self.fc5.forward(&x.flatten(1, -1))
    }
}
