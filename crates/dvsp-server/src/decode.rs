//! Probe images decoded under bounds: format by magic bytes (png, jpeg, bmp, webp), pixel
//! count from the header (decompression bombs are refused without allocating), then decoded
//! under allocation limits and resized to the model's input (or, for face models, the best
//! face cropped as the model takes it).
use std::io::Cursor;

use image::{ImageDecoder, ImageFormat, ImageReader};
use tch::Tensor;

use crate::error::ApiError;
use dvsp_core::face::FaceApi;
use dvsp_core::spec::InputSpec;
use serde::Serialize;

/// The service's default --max-pixels.
pub const MAX_PIXELS: u64 = 24_000_000;

/// Where the face the model took was found in the uploaded photo (face models only), in the
/// photo's pixels; it says where, not who.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FaceBox {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    pub width: f64,
    pub height: f64,
    /// The detector's confidence.
    pub score: f64,
}

/// Decodes `bytes` (checked format, header-checked pixel count, bounded allocation).
fn read(bytes: &[u8], max_pixels: u64) -> Result<image::DynamicImage, ApiError> {
    let format = image::guess_format(bytes)
        .map_err(|_| ApiError::Unprocessable("not an image: send png, jpeg, bmp or webp".into()))?;
    if !matches!(
        format,
        ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Bmp | ImageFormat::WebP
    ) {
        return Err(ApiError::Unprocessable(format!(
            "image format {format:?} unsupported: send png, jpeg, bmp or webp"
        )));
    }
    let (w, h) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| ApiError::Unprocessable(format!("unreadable image header: {e}")))?;
    if w == 0 || h == 0 || w as u64 * h as u64 > max_pixels {
        return Err(ApiError::Unprocessable(format!(
            "image is {w}x{h} pixels; the limit is {max_pixels} pixels"
        )));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let budget = decode_budget(max_pixels);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(budget);
    reader.limits(limits);
    let too_big = || {
        ApiError::Unprocessable(format!(
            "image is {w}x{h} pixels but decoding it needs more than {budget} bytes \
             (4 bytes per pixel of the pixel limit; 16-bit images take twice as many)"
        ))
    };
    let failed = |e: image::ImageError| match e {
        image::ImageError::Limits(_) => too_big(),
        e => ApiError::Unprocessable(format!("could not decode the image: {e}")),
    };
    let mut decoder = reader.into_decoder().map_err(failed)?;
    if decoder.total_bytes() > budget {
        return Err(too_big());
    }
    // The photo upright, as a browser shows it (a phone's JPEG says how it was held): the
    // face detector and the console's face box see the same picture. A quarter turn takes
    // one more copy of the pixels.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(failed)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// The most a decode may allocate for its pixels (checked by the decoder against the header
/// before the buffer exists): 4 bytes per pixel of `max_pixels`, an 8-bit RGBA image at the
/// pixel limit. Larger sample types (16-bit PNG) fit in proportionally fewer pixels.
pub fn decode_budget(max_pixels: u64) -> u64 {
    max_pixels.saturating_mul(4)
}

/// Decodes `bytes` into a `[C, H, W]` tensor in [0, 1] shaped for the model's `input`: the
/// whole image resized, or for face models (`faces` given) the best face found, cropped as
/// the model takes it (422 when there is no face), with that face's box.
pub fn decode(
    bytes: &[u8],
    input: &InputSpec,
    max_pixels: u64,
    faces: Option<&std::sync::Mutex<FaceApi>>,
) -> Result<(Tensor, Option<FaceBox>), ApiError> {
    let img = read(bytes, max_pixels)?;
    if let (Some(how), Some(faces)) = (input.face, faces) {
        // Each copy is freed before the next is made: the decoded image (no copy when it is
        // already RGB8), its bytes as a tensor, then the float image the detector takes.
        let rgb = img.into_rgb8();
        let (w, h) = (rgb.width() as i64, rgb.height() as i64);
        let bytes = Tensor::from_slice(rgb.as_raw());
        drop(rgb);
        let t = bytes
            .view([h, w, 3])
            .permute([2, 0, 1])
            .to_kind(tch::Kind::Float);
        drop(bytes);
        // The nets are read-only: a panic elsewhere cannot leave them half-updated.
        let faces = faces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        return match dvsp_core::face::photo::best_face(&faces, &t, how) {
            Ok(Some((face, crop))) => {
                let d = face.detection;
                let face = FaceBox {
                    x: d.x,
                    y: d.y,
                    width: d.width,
                    height: d.height,
                    score: d.score,
                };
                Ok((crop, Some(face)))
            }
            Ok(None) => Err(ApiError::Unprocessable("no face found in the image".into())),
            // Degenerate geometry of this photo's face (an empty crop, coinciding landmarks).
            Err(e) => Err(ApiError::Unprocessable(format!(
                "the face could not be cropped: {e}"
            ))),
        };
    }
    let (iw, ih) = (input.width as u32, input.height as u32);
    let resized = img.resize_exact(iw, ih, image::imageops::FilterType::Triangle);
    let (data, c) = if input.channels == 1 {
        (resized.to_luma8().into_raw(), 1)
    } else {
        (resized.to_rgb8().into_raw(), 3)
    };
    let t = Tensor::from_slice(&data)
        .view([ih as i64, iw as i64, c])
        .permute([2, 0, 1]);
    Ok((t.to_kind(tch::Kind::Float) / 255.0, None))
}

#[cfg(test)]
mod tests {
    use super::read;

    /// A 40x20 JPEG whose EXIF says "rotate 90 degrees clockwise to view" (orientation 6,
    /// how a phone held upright stores a portrait).
    fn rotated_jpeg() -> Vec<u8> {
        let img = image::RgbImage::from_fn(40, 20, |x, _| image::Rgb([(x * 6) as u8, 0, 0]));
        let mut jpeg = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08".to_vec();
        // IFD0: one entry, Orientation (0x0112), SHORT, count 1, value 6; no next IFD.
        exif.extend_from_slice(b"\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0");
        let mut app1 = vec![0xff, 0xe1];
        app1.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
        app1.extend_from_slice(&exif);
        jpeg.splice(2..2, app1);
        jpeg
    }

    #[test]
    fn a_photo_is_decoded_upright_as_its_exif_says() {
        let img = read(&rotated_jpeg(), 1_000_000).unwrap();
        assert_eq!((img.width(), img.height()), (20, 40));
        // Turned clockwise: the stored left edge (dark) is now the top.
        let rgb = img.to_rgb8();
        assert!(rgb.get_pixel(10, 0)[0] < 40 && rgb.get_pixel(10, 39)[0] > 180);
    }
}
