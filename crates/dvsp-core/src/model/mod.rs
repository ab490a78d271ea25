//! Feature extractors: a backbone (small CNN or sphere20) and a method head.
//!
//! Inputs are images in [0, 1], `[B, C, H, W]`; the net normalises them itself with the
//! mean/std of its [`InputSpec`], so attacks measure L2 in the same [0, 1] pixel space for
//! every model. Features are compared by cosine distance D = 1 - cos (eq. 1).
pub mod small;
pub mod sphere20;

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use crate::config::{Backbone, Method, TrainConfig};
use crate::loss;
use crate::spec::InputSpec;
use crate::Result;

/// A PReLU slope per channel, initialised to 0.25 (He et al. 2015).
pub(crate) fn prelu(p: &nn::Path, channels: i64) -> Tensor {
    p.var("weight", &[channels], nn::Init::Const(0.25))
}

/// Everything that fixes the net's architecture (and so its weight names and shapes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetSpec {
    pub method: Method,
    pub backbone: Backbone,
    pub input: InputSpec,
    pub feature_dim: i64,
    pub classes: i64,
    /// Projection radius R (eq. 11); used by dvsp only.
    pub radius: f64,
}

#[derive(Debug)]
enum Trunk {
    Small(Box<small::Small>),
    Sphere20(sphere20::Sphere20),
    /// Normalises its input itself (face-api's per-channel means); outputs the descriptor.
    FaceapiResnet(crate::face::recognition::FaceRecognitionNet),
}

#[derive(Debug)]
enum Head {
    /// dvsp and dvib: encoder outputs mu(x) and diagonal Lambda(x) (eq. 9); decoder g (eq. 10).
    Variational {
        mu: nn::Linear,
        lambda: nn::Linear,
        decoder: nn::Linear,
    },
    /// center: feature layer, softmax classifier and class centres (not trained by Adam).
    Center {
        fc: nn::Linear,
        classifier: nn::Linear,
        centers: Tensor,
    },
    /// sphereface: feature layer and bias-free class weights.
    Sphere { fc: nn::Linear, weight: Tensor },
    /// pretrained: the trunk's output is the feature.
    Identity,
}

/// The scalar loss of one batch, the `[B, C]` class scores used for training accuracy, and
/// the `[B, k]` features the loss saw.
pub struct StepOut {
    pub loss: Tensor,
    pub scores: Tensor,
    pub features: Tensor,
}

#[derive(Debug)]
pub struct Net {
    pub spec: NetSpec,
    trunk: Trunk,
    head: Head,
    /// The dtype inputs are cast to: the weights' (`Precision`).
    kind: Kind,
}

/// The arithmetic of inference (`--precision`): fp32, or bf16 weights and activations
/// (libtorch's oneDNN kernels use AVX-512-BF16 where the CPU has it; fp16/bf16 on CUDA).
/// Features come out as f32 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
}

impl Precision {
    pub fn kind(self) -> Kind {
        match self {
            Precision::Fp32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
        }
    }
}

/// Lambda(x)'s diagonal (eq. 9), kept positive by softplus.
fn diagonal(lambda: &nn::Linear, h: &Tensor) -> Tensor {
    lambda.forward(h).softplus() + 1e-6
}

