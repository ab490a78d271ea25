//! face-api's tiny face detector (spec §3): a TinyYOLOv2 (Redmon & Farhadi 2017, "YOLO9000")
//! with depthwise-separable convolutions, one class, 5 anchors, on a `S/32 x S/32` grid.
use std::path::Path;

use tch::{Kind, Tensor};

use super::weights::{self, Weights};
use super::{normalise, pad_same, resize, rgb_size, CropBox, SepConv};
use crate::{Error, Result};

/// Mean RGB subtracted before dividing by 255 (§3.2).
const MEAN: [f32; 3] = [117.001, 114.697, 97.404];
/// Anchor (width, height) in grid cells (§3.4).
const ANCHORS: [(f64, f64); 5] = [
    (1.603231, 2.094468),
    (6.041143, 7.080126),
    (2.882459, 3.518061),
    (4.266906, 5.178857),
    (9.041765, 10.66308),
];
/// NMS drops a candidate whose IoU with a kept box exceeds this (§3.4).
const IOU_THRESHOLD: f64 = 0.4;
/// Output channels of the separable convs conv1..conv5 (conv0 has 16).
const CHANNELS: [i64; 6] = [16, 32, 64, 128, 256, 512];

/// One detected face: box in original-image pixels (not clipped: it may start at negative
/// x/y or end past the image, §3.4) and its sigmoid score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    pub width: f64,
    pub height: f64,
    /// `sigmoid` of the score logit, in (score threshold, 1).
    pub score: f64,
}

impl Detection {
    /// The box clipped to a `img_w x img_h` image and floored (§4.1): the landmark net's crop.
    pub fn crop_box(&self, img_w: i64, img_h: i64) -> CropBox {
        CropBox::clip(self.x, self.y, self.width, self.height, img_w, img_h)
    }

    fn iou(&self, o: &Detection) -> f64 {
        let iw = ((self.x + self.width).min(o.x + o.width) - self.x.max(o.x)).max(0.0);
        let ih = ((self.y + self.height).min(o.y + o.height) - self.y.max(o.y)).max(0.0);
        let inter = iw * ih;
        inter / (self.width * self.height + o.width * o.height - inter)
    }
}

/// `TinyFaceDetector` (§3.3): conv0 3x3 'valid' + leaky ReLU, then five separable 3x3 convs
/// each followed by a 2x2 SAME max-pool (stride 2, the last stride 1), then a 1x1 conv to
/// 5 anchors x (tx, ty, tw, th, score). No batch norm.
#[derive(Debug)]
pub struct TinyFaceDetector {
    conv0: (Tensor, Tensor),
    convs: Vec<SepConv>,
    conv8: (Tensor, Tensor),
}

/// Leaky ReLU with slope 0.1 (§2.4).
fn leaky(x: &Tensor) -> Tensor {
    x.maximum(&(x * 0.1))
}

fn max_pool_same(x: &Tensor, stride: i64) -> Tensor {
    pad_same(x, 2, stride, f64::NEG_INFINITY).max_pool2d(
        [2, 2],
        [stride, stride],
        [0, 0],
        [1, 1],
        false,
    )
}

impl TinyFaceDetector {
    /// Reads `tiny_face_detector_model-weights_manifest.json` and its shard from `model_dir`.
    pub fn load(model_dir: &Path) -> Result<TinyFaceDetector> {
        let path = weights::manifest_path(model_dir, "tiny_face_detector_model");
        TinyFaceDetector::from_weights(Weights::load(&path)?)
    }

    /// Builds the net from its TF-layout weights; every tensor must be used with its expected
    /// shape (§3.3 table).
    pub fn from_weights(mut w: Weights) -> Result<TinyFaceDetector> {
        let conv0 = (
            weights::conv_filters(&w.take("conv0/filters", &[3, 3, 3, 16])?),
            w.take("conv0/bias", &[16])?,
        );
        let convs = (1..6)
            .map(|k| SepConv::take(&mut w, &format!("conv{k}"), CHANNELS[k - 1], CHANNELS[k]))
            .collect::<Result<Vec<_>>>()?;
        let conv8 = (
            weights::conv_filters(&w.take("conv8/filters", &[1, 1, 512, 25])?),
            w.take("conv8/bias", &[25])?,
        );
        w.finish()?;
        Ok(TinyFaceDetector {
            conv0,
            convs,
            conv8,
        })
    }

