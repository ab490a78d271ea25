//! Ordinary photos to face-model inputs, the one path used by `dvsp align`, the service, the
//! face sample set and the face audit: detect (§3) and find landmarks (§4), keep the
//! best-scoring face, then crop it as the model's [`FaceCrop`] says.
use std::path::Path;

use tch::Tensor;

use super::align::{descriptor_crop, similarity, warp, SPHEREFACE_112X96};
use super::landmarks::five_points;
use super::{to_unit, Face, FaceApi};
use crate::spec::FaceCrop;
use crate::{Error, Result};

/// The crop of `face` in a `[3, H, W]` 0..255 image, `[3, h, w]` in [0, 1].
pub fn crop(img: &Tensor, face: &Face, how: FaceCrop) -> Result<Tensor> {
    let out = match how {
        FaceCrop::Dlib150 => descriptor_crop(img, face)?,
        FaceCrop::Sphereface112x96 => {
            // The five landmarks onto SphereFace's template by a similarity transform.
            let m = similarity(&five_points(&face.landmarks), &SPHEREFACE_112X96)?;
            warp(img, &m, 112, 96)?
        }
    };
    Ok(to_unit(&out).clamp(0.0, 1.0))
}

/// The best-scoring face of a `[3, H, W]` 0..255 image and its crop, or `None` when no face
/// is found.
pub fn best_face(faces: &FaceApi, img: &Tensor, how: FaceCrop) -> Result<Option<(Face, Tensor)>> {
    let _guard = tch::no_grad_guard();
    match faces.faces(img)?.into_iter().next() {
        Some(f) => {
            let c = crop(img, &f, how)?;
            Ok(Some((f, c)))
        }
        None => Ok(None),
    }
}

/// The face-api files a face model directory carries for its face detection.
const DETECTION_FILES: [&str; 4] = [
    "tiny_face_detector_model-weights_manifest.json",
    "tiny_face_detector_model.bin",
    "face_landmark_68_model-weights_manifest.json",
    "face_landmark_68_model.bin",
];

/// Copies the detector and landmark weights from `from` into `model_dir/face-api`, so the
/// model directory serves on its own (in a container, say).
pub fn copy_detector(from: &Path, model_dir: &Path) -> Result<()> {
    let dir = model_dir.join("face-api");
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    for f in DETECTION_FILES {
        std::fs::copy(from.join(f), dir.join(f)).map_err(Error::io(from.join(f)))?;
    }
    Ok(())
}

/// Where a face model finds the detector and landmark weights: `MODEL_DIR/face-api` (written
/// by `dvsp import face-api`), else the cache `make setup` fills.
pub fn detector_dir(model_dir: &Path) -> std::path::PathBuf {
    let own = model_dir.join("face-api");
    if own
        .join("tiny_face_detector_model-weights_manifest.json")
        .exists()
    {
        own
    } else {
        super::model_dir()
    }
}

/// Loads the detector and landmark nets for the face model in `model_dir`.
pub fn load_for(model_dir: &Path) -> Result<FaceApi> {
    let dir = detector_dir(model_dir);
    FaceApi::load(&dir).map_err(|e| {
        Error::Invalid(format!(
            "face model {}: cannot load face detection from {} (run `make setup`): {e}",
            model_dir.display(),
            dir.display()
        ))
    })
}

/// A photo file's face crop, or an error naming the file when it holds no face.
pub fn crop_file(faces: &FaceApi, path: &Path, how: FaceCrop) -> Result<Tensor> {
    let img = super::load_rgb(path)?;
    best_face(faces, &img, how)?
        .map(|(_, c)| c)
        .ok_or_else(|| Error::BadData {
            path: path.to_path_buf(),
            message: "no face found".into(),
        })
}
