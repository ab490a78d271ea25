//! Face detection, 68-point landmarks and 128-d descriptors: a port of face-api
//! (`@vladmandic/face-api@1.7.15`, MIT; a fork of justadudewhohacks/face-api.js) to tch.
//!
//! Three pretrained nets read from face-api's own weight files (spec §1, see
//! `scripts/setup.sh`): the tiny face detector (a TinyYOLOv2 with separable convolutions, §3),
//! the 68-point landmark net (§4) and the recognition net, a dlib ResNet-34 variant (King 2017,
//! dlib `dlib_face_recognition_resnet_model_v1`; §5). [`FaceApi::faces`] is face-api's
//! `detectAllFaces(img, TinyFaceDetectorOptions{inputSize: 416, scoreThreshold: 0.5})
//! .withFaceLandmarks()` (§6); [`align::descriptor_crop`] then gives the recognition input of
//! `.withFaceDescriptors()`, and [`align::similarity`] + [`align::warp`] the SphereFace 112x96
//! alignment used by this crate's own models.
//!
//! Images are `[3, H, W]` f32 RGB in 0..255; coordinates are original-image pixels, x right,
//! y down. The section numbers (§) refer to the port spec, `docs/face-api.md`.
pub mod align;
pub mod detector;
pub mod import;
pub mod landmarks;
pub mod photo;
pub mod recognition;
pub mod resize;
pub mod weights;

use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

pub use detector::{Detection, TinyFaceDetector};
pub use landmarks::FaceLandmark68Net;
pub use recognition::FaceRecognitionNet;

use crate::{Error, Result};
use weights::Weights;

/// Where `scripts/setup.sh` puts the face models and photos: `$DVSP_CACHE/faces`, else
/// `~/.cache/dvsp/faces` (the script's own cache logic).
pub fn faces_root() -> PathBuf {
    let cache = std::env::var_os("DVSP_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".cache/dvsp")
        });
    cache.join("faces")
}

/// Where `scripts/setup.sh` puts face-api's weight files: `faces_root()/face-api/model`.
pub fn model_dir() -> PathBuf {
    faces_root().join("face-api/model")
}

/// Decodes an image file (any format of the `image` crate; alpha is dropped) to `[3, H, W]`
/// f32 RGB in 0..255. EXIF orientation is ignored, as face-api does (§8).
pub fn load_rgb(path: &Path) -> Result<Tensor> {
    let img = image::open(path).map_err(|e| Error::BadData {
        path: path.to_path_buf(),
        message: format!("cannot decode image: {e}"),
    })?;
    let rgb = img.to_rgb8();
    let (w, h) = (i64::from(rgb.width()), i64::from(rgb.height()));
    Ok(Tensor::from_slice(rgb.as_raw())
        .view([h, w, 3])
        .permute([2, 0, 1])
        .to_kind(Kind::Float))
}

/// 0..255 pixels to the [0, 1] range the crate's nets (and [`FaceRecognitionNet::forward`])
/// take.
pub fn to_unit(x: &Tensor) -> Tensor {
    x / 255.0
}

/// An integer pixel rectangle of an image: columns `x..x + width`, rows `y..y + height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub x: i64,
    pub y: i64,
    pub width: i64,
    pub height: i64,
}

impl CropBox {
    /// `Box.clipAtImageBorders` then flooring (§4.1): the part of `(x, y, w, h)` inside a
    /// `img_w x img_h` image, `(floor(cx), floor(cy), floor(cw), floor(ch))` with
    /// `cx = max(x, 0)`, `cw = min(x + w - cx, img_w - cx)` (and the same for y). Width or
    /// height may be <= 0 when the box lies outside the image.
    pub fn clip(x: f64, y: f64, w: f64, h: f64, img_w: i64, img_h: i64) -> CropBox {
        let (cx, cy) = (x.max(0.0), y.max(0.0));
        let cw = (x + w - cx).min(img_w as f64 - cx);
        let ch = (y + h - cy).min(img_h as f64 - cy);
        CropBox {
            x: cx.floor() as i64,
            y: cy.floor() as i64,
            width: cw.floor() as i64,
            height: ch.floor() as i64,
        }
    }

    /// The pixels `img[:, y..y+height, x..x+width]` of a `[C, H, W]` image; an error when the
    /// box is empty or not inside the image.
    pub fn crop(&self, img: &Tensor) -> Result<Tensor> {
        let (h, w) = resize::image_size(img)?;
        if self.width <= 0
            || self.height <= 0
            || self.x < 0
            || self.y < 0
            || self.x + self.width > w
            || self.y + self.height > h
        {
            return Err(Error::Invalid(format!(
                "crop {self:?} is empty or outside the {w}x{h} image"
            )));
        }
        let d = img.dim() as i64;
        Ok(img
            .narrow(d - 2, self.y, self.height)
            .narrow(d - 1, self.x, self.width))
    }
}

/// Checks that `img` is a `[3, H, W]` f32 image and returns `(H, W)`.
pub(crate) fn rgb_size(img: &Tensor) -> Result<(i64, i64)> {
    let (h, w) = resize::image_size(img)?;
    if img.size().as_slice() != [3, h, w] {
        return Err(Error::Invalid(format!(
            "expected an RGB image [3, H, W], got {:?}",
            img.size()
        )));
    }
    Ok((h, w))
}

