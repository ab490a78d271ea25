//! face-api's recognition net imported as a model directory (`dvsp import face-api`): every
//! weight checked by name and shape, then evaluated on face-samples so its card has thresholds.
use std::path::Path;
use std::time::Instant;

use tch::nn;

use crate::artifact::{self, ModelCard, Training};
use crate::config::{Backbone, Method, TrainConfig};
use crate::face::FaceRecognitionNet;
use crate::model::{Net, NetSpec};
use crate::spec::{FaceCrop, InputSpec};
use crate::{Error, Result};

/// Writes the imported model to `out` and evaluates it on face-samples (thresholds in its
/// card). Every weight is checked by name and shape.
pub fn import_face_api(from: &Path, out: &Path) -> Result<ModelCard> {
    let start = Instant::now();
    let (src_vs, _) = FaceRecognitionNet::load(from, tch::Device::Cpu)?;
    let spec = NetSpec {
        method: Method::Pretrained,
        backbone: Backbone::FaceapiResnet,
        input: InputSpec {
            channels: 3,
            height: crate::face::recognition::INPUT,
            width: crate::face::recognition::INPUT,
            // The net subtracts face-api's per-channel means itself.
            mean: 0.0,
            std: 1.0,
            face: Some(FaceCrop::Dlib150),
        },
        feature_dim: crate::face::recognition::DIM,
        classes: 0,
        radius: 1.0,
    };
    let vs = nn::VarStore::new(tch::Device::Cpu);
    Net::new(&vs.root(), spec.clone());
    let src = src_vs.variables();
    let dst = vs.variables();
    if src.len() != dst.len() {
        return Err(Error::Invalid(format!(
            "{} face-api tensors for {} variables",
            src.len(),
            dst.len()
        )));
    }
    for (name, t) in &src {
        let key = format!("backbone.{name}");
        let mut d = dst
            .get(&key)
            .ok_or_else(|| Error::Invalid(format!("no variable {key} in the model")))?
            .shallow_clone();
        tch::no_grad(|| d.copy_(t));
    }
    crate::face::photo::copy_detector(from, out)?;
    let cfg = TrainConfig {
        method: Method::Pretrained,
        backbone: Some(Backbone::FaceapiResnet),
        feature_dim: crate::face::recognition::DIM,
        epochs: 0,
        ..TrainConfig::default()
    };
    let training = Training {
        config: cfg,
        dataset: crate::data::DataSpec::FaceSamples.to_string(),
        split: "imported from @vladmandic/face-api@1.7.15 (dlib face recognition ResNet, trained by its authors); not trained here".into(),
        train_images: 0,
        seconds: start.elapsed().as_secs_f64(),
        images_per_second: 0.0,
        final_loss: 0.0,
        final_accuracy: 0.0,
        device: "Cpu".into(),
        threads: tch::get_num_threads(),
    };
    artifact::save_new(out, spec, training, &vs)?;
    crate::eval::evaluate(
        out,
        &crate::data::DataArgs {
            data: None,
            data_dir: None,
        },
        crate::model::Precision::Fp32,
    )
}
