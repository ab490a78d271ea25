//! Image preparation shared by the three nets (spec §2.1, §2.2): zero padding to a square and
//! TensorFlow's legacy bilinear resize, on `[C, H, W]` or `[B, C, H, W]` f32 tensors.
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// Checks that `x` is a float image `[C, H, W]` or `[B, C, H, W]` with non-empty sides and
/// returns `(H, W)`.
pub(crate) fn image_size(x: &Tensor) -> Result<(i64, i64)> {
    let s = x.size();
    if !(s.len() == 3 || s.len() == 4) || s.iter().any(|&d| d <= 0) || x.kind() != Kind::Float {
        return Err(Error::Invalid(format!(
            "expected a non-empty f32 image [C, H, W] or [B, C, H, W], got {:?} {:?}",
            x.kind(),
            s
        )));
    }
    Ok((s[s.len() - 2], s[s.len() - 1]))
}

/// `ops/padToSquare` (§2.1): pads the short side with zeros (black in 0..255) to a square of
/// side `max(H, W)`. `centered = false` (detector) puts all padding after the image
/// (bottom/right); `centered = true` (landmark and recognition crops) puts `floor(diff/2)`
/// before and `ceil(diff/2)` after.
pub fn pad_to_square(x: &Tensor, centered: bool) -> Result<Tensor> {
    let (h, w) = image_size(x)?;
    let diff = (h - w).abs();
    let before = if centered { diff / 2 } else { 0 };
    let after = diff - before;
    Ok(if h > w {
        x.constant_pad_nd([before, after, 0, 0])
    } else {
        x.constant_pad_nd([0, 0, before, after])
    })
}

/// One axis of the legacy resize (§2.2) from `n_in` to `n_out` samples, where samples
/// `before..before + len` of the input axis are the image and the others zero padding (§2.1).
struct Axis {
    /// Image indices of the lower and upper neighbours (clamped into the image).
    lo: Vec<i64>,
    hi: Vec<i64>,
    /// 1 where that neighbour is an image sample, 0 where it is padding.
    lo_in: Vec<f64>,
    hi_in: Vec<f64>,
    /// Weight of the upper neighbour.
    f: Vec<f64>,
}

impl Axis {
    /// `src = (n_in / n_out) * i`, `lo = floor(src)`, `hi = min(n_in - 1, ceil(src))`,
    /// `f = src - lo`, then shifted by `before`.
    fn new(n_in: i64, n_out: i64, before: i64, len: i64) -> Axis {
        let ratio = n_in as f64 / n_out as f64;
        let mut a = Axis {
            lo: Vec::new(),
            hi: Vec::new(),
            lo_in: Vec::new(),
            hi_in: Vec::new(),
            f: Vec::new(),
        };
        let inside = |j: i64| if (0..len).contains(&j) { 1.0 } else { 0.0 };
        for i in 0..n_out {
            let src = ratio * i as f64;
            let l = src.floor().max(0.0);
            let (lo, hi) = (
                l as i64 - before,
                (src.ceil() as i64).min(n_in - 1) - before,
            );
            a.lo.push(lo.clamp(0, len - 1));
            a.hi.push(hi.clamp(0, len - 1));
            a.lo_in.push(inside(lo));
            a.hi_in.push(inside(hi));
            a.f.push(src - l);
        }
        a
    }

    fn padded(&self) -> bool {
        self.lo_in.iter().chain(&self.hi_in).any(|&v| v == 0.0)
    }
}

/// Bilinear interpolation of the last two axes of `x` along `rows` and `cols`:
/// `top = TL + (TR - TL) fx`, `bottom = BL + (BR - BL) fx`, `top + (bottom - top) fy`, in f64
/// from the f32 inputs, rounded once to f32 (bit-identical to tfjs' CPU kernel).
fn interpolate(x: &Tensor, rows: &Axis, cols: &Axis) -> Tensor {
    let dev = x.device();
    let rd = x.dim() as i64 - 2;
    let index = |v: &[i64]| Tensor::from_slice(v).to(dev);
    let weights = |v: &[f64]| Tensor::from_slice(v).to(dev);
    let top = x.index_select(rd, &index(&rows.lo));
    let bottom = x.index_select(rd, &index(&rows.hi));
    let padded = rows.padded() || cols.padded();
    let corner = |r: &Tensor, r_in: &[f64], c: &[i64], c_in: &[f64]| {
        let v = r.index_select(rd + 1, &index(c)).to_kind(Kind::Double);
        if padded {
            v * weights(r_in).view([-1, 1]) * weights(c_in).view([1, -1])
        } else {
            v
        }
    };
    let tl = corner(&top, &rows.lo_in, &cols.lo, &cols.lo_in);
    let tr = corner(&top, &rows.lo_in, &cols.hi, &cols.hi_in);
    let bl = corner(&bottom, &rows.hi_in, &cols.lo, &cols.lo_in);
    let br = corner(&bottom, &rows.hi_in, &cols.hi, &cols.hi_in);
    let (fx, fy) = (weights(&cols.f), weights(&rows.f).view([-1, 1]));
    let top = &tl + (&tr - &tl) * &fx;
    let bottom = &bl + (&br - &bl) * &fx;
    (&top + (&bottom - &top) * &fy).to_kind(Kind::Float)
}

fn check_size(out_h: i64, out_w: i64) -> Result<()> {
    if out_h <= 0 || out_w <= 0 {
        return Err(Error::Invalid(format!(
            "resize to {out_h}x{out_w}: sides must be positive"
        )));
    }
    Ok(())
}

/// `tf.image.resizeBilinear(x, [out_h, out_w], alignCorners = false, halfPixelCenters = false)`
/// (§2.2): the legacy TF bilinear resize, no half-pixel offset and no antialiasing (torch's
/// `interpolate` differs). Interpolates in f64 from the f32 inputs and rounds once to f32, as
/// tfjs' CPU kernel does, so the nets see bit-identical inputs. Returns `x` unchanged when the
/// size already matches.
pub fn resize_bilinear(x: &Tensor, out_h: i64, out_w: i64) -> Result<Tensor> {
    let (h, w) = image_size(x)?;
    check_size(out_h, out_w)?;
    if (h, w) == (out_h, out_w) {
        return Ok(x.shallow_clone());
    }
    Ok(interpolate(
        x,
        &Axis::new(h, out_h, 0, h),
        &Axis::new(w, out_w, 0, w),
    ))
}

/// Pads to a square (§2.1) and resizes to `size x size` (§2.2): the input of each net before
/// its mean subtraction. Equal to `resize_bilinear(&pad_to_square(x, centered)?, size, size)`
/// without building the padded image.
pub fn square(x: &Tensor, size: i64, centered: bool) -> Result<Tensor> {
    let (h, w) = image_size(x)?;
    check_size(size, size)?;
    let n = h.max(w);
    if n == size {
        return pad_to_square(x, centered);
    }
    let (top, left) = if centered {
        ((n - h) / 2, (n - w) / 2)
    } else {
        (0, 0)
    };
    Ok(interpolate(
        x,
        &Axis::new(n, size, top, h),
        &Axis::new(n, size, left, w),
    ))
}