/// `(x - mean) / 255` per RGB channel (f32) of a `[3, S, S]` image, as `[1, 3, S, S]` (§3.2,
/// §4.2, §5.2).
pub(crate) fn normalise(x: &Tensor, mean: [f32; 3]) -> Tensor {
    let m = Tensor::from_slice(&mean).to(x.device()).view([1, 3, 1, 1]);
    (x.view([1, 3, x.size()[1], x.size()[2]]) - m) / 255.0
}

/// TF "SAME" padding (§2.3) of one axis: `(before, after)`.
pub(crate) fn same_pads(size: i64, k: i64, stride: i64) -> (i64, i64) {
    let out = (size + stride - 1) / stride;
    let total = ((out - 1) * stride + k - size).max(0);
    (total / 2, total - total / 2)
}

/// Pads `[B, C, H, W]` for a TF "SAME" `k x k` window with stride `stride`, filling with `value`
/// (0 for convolutions, -inf for max-pooling).
pub(crate) fn pad_same(x: &Tensor, k: i64, stride: i64, value: f64) -> Tensor {
    let s = x.size();
    let (t, b) = same_pads(s[2], k, stride);
    let (l, r) = same_pads(s[3], k, stride);
    if t + b + l + r == 0 {
        return x.shallow_clone();
    }
    x.pad([l, r, t, b], "constant", value)
}

/// `tf.separableConv2d` + bias (§1.2): depthwise `k x k` (channel multiplier 1) with TF "SAME"
/// padding and `stride`, then a 1x1 pointwise conv, then the bias. No bias in between.
#[derive(Debug)]
pub(crate) struct SepConv {
    depthwise: Tensor,
    pointwise: Tensor,
    bias: Tensor,
}

impl SepConv {
    /// Takes `{prefix}/depthwise_filter` `[3, 3, c_in, 1]`, `{prefix}/pointwise_filter`
    /// `[1, 1, c_in, c_out]` and `{prefix}/bias` `[c_out]`.
    pub(crate) fn take(w: &mut Weights, prefix: &str, c_in: i64, c_out: i64) -> Result<SepConv> {
        Ok(SepConv {
            depthwise: weights::depthwise_filters(
                &w.take(&format!("{prefix}/depthwise_filter"), &[3, 3, c_in, 1])?,
            ),
            pointwise: weights::conv_filters(
                &w.take(&format!("{prefix}/pointwise_filter"), &[1, 1, c_in, c_out])?,
            ),
            bias: w.take(&format!("{prefix}/bias"), &[c_out])?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, stride: i64) -> Tensor {
        let c = x.size()[1];
        pad_same(x, 3, stride, 0.0)
            .conv2d(
                &self.depthwise,
                None::<Tensor>,
                [stride, stride],
                [0, 0],
                [1, 1],
                c,
            )
            .conv2d(&self.pointwise, Some(&self.bias), [1, 1], [0, 0], [1, 1], 1)
    }
}

/// One face: its detection (§3) and 68 landmarks (§4) in original-image pixels.
#[derive(Debug, Clone)]
pub struct Face {
    pub detection: Detection,
    /// iBUG 68-point markup (§4.5), `(x, y)`, with face-api's origin quirk (see
    /// [`FaceLandmark68Net::landmarks`]).
    pub landmarks: [(f64, f64); 68],
}

/// face-api's tiny face detector and full 68-point landmark net (§6 without descriptors).
#[derive(Debug)]
pub struct FaceApi {
    /// `tiny_face_detector_model` (§3).
    pub detector: TinyFaceDetector,
    /// `face_landmark_68_model` (§4).
    pub landmarks: FaceLandmark68Net,
}

impl FaceApi {
    /// Input size of the detector in [`FaceApi::faces`] (§3.1 default).
    pub const INPUT_SIZE: i64 = 416;
    /// Detection score threshold of [`FaceApi::faces`] (§3.1 default).
    pub const SCORE_THRESHOLD: f64 = 0.5;

    /// Reads `tiny_face_detector_model` and `face_landmark_68_model` from `model_dir`.
    pub fn load(model_dir: &Path) -> Result<FaceApi> {
        Ok(FaceApi {
            detector: TinyFaceDetector::load(model_dir)?,
            landmarks: FaceLandmark68Net::load(model_dir)?,
        })
    }

    /// Every face of a `[3, H, W]` 0..255 RGB image, best detection first (§6): detection at
    /// input size 416 and score threshold 0.5, then landmarks of each detection. Detections
    /// whose box lies entirely outside the image are skipped (face-api would fail on them).
    pub fn faces(&self, img: &Tensor) -> Result<Vec<Face>> {
        let (h, w) = rgb_size(img)?;
        let dets = self
            .detector
            .detect(img, Self::INPUT_SIZE, Self::SCORE_THRESHOLD)?;
        let mut faces = Vec::with_capacity(dets.len());
        for detection in dets {
            let b = detection.crop_box(w, h);
            if b.width <= 0 || b.height <= 0 {
                continue;
            }
            let landmarks = self.landmarks.landmarks(img, &detection)?;
            faces.push(Face {
                detection,
                landmarks,
            });
        }
        Ok(faces)
    }
}
