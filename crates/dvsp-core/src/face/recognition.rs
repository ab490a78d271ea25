//! face-api's `FaceRecognitionNet` (spec §5): dlib's face recognition ResNet
//! (`dlib_face_recognition_resnet_model_v1`, King 2017; a ResNet-34 variant after He et al.
//! 2016, "Deep Residual Learning for Image Recognition") mapping a 150x150 face to a 128-d
//! descriptor; same person iff Euclidean distance < 0.6.
//!
//! The weights live in a [`nn::VarStore`] (so they can be saved and loaded like any model of
//! the crate); [`FaceRecognitionNet::import`] fills it from face-api's weight file. Variable
//! names follow face-api's with `.` for `/`: `conv32_1.conv1.conv.weight` is
//! `conv32_1/conv1/conv/filters` in torch layout, `.scale.weight`/`.scale.bias` the folded
//! batch-norm `scale/weights`/`scale/biases`, `fc.weight` `[128, 256]` the transposed `fc`.
use std::collections::{HashMap, HashSet};
use std::path::Path;

use tch::nn::{self, Module};
use tch::{Device, Tensor};

use super::landmarks::MEAN;
use super::weights::{self, Weights};
use crate::{Error, Result};

/// Side of the square input (§5.2).
pub const INPUT: i64 = 150;
/// Descriptor length (§5.3).
pub const DIM: i64 = 128;
/// Same person iff the Euclidean distance of the descriptors is below this (§5.3,
/// face-api's `FaceMatcher` and dlib's default).
pub const THRESHOLD: f64 = 0.6;

/// `convLayer` (§5.3): a convolution with bias, then a per-channel affine `x * w + b` (folded
/// batch norm).
#[derive(Debug)]
struct ConvScale {
    conv: nn::Conv2D,
    scale_w: Tensor,
    scale_b: Tensor,
}

impl ConvScale {
    fn new(p: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, padding: i64) -> ConvScale {
        let cfg = nn::ConvConfig {
            stride,
            padding,
            ..Default::default()
        };
        let s = &p / "scale";
        ConvScale {
            conv: nn::conv2d(&p / "conv", c_in, c_out, k, cfg),
            scale_w: s.var("weight", &[c_out], nn::Init::Const(1.0)),
            scale_b: s.var("bias", &[c_out], nn::Init::Const(0.0)),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let c = self.scale_w.size()[0];
        self.conv.forward(x) * self.scale_w.view([1, c, 1, 1]) + self.scale_b.view([1, c, 1, 1])
    }
}

/// `residual` (3x3 convs, stride 1, SAME) or `residualDown` (first conv 3x3 stride 2 'valid',
/// shortcut 2x2 average pooling, zero-padded to the conv path's shape) (§5.3).
#[derive(Debug)]
struct Block {
    conv1: ConvScale,
    conv2: ConvScale,
    down: bool,
}

impl Block {
    fn new(p: nn::Path, c_in: i64, c_out: i64, down: bool) -> Block {
        let (stride, pad) = if down { (2, 0) } else { (1, 1) };
        Block {
            conv1: ConvScale::new(&p / "conv1", c_in, c_out, 3, stride, pad),
            conv2: ConvScale::new(&p / "conv2", c_out, c_out, 3, 1, 1),
            down,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut y = self.conv2.forward(&self.conv1.forward(x).relu());
        if !self.down {
            return (y + x).relu();
        }
        let mut pool = x.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None);
        let (ys, ps) = (y.size(), pool.size());
        if ys[2..] != ps[2..] {
            // Zero rows at the bottom and columns at the right of the conv path.
            y = y.constant_pad_nd([0, ps[3] - ys[3], 0, ps[2] - ys[2]]);
        }
        if ys[1] != ps[1] {
            // Zero channels appended after the identity channels.
            pool = Tensor::cat(&[&pool, &pool.zeros_like()], 1);
        }
        (pool + y).relu()
    }
}

/// The recognition ResNet (§5.3): conv 7x7/2 + 3x3/2 max-pool, residual stages of 32, 64,
/// 128, 256 channels (3, 4, 3, 3 blocks with down-sampling first blocks), a final 256-channel
/// down block, global mean, bias-free linear 256 -> 128.
#[derive(Debug)]
pub struct FaceRecognitionNet {
    stem: ConvScale,
    blocks: Vec<Block>,
    fc: nn::Linear,
}

/// Block names, input and output channels and whether they down-sample, in order.
const BLOCKS: [(&str, i64, i64, bool); 14] = [
    ("conv32_1", 32, 32, false),
    ("conv32_2", 32, 32, false),
    ("conv32_3", 32, 32, false),
    ("conv64_down", 32, 64, true),
    ("conv64_1", 64, 64, false),
    ("conv64_2", 64, 64, false),
    ("conv64_3", 64, 64, false),
    ("conv128_down", 64, 128, true),
    ("conv128_1", 128, 128, false),
    ("conv128_2", 128, 128, false),
    ("conv256_down", 128, 256, true),
    ("conv256_1", 256, 256, false),
    ("conv256_2", 256, 256, false),
    ("conv256_down_out", 256, 256, true),
];

/// The var-store name and torch-layout tensor of face-api weight `name` (TF layout).
fn torch_name(name: &str, t: &Tensor) -> Option<(String, Tensor)> {
    if name == "fc" {
        return Some(("fc.weight".into(), t.tr().contiguous()));
    }
    let (prefix, suffix) = name.rsplit_once('/')?;
    let (prefix, kind) = prefix.rsplit_once('/')?;
    let (field, tensor) = match (kind, suffix) {
        ("conv", "filters") => ("conv.weight", weights::conv_filters(t)),
        ("conv", "bias") => ("conv.bias", t.shallow_clone()),
        ("scale", "weights") => ("scale.weight", t.shallow_clone()),
        ("scale", "biases") => ("scale.bias", t.shallow_clone()),
        _ => return None,
    };
    Some((format!("{}.{field}", prefix.replace('/', ".")), tensor))
}

impl FaceRecognitionNet {
    /// Creates the variables under `p` (initialised arbitrarily: fill them with
    /// [`FaceRecognitionNet::import`] or by loading a saved var store).
    pub fn new(p: &nn::Path) -> FaceRecognitionNet {
        FaceRecognitionNet {
            stem: ConvScale::new(p / "conv32_down", 3, 32, 7, 2, 0),
            blocks: BLOCKS
                .iter()
                .map(|&(name, c_in, c_out, down)| Block::new(p / name, c_in, c_out, down))
                .collect(),
            fc: nn::linear(
                p / "fc",
                256,
                DIM,
                nn::LinearConfig {
                    bias: false,
                    ..Default::default()
                },
            ),
        }
    }

