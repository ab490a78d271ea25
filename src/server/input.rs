//! Probe images from requests: a multipart field, a raw `image/*` body, or JSON with
//! base64 fields. Images are checked before decoding: format by magic bytes (png, jpeg, bmp,
//! webp), pixel count from the header (decompression bombs are refused without allocating),
//! then decoded under allocation limits and resized to the model's input.
use std::collections::HashMap;
use std::io::Cursor;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header::CONTENT_TYPE;
use base64::Engine;
use image::{ImageDecoder, ImageFormat, ImageReader};
use tch::Tensor;

use super::error::ApiError;
use super::service::FaceBox;
use super::AppState;
use crate::face::FaceApi;
use crate::model::InputSpec;

/// A request body holding named images (and, for JSON, the other fields).
#[derive(Debug, Default)]
pub struct Payload {
    pub images: HashMap<String, Bytes>,
    pub json: serde_json::Map<String, serde_json::Value>,
}

impl Payload {
    /// The image in field `name`, or a 422 naming the accepted forms.
    pub fn image(&self, name: &str) -> Result<&Bytes, ApiError> {
        self.images.get(name).ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "no image `{name}`: send multipart field `{name}`, JSON `{{\"{name}_base64\": ...}}`{}",
                if name == "image" { ", or a raw image/png or image/jpeg body" } else { "" }
            ))
        })
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!("request body exceeds {limit} bytes"))
}

impl FromRequest<AppState> for Payload {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, Self::Rejection> {
        let limit = app.limits.max_body_bytes;
        let ctype = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut out = Payload::default();
        if ctype.starts_with("multipart/form-data") {
            let mut mp = Multipart::from_request(req, app)
                .await
                .map_err(|e| ApiError::BadRequest(e.body_text()))?;
            loop {
                let field = match mp.next_field().await {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                        return Err(too_large(limit))
                    }
                    Err(e) => {
                        return Err(ApiError::BadRequest(format!(
                            "malformed multipart body: {}",
                            e.body_text()
                        )))
                    }
                };
                let name = field.name().unwrap_or("").to_string();
                let bytes = field.bytes().await.map_err(|e| {
                    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                        too_large(limit)
                    } else {
                        ApiError::BadRequest(format!("malformed multipart body: {}", e.body_text()))
                    }
                })?;
                out.images.insert(name, bytes);
            }
            return Ok(out);
        }
        let body = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| too_large(limit))?;
        if ctype.starts_with("application/json") {
            let v: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
            let serde_json::Value::Object(map) = v else {
                return Err(ApiError::BadRequest(
                    "the JSON body must be an object".into(),
                ));
            };
            for (k, v) in &map {
                if let Some(name) = k.strip_suffix("_base64") {
                    let s = v
                        .as_str()
                        .ok_or_else(|| ApiError::BadRequest(format!("`{k}` must be a string")))?;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(s.trim())
                        .map_err(|e| {
                            ApiError::BadRequest(format!("`{k}` is not valid base64: {e}"))
                        })?;
                    out.images.insert(name.to_string(), Bytes::from(bytes));
                }
            }
            out.json = map;
            return Ok(out);
        }
        if ctype.starts_with("image/") || ctype == "application/octet-stream" {
            out.images.insert("image".into(), body);
            return Ok(out);
        }
        Err(ApiError::UnsupportedMediaType(format!(
            "content type {ctype:?}: send multipart/form-data, application/json or image/*"
        )))
    }
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
        return match crate::face::photo::best_face(&faces, &t, how) {
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
