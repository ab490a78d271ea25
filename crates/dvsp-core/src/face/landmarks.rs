//! face-api's 68-point landmark net `FaceLandmark68Net` (spec §4): four densely connected
//! blocks of 3x3 convolutions, global average pooling and a linear layer to 68 (x, y) pairs.
//! Points follow the iBUG 300-W 68-point markup (§4.5).
use std::path::Path;

use tch::{Kind, Tensor};

use super::weights::{self, Weights};
use super::{normalise, resize, rgb_size, Detection, SepConv};
use crate::Result;

/// Mean RGB subtracted before dividing by 255 (§4.2; also the recognition net's, §5.2).
pub(crate) const MEAN: [f32; 3] = [122.782, 117.001, 104.298];
/// Side of the square net input (§4.2).
pub const INPUT: i64 = 112;

/// The first conv of a dense block: regular in `dense0`, separable in the others.
#[derive(Debug)]
enum First {
    Conv(Tensor, Tensor),
    Sep(SepConv),
}

/// `denseBlock4` (§4.3): `o1 = relu(conv0(x))` (stride 2), `o2 = sep1(o1)`,
/// `o3 = sep2(relu(o1 + o2))`, `o4 = sep3(relu(o1 + o2 + o3))`, out `relu(o1 + o2 + o3 + o4)`.
#[derive(Debug)]
struct DenseBlock {
    first: First,
    convs: Vec<SepConv>,
}

impl DenseBlock {
    fn take(w: &mut Weights, b: usize, c_in: i64, c_out: i64) -> Result<DenseBlock> {
        let p = format!("dense{b}");
        let first = if b == 0 {
            First::Conv(
                weights::conv_filters(
                    &w.take(&format!("{p}/conv0/filters"), &[3, 3, c_in, c_out])?,
                ),
                w.take(&format!("{p}/conv0/bias"), &[c_out])?,
            )
        } else {
            First::Sep(SepConv::take(w, &format!("{p}/conv0"), c_in, c_out)?)
        };
        let convs = (1..4)
            .map(|k| SepConv::take(w, &format!("{p}/conv{k}"), c_out, c_out))
            .collect::<Result<Vec<_>>>()?;
        Ok(DenseBlock { first, convs })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let o1 = match &self.first {
            First::Conv(f, b) => {
                super::pad_same(x, 3, 2, 0.0).conv2d(f, Some(b), [2, 2], [0, 0], [1, 1], 1)
            }
            First::Sep(s) => s.forward(x, 2),
        }
        .relu();
        let mut sum = o1.shallow_clone();
        let mut input = o1;
        for conv in &self.convs {
            sum = &sum + conv.forward(&input, 1);
            input = sum.relu();
        }
        input
    }
}

/// `FaceLandmark68Net` (§4.3): dense blocks 3->32->64->128->256 channels, 112 -> 7 pixels,
/// mean over the 7x7 map, `x @ fc/weights + fc/bias` -> 136 values in [0, 1] units of the
/// padded input square.
#[derive(Debug)]
pub struct FaceLandmark68Net {
    blocks: Vec<DenseBlock>,
    fc: (Tensor, Tensor),
}

impl FaceLandmark68Net {
    /// Reads `face_landmark_68_model-weights_manifest.json` and its shard from `model_dir`.
    pub fn load(model_dir: &Path) -> Result<FaceLandmark68Net> {
        let path = weights::manifest_path(model_dir, "face_landmark_68_model");
        FaceLandmark68Net::from_weights(Weights::load(&path)?)
    }

    /// Builds the net from its TF-layout weights; every tensor must be used with its expected
    /// shape (§4.3 table).
    pub fn from_weights(mut w: Weights) -> Result<FaceLandmark68Net> {
        let channels = [3, 32, 64, 128, 256];
        let blocks = (0..4)
            .map(|b| DenseBlock::take(&mut w, b, channels[b], channels[b + 1]))
            .collect::<Result<Vec<_>>>()?;
        let fc = (
            w.take("fc/weights", &[256, 136])?,
            w.take("fc/bias", &[136])?,
        );
        w.finish()?;
        Ok(FaceLandmark68Net { blocks, fc })
    }

