//! Face crops from landmarks: (a) the five-point similarity alignment of MTCNN / SphereFace
//! (Liu et al. 2017) onto the 112x96 template this crate's face models take, and (b) face-api's
//! dlib-style square crop that feeds its recognition net (spec §5.1).
use tch::{Kind, Tensor};

use super::landmarks::{eye_centres, mouth_centre};
use super::recognition::INPUT;
use super::{resize, rgb_size, CropBox, Face};
use crate::{Error, Result};

/// Where the five points of [`super::landmarks::five_points`] (image-left eye, image-right
/// eye, nose tip, image-left and image-right mouth corners) go in a 96-wide, 112-high
/// SphereFace crop (x, y), pixel centres at integer coordinates.
pub const SPHEREFACE_112X96: [(f64, f64); 5] = [
    (30.2946, 51.6963),
    (65.5318, 51.5014),
    (48.0252, 71.7366),
    (33.5493, 92.3655),
    (62.7299, 92.2041),
];

/// The least-squares similarity transform (rotation, uniform scale, translation; no
/// reflection) taking `src` to `dst` (Umeyama 1991): `[[a, -b, tx], [b, a, ty]]` with
/// `dst ~ M [x, y, 1]^T`. In 2-D, with points as complex numbers centred on their means,
/// `a + ib = sum(conj(s) d) / sum(|s|^2)`, which is Umeyama's solution with the reflection
/// excluded. Needs at least two distinct source points and as many points on each side.
pub fn similarity(src: &[(f64, f64)], dst: &[(f64, f64)]) -> Result<[[f64; 3]; 2]> {
    if src.len() != dst.len() || src.len() < 2 {
        return Err(Error::Invalid(format!(
            "similarity needs two or more point pairs, got {} source and {} target points",
            src.len(),
            dst.len()
        )));
    }
    let n = src.len() as f64;
    let mean = |p: &[(f64, f64)]| {
        let (x, y) = p.iter().fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y));
        (x / n, y / n)
    };
    let (ms, md) = (mean(src), mean(dst));
    let (mut num_a, mut num_b, mut den) = (0.0, 0.0, 0.0);
    for (&(sx, sy), &(dx, dy)) in src.iter().zip(dst) {
        let (sx, sy, dx, dy) = (sx - ms.0, sy - ms.1, dx - md.0, dy - md.1);
        num_a += sx * dx + sy * dy;
        num_b += sx * dy - sy * dx;
        den += sx * sx + sy * sy;
    }
    if den.is_nan() || den <= 1e-12 {
        return Err(Error::Invalid(
            "similarity: the source points coincide".into(),
        ));
    }
    let (a, b) = (num_a / den, num_b / den);
    let tx = md.0 - (a * ms.0 - b * ms.1);
    let ty = md.1 - (b * ms.0 + a * ms.1);
    Ok([[a, -b, tx], [b, a, ty]])
}

/// Applies a 2x3 affine matrix to a point.
pub fn apply(m: &[[f64; 3]; 2], (x, y): (f64, f64)) -> (f64, f64) {
    (
        m[0][0] * x + m[0][1] * y + m[0][2],
        m[1][0] * x + m[1][1] * y + m[1][2],
    )
}

