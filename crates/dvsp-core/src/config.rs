//! Training configuration, saved in the model card beside the weights.
use serde::{Deserialize, Serialize};

/// The feature-learning method (`--method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Deep variational sphere projection: DVIB + sphere projection + adversarial learning.
    Dvsp,
    /// Deep variational information bottleneck (Alemi et al. 2017), eq. 6-10.
    Dvib,
    /// Softmax + center loss (Wen et al. 2016).
    Center,
    /// A-Softmax with angular margin m (Liu et al. 2017).
    Sphereface,
    /// Imported weights (`dvsp import`), not trained here.
    #[value(skip)]
    Pretrained,
}

impl Method {
    pub const ALL: [Method; 4] = [
        Method::Dvib,
        Method::Center,
        Method::Sphereface,
        Method::Dvsp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::Dvsp => "dvsp",
            Method::Dvib => "dvib",
            Method::Center => "center",
            Method::Sphereface => "sphereface",
            Method::Pretrained => "pretrained",
        }
    }

    /// Methods with a variational head: their posterior spread r(x) (eq. 14) is defined.
    pub fn variational(self) -> bool {
        matches!(self, Method::Dvsp | Method::Dvib)
    }
}

/// The feature-extractor network (`--backbone`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backbone {
    /// Two 5x5 conv layers + fc for 1x28x28 inputs; the MNIST default.
    Small,
    /// The 20-layer SphereFace CNN for 3x112x96 faces.
    Sphere20,
    /// face-api's face recognition ResNet (dlib's, 128-d) for 3x150x150 face crops;
    /// imported by `dvsp import face-api`, not trainable here.
    #[value(skip)]
    #[serde(rename = "faceapi_resnet")]
    FaceapiResnet,
}

/// Every hyper-parameter of a training run. Defaults are the ones `dvsp train` uses on MNIST.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct TrainConfig {
    /// Feature learning method.
    #[arg(long, value_enum, default_value = "dvsp")]
    pub method: Method,
    /// Backbone network (default: small for MNIST-family data, sphere20 for folders).
    #[arg(long, value_enum)]
    pub backbone: Option<Backbone>,
    /// Feature dimension k.
    #[arg(long, default_value_t = 32)]
    pub feature_dim: i64,
    /// IB factor beta of eq. 6 and 13 (dvsp, dvib).
    #[arg(long, default_value_t = 1e-3)]
    pub beta: f64,
    /// Projection radius R of eq. 11 (dvsp). Chosen by a sweep on MNIST (README).
    #[arg(long, default_value_t = 1.0)]
    pub radius: f64,
    /// Samples m per input for the likelihood term (dvsp, dvib).
    #[arg(long, default_value_t = 8)]
    pub samples: i64,
    /// Adversarial step epsilon of eq. 15, for any method (default: 0.1 for dvsp, as the paper;
    /// 0, no adversarial learning, for the others). `--method dvsp --eps 0` and `--method dvib
    /// --eps E` (E: DVSP's eps) are the ablations that attribute robustness to projection or
    /// to eq. 15.
    #[arg(long)]
    pub eps: Option<f64>,
    /// Center-loss weight lambda (center; Wen et al. use 0.003 for faces).
    #[arg(long, default_value_t = 0.003)]
    pub center_lambda: f64,
    /// Center update rate alpha (center; Wen et al. 0.5).
    #[arg(long, default_value_t = 0.5)]
    pub center_alpha: f64,
    /// Angular margin m of A-Softmax (sphereface).
    #[arg(long, default_value_t = 4)]
    pub margin: i64,
    /// The data are faces aligned by `dvsp align` (3x112x96): the served model then aligns
    /// probe photos the same way (detector and landmark nets copied into the model directory).
    #[arg(long)]
    #[serde(default)]
    pub align_faces: bool,
    /// Training epochs.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Mini-batch size.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Adam learning rate (the paper: Adam with its default settings, 1e-3).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Seed for weights, shuffling and sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Train on only the first N training images (0 = all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
}

impl TrainConfig {
    /// The eq. 15 step size in use.
    pub fn eps(&self) -> f64 {
        self.eps.unwrap_or(if self.method == Method::Dvsp {
            0.1
        } else {
            0.0
        })
    }

    /// The backbone used: the explicit one, else the default for the data's image shape.
    pub fn backbone_for(&self, shape: [i64; 3]) -> Backbone {
        self.backbone.unwrap_or(if shape == [1, 28, 28] {
            Backbone::Small
        } else {
            Backbone::Sphere20
        })
    }
}

impl Default for TrainConfig {
    /// The defaults of `dvsp train` (one source: the clap attributes above).
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            config: TrainConfig,
        }
        <Defaults as clap::Parser>::parse_from(["dvsp"]).config
    }
}