impl Net {
    pub fn new(p: &nn::Path, spec: NetSpec) -> Net {
        let c = spec.input.channels;
        let (trunk, hidden) = match spec.backbone {
            Backbone::Small => (
                Trunk::Small(Box::new(small::Small::new(&(p / "backbone"), c))),
                small::HIDDEN,
            ),
            Backbone::Sphere20 => (
                Trunk::Sphere20(sphere20::Sphere20::new(&(p / "backbone"), c)),
                sphere20::HIDDEN,
            ),
            Backbone::FaceapiResnet => (
                Trunk::FaceapiResnet(crate::face::recognition::FaceRecognitionNet::new(
                    &(p / "backbone"),
                )),
                crate::face::recognition::DIM,
            ),
        };
        let h = p / "head";
        let (k, classes) = (spec.feature_dim, spec.classes);
        let head = match spec.method {
            Method::Dvsp | Method::Dvib => Head::Variational {
                mu: nn::linear(&h / "mu", hidden, k, Default::default()),
                lambda: nn::linear(&h / "lambda", hidden, k, Default::default()),
                decoder: nn::linear(&h / "decoder", k, classes, Default::default()),
            },
            Method::Center => Head::Center {
                fc: nn::linear(&h / "fc", hidden, k, Default::default()),
                classifier: nn::linear(&h / "classifier", k, classes, Default::default()),
                centers: h.zeros_no_train("centers", &[classes, k]),
            },
            Method::Sphereface => Head::Sphere {
                fc: nn::linear(&h / "fc", hidden, k, Default::default()),
                weight: h.var(
                    "weight",
                    &[classes, k],
                    nn::Init::Randn {
                        mean: 0.0,
                        stdev: 0.01,
                    },
                ),
            },
            Method::Pretrained => Head::Identity,
        };
        Net {
            spec,
            trunk,
            head,
            kind: Kind::Float,
        }
    }

    /// Casts the weights in `vs` (this net's store) to `precision`, and the inputs with them.
    pub fn set_precision(&mut self, vs: &mut nn::VarStore, precision: Precision) {
        vs.set_kind(precision.kind());
        self.kind = precision.kind();
    }

    fn hidden(&self, xs: &Tensor) -> Tensor {
        let x = ((xs - self.spec.input.mean) / self.spec.input.std).to_kind(self.kind);
        match &self.trunk {
            Trunk::Small(m) => m.forward(&x),
            Trunk::Sphere20(m) => m.forward(&x),
            Trunk::FaceapiResnet(m) => m.forward(&x),
        }
    }

    /// mu(x) and Lambda(x) (eq. 9) for variational heads; `None` for the others.
    pub fn posterior(&self, xs: &Tensor) -> Option<(Tensor, Tensor)> {
        match &self.head {
            Head::Variational { mu, lambda, .. } => {
                let h = self.hidden(xs);
                Some((mu.forward(&h), diagonal(lambda, &h)))
            }
            _ => None,
        }
    }

    /// The feature the system compares, `[B, k]`: dvsp the projected mean R mu/||mu|| (eq. 11),
    /// dvib mu(x) (section 3.1), center and sphereface their feature layer.
    pub fn features(&self, xs: &Tensor) -> Tensor {
        self.feature_of(&self.hidden(xs))
    }

    /// The feature of trunk output `h`, as f32.
    fn feature_of(&self, h: &Tensor) -> Tensor {
        let g = self.head_output(h);
        match self.spec.method {
            Method::Dvsp => loss::dvsp::project(&g, self.spec.radius),
            _ => g,
        }
        .to_kind(Kind::Float)
    }

    /// The head's linear output: mu(x) for variational heads (before dvsp's projection,
    /// eq. 11), the feature layer otherwise.
    fn head_output(&self, h: &Tensor) -> Tensor {
        match &self.head {
            Head::Variational { mu, .. } => mu.forward(h),
            Head::Center { fc, .. } | Head::Sphere { fc, .. } => fc.forward(h),
            Head::Identity => h.shallow_clone(),
        }
    }

    /// The feature before any projection onto a sphere, as f32: its cosines are those of
    /// `features` (what `crate::certify` bounds).
    pub fn unprojected(&self, xs: &Tensor) -> Tensor {
        self.head_output(&self.hidden(xs)).to_kind(Kind::Float)
    }

    /// A global L2 Lipschitz constant of `unprojected` in [0, 1] pixel units
    /// (`crate::certify`): 1/std of the input normalisation, the trunk's constant and the
    /// head's spectral norm. `None` for a backbone it is not computed for (sphere20,
    /// imported nets) or an input too large for the explicit matrices.
    pub fn lipschitz(&self) -> Option<f64> {
        let Trunk::Small(trunk) = &self.trunk else {
            return None;
        };
        let head = match &self.head {
            Head::Variational { mu: fc, .. }
            | Head::Center { fc, .. }
            | Head::Sphere { fc, .. } => fc
                .ws
                .detach()
                .to_device(tch::Device::Cpu)
                .to_kind(Kind::Double),
            Head::Identity => return None,
        };
        let head =
            crate::certify::operator_norm(&|x: &Tensor| x.matmul(&head.tr()), &[head.size()[1]])
                .ok()?;
        let trunk = trunk.lipschitz(self.spec.input.shape()).ok()?;
        Some(trunk * head / self.spec.input.std)
    }