/// Warps a `[C, H, W]` (or `[B, C, H, W]`) image with the affine map `m` (source pixel ->
/// output pixel, as from [`similarity`]) to `[C, out_h, out_w]`: each output pixel is the
/// bilinear sample at `m^-1` of its position, zero outside the image (pixel centres at integer
/// coordinates, as OpenCV's `warpAffine`).
pub fn warp(img: &Tensor, m: &[[f64; 3]; 2], out_h: i64, out_w: i64) -> Result<Tensor> {
    let (h, w) = resize::image_size(img)?;
    if out_h <= 0 || out_w <= 0 {
        return Err(Error::Invalid(format!(
            "warp to {out_h}x{out_w}: sides must be positive"
        )));
    }
    let [[a, b, tx], [c, d, ty]] = *m;
    let det = a * d - b * c;
    if !det.is_finite() || det.abs() <= 1e-12 {
        return Err(Error::Invalid(format!(
            "warp: matrix {m:?} is not invertible"
        )));
    }
    // Inverse map, and grid_sample's normalised coordinates (align_corners = false:
    // pixel i has centre (2 i + 1) / n - 1).
    let (ia, ib, ic, id) = (d / det, -b / det, -c / det, a / det);
    let mut grid = Vec::with_capacity((out_h * out_w * 2) as usize);
    for v in 0..out_h {
        for u in 0..out_w {
            let (px, py) = (u as f64 - tx, v as f64 - ty);
            let (sx, sy) = (ia * px + ib * py, ic * px + id * py);
            grid.push(((2.0 * sx + 1.0) / w as f64 - 1.0) as f32);
            grid.push(((2.0 * sy + 1.0) / h as f64 - 1.0) as f32);
        }
    }
    let batched = img.dim() == 4;
    let x = if batched {
        img.shallow_clone()
    } else {
        img.unsqueeze(0)
    };
    let bsz = x.size()[0];
    let grid = Tensor::from_slice(&grid)
        .to(img.device())
        .view([1, out_h, out_w, 2])
        .expand([bsz, out_h, out_w, 2], false);
    let y = x.to_kind(Kind::Float).grid_sampler_2d(&grid, 0, 0, false);
    Ok(if batched { y } else { y.squeeze_dim(0) })
}

/// face-api's dlib-style recognition crop of a face (§5.1, `FaceLandmarks.align(null,
/// {useDlibAlignment: true})`): from the eye centres `le`, `re` and mouth centre `mo`,
/// `size = floor(mean(|mo - le|, |mo - re|) / 0.45)`, a square of that side whose origin is
/// `(le + re + mo) / 3 - (0.5, 0.43) size` (floored, at least 0), cut to the landmark crop size
/// `landmark_crop` (`min(size, crop_w + x)`) and then clipped to the `img_w x img_h` image
/// as in §4.1. Unrotated; may be non-square or empty after clipping.
pub fn descriptor_box(
    landmarks: &[(f64, f64); 68],
    landmark_crop: &CropBox,
    img_w: i64,
    img_h: i64,
) -> CropBox {
    let (le, re) = eye_centres(landmarks);
    let mo = mouth_centre(landmarks);
    let dist = ((mo.0 - le.0).hypot(mo.1 - le.1) + (mo.0 - re.0).hypot(mo.1 - re.1)) / 2.0;
    let size = (dist / 0.45).floor();
    let (rx, ry) = ((le.0 + re.0 + mo.0) / 3.0, (le.1 + re.1 + mo.1) / 3.0);
    let x = (rx - 0.5 * size).max(0.0).floor();
    let y = (ry - 0.43 * size).max(0.0).floor();
    let w = size.min(landmark_crop.width as f64 + x);
    let h = size.min(landmark_crop.height as f64 + y);
    CropBox::clip(x, y, w, h, img_w, img_h)
}

/// The recognition net's input for `face` in a `[3, H, W]` 0..255 RGB image (§5.1, §5.2):
/// the [`descriptor_box`] crop, centre-padded to a square with zeros and legacy-bilinear
/// resized to `[3, 150, 150]`, still 0..255 (use [`super::to_unit`] before
/// [`super::FaceRecognitionNet::forward`]). An error when the crop is empty (face-api then
/// returns an all-zero descriptor).
pub fn descriptor_crop(img: &Tensor, face: &Face) -> Result<Tensor> {
    let (h, w) = rgb_size(img)?;
    let lm_crop = face.detection.crop_box(w, h);
    let b = descriptor_box(&face.landmarks, &lm_crop, w, h);
    resize::square(&b.crop(img)?, INPUT, true)
}