    /// The raw grid `[B, 25, S/32, S/32]` of a normalised input `[B, 3, S, S]` (§3.3);
    /// channel `5 a + k` is anchor `a`'s `tx, ty, tw, th, score logit`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut y = leaky(&x.conv2d(
            &self.conv0.0,
            Some(&self.conv0.1),
            [1, 1],
            [0, 0],
            [1, 1],
            1,
        ));
        y = max_pool_same(&y, 2);
        for (k, conv) in self.convs.iter().enumerate() {
            y = leaky(&conv.forward(&y, 1));
            y = max_pool_same(&y, if k == 4 { 1 } else { 2 });
        }
        y.conv2d(
            &self.conv8.0,
            Some(&self.conv8.1),
            [1, 1],
            [0, 0],
            [1, 1],
            1,
        )
    }

    /// The detector input `[1, 3, S, S]` of a `[3, H, W]` 0..255 image (§3.2): zeros padded at
    /// the bottom/right to a square, legacy-bilinear resized to `S`, `(x - mean) / 255`.
    pub fn input(img: &Tensor, input_size: i64) -> Result<Tensor> {
        rgb_size(img)?;
        Ok(normalise(&resize::square(img, input_size, false)?, MEAN))
    }

    /// Faces in a `[3, H, W]` 0..255 RGB image, best first (§3.4): candidates with
    /// `sigmoid(score) > score_threshold`, YOLO box decoding corrected for the square padding,
    /// greedy NMS at IoU 0.4. `input_size` must be a positive multiple of 32 (face-api uses
    /// 416 by default), `score_threshold` in (0, 1).
    pub fn detect(
        &self,
        img: &Tensor,
        input_size: i64,
        score_threshold: f64,
    ) -> Result<Vec<Detection>> {
        if input_size <= 0 || input_size % 32 != 0 {
            return Err(Error::Invalid(format!(
                "detector input size {input_size} must be a positive multiple of 32"
            )));
        }
        if !(score_threshold > 0.0 && score_threshold < 1.0) {
            return Err(Error::Invalid(format!(
                "score threshold {score_threshold} must be in (0, 1)"
            )));
        }
        let (h, w) = rgb_size(img)?;
        let x = TinyFaceDetector::input(img, input_size)?;
        let grid = tch::no_grad(|| self.forward(&x));
        let g = grid.size()[2];
        let out: Vec<f32> = Vec::try_from(grid.to_kind(Kind::Float).contiguous().view(-1))?;
        let at = |c: i64, row: i64, col: i64| f64::from(out[((c * g + row) * g + col) as usize]);
        let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());

        // Undo the bottom/right padding: boxes relative to the resized, unpadded image.
        let (wf, hf, s) = (w as f64, h as f64, input_size as f64);
        let scale = s / wf.max(hf);
        let (cfx, cfy) = (s / (wf * scale).round(), s / (hf * scale).round());
        let gf = g as f64;
        let mut cands = Vec::new();
        for row in 0..g {
            for col in 0..g {
                for (a, (aw, ah)) in ANCHORS.iter().enumerate() {
                    let c = 5 * a as i64;
                    let score = sigmoid(at(c + 4, row, col));
                    if score.is_nan() || score <= score_threshold {
                        continue;
                    }
                    let cx = (col as f64 + sigmoid(at(c, row, col))) / gf * cfx;
                    let cy = (row as f64 + sigmoid(at(c + 1, row, col))) / gf * cfy;
                    let bw = at(c + 2, row, col).exp() * aw / gf * cfx;
                    let bh = at(c + 3, row, col).exp() * ah / gf * cfy;
                    cands.push(Detection {
                        x: cx - bw / 2.0,
                        y: cy - bh / 2.0,
                        width: bw,
                        height: bh,
                        score,
                    });
                }
            }
        }
        // Greedy NMS: stable ascending sort, repeatedly keep the last (best) candidate.
        cands.sort_by(|p, q| p.score.total_cmp(&q.score));
        let mut picks = Vec::new();
        while let Some(best) = cands.pop() {
            cands.retain(|c| best.iou(c) <= IOU_THRESHOLD);
            picks.push(best);
        }
        Ok(picks
            .into_iter()
            .map(|d| Detection {
                x: d.x * wf,
                y: d.y * hf,
                width: d.width * wf,
                height: d.height * hf,
                score: d.score,
            })
            .collect())
    }
}