    /// The feature and, for variational heads, the posterior spread r(x) = mean_i
    /// Lambda_ii(x) (eq. 14) `[B]`, from one pass of the trunk (what the service serves).
    pub fn embed(&self, xs: &Tensor) -> (Tensor, Option<Tensor>) {
        let h = self.hidden(xs);
        let spread = match &self.head {
            Head::Variational { lambda, .. } => {
                Some(diagonal(lambda, &h).mean_dim(-1, false, Kind::Float))
            }
            _ => None,
        };
        (self.feature_of(&h), spread)
    }

    /// The training loss of one batch. `xs`: `[B, C, H, W]` in [0, 1]; `labels`: `[B]`;
    /// `iter`: the optimiser step (for SphereFace's lambda annealing).
    pub fn loss(
        &self,
        xs: &Tensor,
        labels: &Tensor,
        cfg: &TrainConfig,
        iter: usize,
    ) -> Result<StepOut> {
        match &self.head {
            Head::Variational { decoder, .. } => {
                let (mu, lambda) = self.posterior(xs).expect("variational head");
                let out = match self.spec.method {
                    Method::Dvsp => loss::dvsp::loss(
                        &mu,
                        &lambda,
                        decoder,
                        labels,
                        cfg.beta,
                        self.spec.radius,
                        cfg.samples,
                    )?,
                    _ => loss::dvib::loss(&mu, &lambda, decoder, labels, cfg.beta, cfg.samples)?,
                };
                Ok(StepOut {
                    loss: out.loss,
                    scores: out.logits.mean_dim(0, false, None),
                    features: mu,
                })
            }
            Head::Center {
                fc,
                classifier,
                centers,
            } => {
                let f = fc.forward(&self.hidden(xs));
                let scores = classifier.forward(&f);
                let loss = scores.cross_entropy_for_logits(labels)
                    + loss::center::center_loss(&f, centers, labels, cfg.center_lambda)?;
                Ok(StepOut {
                    loss,
                    scores,
                    features: f,
                })
            }
            Head::Identity => Err(crate::Error::Invalid(format!(
                "a {} model is imported, not trained here",
                self.spec.method.name()
            ))),
            Head::Sphere { fc, weight } => {
                let f = fc.forward(&self.hidden(xs));
                let (loss, scores) = loss::sphereface::loss(
                    &f,
                    weight,
                    labels,
                    cfg.margin,
                    loss::sphereface::lambda_at(iter),
                )?;
                Ok(StepOut {
                    loss,
                    scores,
                    features: f,
                })
            }
        }
    }

    /// After an optimiser step: the center-loss centre update (Wen et al. eq. 4) from the
    /// features of that step; a no-op for the other methods.
    pub fn after_step(&mut self, out: &StepOut, labels: &Tensor, cfg: &TrainConfig) {
        if let Head::Center { centers, .. } = &mut self.head {
            loss::center::update_centers(centers, &out.features, labels, cfg.center_alpha);
        }
    }
}

/// Unit-normalised features of `images` (`u8` `[N, C, H, W]`), computed in batches without
/// gradients: `[N, k]` `f32` on the CPU.
pub fn embed(net: &Net, images: &Tensor, batch: i64, device: tch::Device) -> Tensor {
    let _guard = tch::no_grad_guard();
    let n = images.size()[0];
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let b = batch.min(n - i);
        let x = crate::data::to_input(&images.narrow(0, i, b), device);
        let f = net.features(&x);
        out.push(unit(&f).to_device(tch::Device::Cpu).to_kind(Kind::Float));
        i += b;
    }
    Tensor::cat(&out, 0)
}

/// Row-wise unit normalisation, so that cosine similarity is a dot product.
pub fn unit(f: &Tensor) -> Tensor {
    f / f.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12)
}