    /// A var store on `device` with the net, filled from face-api's
    /// `face_recognition_model-weights_manifest.json` in `model_dir`.
    pub fn load(model_dir: &Path, device: Device) -> Result<(nn::VarStore, FaceRecognitionNet)> {
        let path = weights::manifest_path(model_dir, "face_recognition_model");
        let w = Weights::load(&path)?;
        let mut vs = nn::VarStore::new(device);
        let net = FaceRecognitionNet::new(&vs.root());
        FaceRecognitionNet::import(&mut vs, w.into_map())?;
        Ok((vs, net))
    }

    /// Copies face-api's TF-layout tensors (as read by [`Weights`]) into the variables of a
    /// var store holding this net at its root, converting layouts (§1.2). Fails, naming the
    /// tensor, on an unknown name, a shape mismatch, or a variable left unfilled.
    pub fn import(vs: &mut nn::VarStore, weights: HashMap<String, Tensor>) -> Result<()> {
        let vars = vs.variables();
        let mut filled = HashSet::new();
        let mut names: Vec<&String> = weights.keys().collect();
        names.sort();
        for name in names {
            let bad =
                |message: String| Error::Invalid(format!("face recognition weights: {message}"));
            let (var_name, t) = torch_name(name, &weights[name])
                .ok_or_else(|| bad(format!("{name} is not a weight of this architecture")))?;
            let var = vars.get(&var_name).ok_or_else(|| {
                bad(format!(
                    "{name} ({var_name}) is not a weight of this architecture"
                ))
            })?;
            if var.size() != t.size() {
                return Err(bad(format!(
                    "{name} has shape {:?} (as {var_name}: {:?}), the architecture expects {:?}",
                    weights[name].size(),
                    t.size(),
                    var.size()
                )));
            }
            let mut var = var.shallow_clone();
            tch::no_grad(|| var.copy_(&t.to_device(var.device())));
            filled.insert(var_name);
        }
        let mut missing: Vec<&String> = vars.keys().filter(|k| !filled.contains(*k)).collect();
        if !missing.is_empty() {
            missing.sort();
            return Err(Error::Invalid(format!(
                "face recognition weights: no value for {missing:?}"
            )));
        }
        Ok(())
    }

    /// Raw descriptors `[B, 128]` (not unit-normalised; norms are about 1.4) of faces
    /// `[B, 3, 150, 150]` in [0, 1] RGB, cropped by [`super::align::descriptor_crop`]. The
    /// net normalises them itself as face-api does (§5.2): `(255 x - mean) / 255`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mean = Tensor::from_slice(&MEAN).to(x.device()).view([1, 3, 1, 1]);
        let mut y = self
            .stem
            .forward(&((x * 255.0 - mean) / 255.0))
            .relu()
            .max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false);
        for b in &self.blocks {
            y = b.forward(&y);
        }
        self.fc.forward(&y.mean_dim(&[2i64, 3][..], false, None))
    }
}

/// Euclidean distance of two descriptors (face-api's `euclideanDistance`, §5.3).
pub fn distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&p, &q)| (f64::from(p) - f64::from(q)).powi(2))
        .sum::<f64>()
        .sqrt()
}
