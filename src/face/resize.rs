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

/// Source indices and weights of one axis for the legacy resize: `src = (n_in / n_out) * i`,
/// `lo = floor(src)`, `hi = min(n_in - 1, ceil(src))`, `f = src - lo`.
fn axis(n_in: i64, n_out: i64) -> (Tensor, Tensor, Tensor) {
    let ratio = n_in as f64 / n_out as f64;
    let (mut lo, mut hi, mut f) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n_out {
        let src = ratio * i as f64;
        let l = src.floor().max(0.0);
        lo.push(l as i64);
        hi.push((src.ceil() as i64).min(n_in - 1));
        f.push(src - l);
    }
    (
        Tensor::from_slice(&lo),
        Tensor::from_slice(&hi),
        Tensor::from_slice(&f),
    )
}

/// `tf.image.resizeBilinear(x, [out_h, out_w], alignCorners = false, halfPixelCenters = false)`
/// (§2.2): the legacy TF bilinear resize, no half-pixel offset and no antialiasing (torch's
/// `interpolate` differs). Interpolates in f64 from the f32 inputs and rounds once to f32, as
/// tfjs' CPU kernel does, so the nets see bit-identical inputs. Returns `x` unchanged when the
/// size already matches.
pub fn resize_bilinear(x: &Tensor, out_h: i64, out_w: i64) -> Result<Tensor> {
    let (h, w) = image_size(x)?;
    if out_h <= 0 || out_w <= 0 {
        return Err(Error::Invalid(format!(
            "resize to {out_h}x{out_w}: sides must be positive"
        )));
    }
    if (h, w) == (out_h, out_w) {
        return Ok(x.shallow_clone());
    }
    let dev = x.device();
    let (r0, r1, fy) = axis(h, out_h);
    let (c0, c1, fx) = axis(w, out_w);
    let (r0, r1, c0, c1) = (r0.to(dev), r1.to(dev), c0.to(dev), c1.to(dev));
    let rd = x.dim() as i64 - 2;
    let fx = fx.to(dev);
    let fy = fy.to(dev).view([out_h, 1]);
    let top = x.index_select(rd, &r0);
    let bottom = x.index_select(rd, &r1);
    let corner =
        |rows: &Tensor, cols: &Tensor| rows.index_select(rd + 1, cols).to_kind(Kind::Double);
    let (tl, tr) = (corner(&top, &c0), corner(&top, &c1));
    let (bl, br) = (corner(&bottom, &c0), corner(&bottom, &c1));
    let top = &tl + (&tr - &tl) * &fx;
    let bottom = &bl + (&br - &bl) * &fx;
    Ok((&top + (&bottom - &top) * &fy).to_kind(Kind::Float))
}

/// Pads to a square (§2.1) and resizes to `size x size` (§2.2): the input of each net before
/// its mean subtraction.
pub fn square(x: &Tensor, size: i64, centered: bool) -> Result<Tensor> {
    resize_bilinear(&pad_to_square(x, centered)?, size, size)
}
