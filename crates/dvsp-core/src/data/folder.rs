//! Image-folder data sets: `ROOT/<identity>/<image>`, the layout of CASIA-WebFace and LFW.
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use super::{Dataset, Split};
use crate::{Error, Result};

const EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "bmp", "webp"];

/// Lists `(identity, image paths)` sorted by name; identities without images are left out.
pub fn list(root: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(root).map_err(Error::io(root))? {
        let entry = entry.map_err(Error::io(root))?;
        if !entry.path().is_dir() {
            continue;
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(entry.path())
            .map_err(Error::io(entry.path()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect();
        files.sort();
        if !files.is_empty() {
            ids.push((entry.file_name().to_string_lossy().into_owned(), files));
        }
    }
    ids.sort();
    if ids.len() < 2 {
        return Err(Error::BadData {
            path: root.to_path_buf(),
            message: format!(
                "found {} identity folders with images; need at least 2",
                ids.len()
            ),
        });
    }
    Ok(ids)
}

/// Decodes one image to RGB `[3, H, W]` `u8`, resized to `h` x `w`.
pub fn load_image(path: &Path, h: u32, w: u32) -> Result<Tensor> {
    let img = image::open(path).map_err(|e| Error::BadData {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let rgb = img
        .resize_exact(w, h, image::imageops::FilterType::Triangle)
        .to_rgb8();
    Ok(Tensor::from_slice(rgb.as_raw())
        .reshape([h as i64, w as i64, 3])
        .permute([2, 0, 1]))
}

/// Decodes `paths` on every core into one `[N, 3, h, w]` `u8` tensor, in order.
pub fn load_images(paths: &[PathBuf], h: u32, w: u32) -> Result<Tensor> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = paths.len().div_ceil(threads).max(1);
    let parts: Vec<Result<Vec<Tensor>>> = std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(|p| load_image(p, h, w)).collect()))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Invalid("an image decoder thread panicked".into()))
                })
            })
            .collect()
    });
    let mut images = Vec::with_capacity(paths.len());
    for p in parts {
        images.extend(p?);
    }
    if images.is_empty() {
        return Err(Error::Invalid("no images to load".into()));
    }
    Ok(Tensor::stack(&images, 0))
}

fn load_ids(ids: &[(String, Vec<PathBuf>)], first_label: usize, h: u32, w: u32) -> Result<Dataset> {
    let mut paths = Vec::new();
    let mut labels = Vec::new();
    for (i, (_, files)) in ids.iter().enumerate() {
        for f in files {
            paths.push(f.clone());
            labels.push((first_label + i) as i64);
        }
    }
    Ok(Dataset {
        images: load_images(&paths, h, w)?,
        labels: Tensor::from_slice(&labels).to_kind(Kind::Int64),
        classes: ids.len(),
    })
}

/// Train on the first four fifths of identities (sorted by name), test on the rest.
pub fn load_split(root: &Path, h: u32, w: u32) -> Result<Split> {
    let ids = list(root)?;
    let n_test = (ids.len() / 5).max(1);
    let (train_ids, test_ids) = ids.split_at(ids.len() - n_test);
    Ok(Split {
        train: load_ids(train_ids, 0, h, w)?,
        test: load_ids(test_ids, 0, h, w)?,
        extra_test: None,
        description: format!(
            "{} identities sorted by name: first {} train, last {} test (disjoint identities), images resized to {h}x{w}",
            ids.len(),
            train_ids.len(),
            test_ids.len()
        ),
    })
}