    /// The raw `[B, 136]` output (interleaved x0, y0, x1, y1, ...) of a normalised
    /// `[B, 3, 112, 112]` input (§4.3).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut y = x.shallow_clone();
        for b in &self.blocks {
            y = b.forward(&y);
        }
        y.mean_dim(&[2i64, 3][..], false, Kind::Float)
            .matmul(&self.fc.0)
            + &self.fc.1
    }

    /// The 68 landmarks of the face `det` in a `[3, H, W]` 0..255 RGB image, in
    /// original-image pixels (§4.1-§4.4): the box clipped and floored to a crop, centre-padded
    /// to a square, resized to 112, run through the net and mapped back to the crop.
    ///
    /// face-api quirk, reproduced on purpose: the points are shifted by the *raw* detection
    /// origin `(det.x, det.y)`, not by the origin of the clipped, floored crop (§4.4). Inside
    /// the image this moves them by the fractional part of the box origin (< 1 px); for a box
    /// that starts left of or above the image (negative x/y) every point lands that far
    /// too far left/up. The descriptor crop ([`super::align::descriptor_crop`]) inherits it.
    pub fn landmarks(&self, img: &Tensor, det: &Detection) -> Result<[(f64, f64); 68]> {
        let (h, w) = rgb_size(img)?;
        let b = det.crop_box(w, h);
        let crop = b.crop(img)?;
        let x = normalise(&resize::square(&crop, INPUT, true)?, MEAN);
        let out = tch::no_grad(|| self.forward(&x));
        let raw: Vec<f32> = Vec::try_from(out.to_kind(Kind::Float).contiguous().view(-1))?;

        // postProcess (f32 tensor maths in face-api): undo the centred padding of the square.
        let (wc, hc) = (b.width as f64, b.height as f64);
        let s = INPUT as f64 / wc.max(hc);
        let (ws, hs) = (wc * s, hc * s);
        let pad_x = if ws < hs { (hs - ws) / 2.0 } else { 0.0 };
        let pad_y = if hs < ws { (ws - hs) / 2.0 } else { 0.0 };
        let side = INPUT as f32;
        let mut points = [(0.0, 0.0); 68];
        for (i, p) in points.iter_mut().enumerate() {
            let rx = (raw[2 * i] * side - pad_x as f32) / ws as f32;
            let ry = (raw[2 * i + 1] * side - pad_y as f32) / hs as f32;
            *p = (f64::from(rx) * wc + det.x, f64::from(ry) * hc + det.y);
        }
        Ok(points)
    }
}

fn mean_point(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), &(x, y)| (sx + x, sy + y));
    (sx / n, sy / n)
}

/// The centres of the two eyes (§4.5): means of points 36-41 (the eye on the image's left,
/// the subject's right) and 42-47.
pub fn eye_centres(lm: &[(f64, f64); 68]) -> ((f64, f64), (f64, f64)) {
    (mean_point(&lm[36..42]), mean_point(&lm[42..48]))
}

/// The mouth centre face-api's alignment uses: the mean of all 20 mouth points 48-67 (§4.5).
pub fn mouth_centre(lm: &[(f64, f64); 68]) -> (f64, f64) {
    mean_point(&lm[48..68])
}

/// The five points of MTCNN/SphereFace alignment, in the order of
/// [`super::align::SPHEREFACE_112X96`]: image-left eye centre, image-right eye centre, nose
/// tip (30), image-left mouth corner (48), image-right mouth corner (54).
pub fn five_points(lm: &[(f64, f64); 68]) -> [(f64, f64); 5] {
    let (l, r) = eye_centres(lm);
    [l, r, lm[30], lm[48], lm[54]]
}
