//! What a model takes as input: the image shape, its normalisation and, for face models, how
//! the face is cropped. Shared by the data sets, the face pipeline and the networks.
use serde::{Deserialize, Serialize};

/// What the net takes: `[channels, height, width]` in [0, 1], normalised as (x - mean) / std.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    pub channels: i64,
    pub height: i64,
    pub width: i64,
    pub mean: f64,
    pub std: f64,
    /// How a photo becomes an input: `None` resizes the whole image; a face crop detects the
    /// face and its landmarks first (`crate::face`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face: Option<FaceCrop>,
}

/// The face crop a face model takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaceCrop {
    /// face-api's descriptor crop (dlib style, 150x150): what its recognition net expects.
    Dlib150,
    /// The five landmarks warped by a similarity transform onto SphereFace's 112x96 template
    /// (the paper's alignment; `dvsp align` writes these).
    Sphereface112x96,
}

impl InputSpec {
    /// MNIST-family (mean and std of the MNIST training pixels) or faces ((x - 127.5) / 128,
    /// SphereFace's preprocessing, in [0, 1] units). No face crop: see `train --align-faces`.
    pub fn for_shape(shape: [i64; 3]) -> InputSpec {
        let [channels, height, width] = shape;
        let (mean, std) = if channels == 1 {
            (0.1307, 0.3081)
        } else {
            (127.5 / 255.0, 128.0 / 255.0)
        };
        InputSpec {
            channels,
            height,
            width,
            mean,
            std,
            face: None,
        }
    }

    pub fn shape(&self) -> [i64; 3] {
        [self.channels, self.height, self.width]
    }
}
