//! The small MNIST backbone: LeNet-style (LeCun et al. 1998, the Caffe "LeNet" sizes 20-50-500)
//! with PReLU, chosen so training and auditing all four methods fit in about an hour on 2 cores.
//!
//! `[B, 1, 28, 28]` -> conv5x5(20) -> PReLU -> maxpool2 -> `[B, 20, 12, 12]`
//! -> conv5x5(50) -> PReLU -> maxpool2 -> `[B, 50, 4, 4]` -> fc(800 -> 256) -> PReLU -> `[B, 256]`.
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::prelu;
use crate::certify::operator_norm;

pub const HIDDEN: i64 = 256;

#[derive(Debug)]
pub struct Small {
    conv1: nn::Conv2D,
    act1: Tensor,
    conv2: nn::Conv2D,
    act2: Tensor,
    fc: nn::Linear,
    act3: Tensor,
}

impl Small {
    pub fn new(p: &nn::Path, channels: i64) -> Small {
        Small {
            conv1: nn::conv2d(p / "conv1", channels, 20, 5, Default::default()),
            act1: prelu(&(p / "act1"), 20),
            conv2: nn::conv2d(p / "conv2", 20, 50, 5, Default::default()),
            act2: prelu(&(p / "act2"), 50),
            fc: nn::linear(p / "fc", 800, HIDDEN, Default::default()),
            act3: prelu(&(p / "act3"), HIDDEN),
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let x = xs
            .apply(&self.conv1)
            .prelu(&self.act1)
            .max_pool2d_default(2);
        let x = x.apply(&self.conv2).prelu(&self.act2).max_pool2d_default(2);
        self.fc.forward(&x.flatten(1, -1)).prelu(&self.act3)
    }

    /// A global L2 Lipschitz constant of `forward` on `[channels, height, width]` inputs
    /// (`crate::certify`): the product of each convolution's and the fc layer's exact spectral
    /// norm and each PReLU's largest |slope| (at least 1); 2x2 max pooling with stride 2 has
    /// disjoint windows, so it is 1-Lipschitz in L2.
    pub fn lipschitz(&self, input: [i64; 3]) -> crate::Result<f64> {
        let _guard = tch::no_grad_guard();
        let double = |t: &Tensor| t.detach().to_device(tch::Device::Cpu).to_kind(Kind::Double);
        let slope = |a: &Tensor| double(a).abs().max().double_value(&[]).max(1.0);
        let conv = |c: &nn::Conv2D| {
            let w = double(&c.ws);
            move |x: &Tensor| x.conv2d(&w, None::<Tensor>, [1], [0], [1], 1)
        };
        let [c, h, w] = input;
        let l1 = operator_norm(&conv(&self.conv1), &[c, h, w])?;
        let (h, w) = ((h - 4) / 2, (w - 4) / 2);
        let l2 = operator_norm(&conv(&self.conv2), &[20, h, w])?;
        let fc = double(&self.fc.ws);
        let l3 = operator_norm(&|x: &Tensor| x.matmul(&fc.tr()), &[fc.size()[1]])?;
        Ok(l1 * slope(&self.act1) * l2 * slope(&self.act2) * l3 * slope(&self.act3))
    }
}
