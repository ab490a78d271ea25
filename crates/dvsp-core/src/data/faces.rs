//! `face-samples`: the labelled faces this machine can have (no face data set downloads here).
//! face_recognition 1.3.0's test photos give two identities, Obama (obama*.jpg and 32bit.png,
//! which is obama2 re-encoded) and Biden (biden.jpg); every face in face-api's six sample
//! photos is taken as its own identity (they are not labelled; faces in one photo are
//! different people, across photos this is assumed). All are found and cropped by
//! [`crate::face::photo`]. scikit-image's `lfw_subset.npy` (100 faces, 25x25 grey, already cropped,
//! no identities) is the face audit's impostor pool ([`lfw_subset`]); it is not in this set,
//! since its blurry upscaled faces resemble each other more than real photos do.
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::data::{Dataset, Split};
use crate::face::photo;
use crate::spec::FaceCrop;
use crate::{Error, Result};

/// LFW faces in `lfw_subset.npy` (the next 100 are non-faces).
const LFW_FACES: i64 = 100;

/// The face crop for a model input size: 150x150 is face-api's, 112x96 SphereFace's.
pub fn crop_for(h: u32, w: u32) -> Result<FaceCrop> {
    match (h, w) {
        (150, 150) => Ok(FaceCrop::Dlib150),
        (112, 96) => Ok(FaceCrop::Sphereface112x96),
        _ => Err(Error::Invalid(format!(
            "face-samples are face crops of 150x150 (face-api) or 112x96 (SphereFace), not {h}x{w}"
        ))),
    }
}

/// The identity of a face_recognition test photo.
fn identity(path: &Path) -> Option<&'static str> {
    let stem = path.file_stem()?.to_str()?;
    if stem.starts_with("obama") || stem == "32bit" {
        Some("obama")
    } else if stem.starts_with("biden") {
        Some("biden")
    } else {
        None
    }
}

/// The photos of `root/face_recognition` by identity (obama first), sorted by name.
pub fn photos(root: &Path) -> Result<Vec<(&'static str, Vec<PathBuf>)>> {
    let dir = root.join("face_recognition");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(Error::io(&dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| identity(p).is_some())
        .collect();
    files.sort();
    let of = |who: &str| -> Vec<PathBuf> {
        files
            .iter()
            .filter(|p| identity(p) == Some(who))
            .cloned()
            .collect()
    };
    let out = vec![("obama", of("obama")), ("biden", of("biden"))];
    if out.iter().any(|(_, v)| v.is_empty()) {
        return Err(Error::BadData {
            path: dir,
            message:
                "expected obama*.jpg and biden.jpg from face_recognition 1.3.0 (run `make setup`)"
                    .into(),
        });
    }
    Ok(out)
}

/// face-api's sample photos (`root/face-api/samples/*.jpg`), sorted.
pub fn sample_photos(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join("face-api/samples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(Error::io(&dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    files.sort();
    Ok(files)
}

/// The first 100 (face) images of scikit-image's `lfw_subset.npy` (`<f8`, `[200, 25, 25]`,
/// grey in [0, 1]) as `[100, 1, 25, 25]` floats.
pub fn lfw_subset(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    let bad = |m: &str| Error::BadData {
        path: path.to_path_buf(),
        message: m.to_string(),
    };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file"));
    }
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(
        bytes
            .get(10..10 + header_len)
            .ok_or_else(|| bad("truncated header"))?,
    )
    .map_err(|_| bad("header is not text"))?;
    if !header.contains("'descr': '<f8'") || !header.contains("(200, 25, 25)") {
        return Err(bad(&format!(
            "expected <f8 (200, 25, 25), header {header:?}"
        )));
    }
    let data = &bytes[10 + header_len..];
    if data.len() != 200 * 25 * 25 * 8 {
        return Err(bad("data length does not match the header"));
    }
    let values: Vec<f32> = data
        .chunks_exact(8)
        .take((LFW_FACES * 625) as usize)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
        .collect();
    Ok(Tensor::from_slice(&values).view([LFW_FACES, 1, 25, 25]))
}

/// The LFW subset faces as model inputs: `[100, 3, h, w]` in [0, 1], upscaled bilinearly.
pub fn lfw_inputs(root: &Path, h: i64, w: i64) -> Result<Tensor> {
    Ok(lfw_subset(&root.join("lfw_subset.npy"))?
        .upsample_bilinear2d([h, w], false, None, None)
        .expand([LFW_FACES, 3, h, w], false)
        .clamp(0.0, 1.0))
}

/// The sample set at `h` x `w` (150x150 or 112x96): every image is a test image; train is the
/// same set (it is for evaluation and audits, far too small to train on).
pub fn load(root: &Path, h: u32, w: u32) -> Result<Split> {
    let how = crop_for(h, w)?;
    let faces = crate::face::FaceApi::load(&crate::face::model_dir())?;
    let mut images = Vec::new();
    let mut labels = Vec::new();
    let ids = photos(root)?;
    for (label, (_, files)) in ids.iter().enumerate() {
        for f in files {
            images.push(photo::crop_file(&faces, f, how)?);
            labels.push(label as i64);
        }
    }
    let mut classes = ids.len();
    let mut others = 0;
    for f in sample_photos(root)? {
        let _guard = tch::no_grad_guard();
        let img = crate::face::load_rgb(&f)?;
        for face in faces.faces(&img)? {
            images.push(photo::crop(&img, &face, how)?);
            labels.push(classes as i64);
            classes += 1;
            others += 1;
        }
    }
    let set = Dataset {
        images: (Tensor::stack(&images, 0) * 255.0)
            .round()
            .to_kind(Kind::Uint8),
        labels: Tensor::from_slice(&labels),
        classes,
    };
    let description = format!(
        "face samples: {} photos of obama and biden (face_recognition 1.3.0) and the {others} faces of face-api's sample photos as single-image identities, {how:?} crops",
        ids.iter().map(|(_, v)| v.len()).sum::<usize>()
    );
    Ok(Split {
        train: Dataset {
            images: set.images.shallow_clone(),
            labels: set.labels.shallow_clone(),
            classes: set.classes,
        },
        test: set,
        extra_test: None,
        description,
    })
}
