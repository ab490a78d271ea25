//! face-api / TF.js weight files (spec §1): a `*-weights_manifest.json` naming the tensors of
//! one or more groups of shard files, dequantised to f32 and kept in TF layout.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tch::Tensor;

use crate::{Error, Result};

#[derive(Deserialize)]
struct Group {
    paths: Vec<String>,
    weights: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    name: String,
    shape: Vec<i64>,
    dtype: String,
    quantization: Option<Quantization>,
}

#[derive(Deserialize)]
struct Quantization {
    dtype: String,
    scale: f64,
    min: f64,
}

/// The tensors of one manifest, by name, in TF layout (`[kh, kw, in, out]` filters, §1.2).
///
/// The architecture takes what it needs with [`Weights::take`] and then calls
/// [`Weights::finish`], so a file that does not fit the net is refused by name.
#[derive(Debug)]
pub struct Weights {
    manifest: PathBuf,
    tensors: BTreeMap<String, Tensor>,
}

impl Weights {
    /// Reads `manifest` and its shards (paths relative to the manifest's folder) and
    /// dequantises every entry (§1.1): uint8 values become `f32(f64(q) * scale + min)`, entries
    /// without `quantization` are little-endian f32. Each group's shards are concatenated in
    /// `paths` order and must be consumed exactly.
    pub fn load(manifest: &Path) -> Result<Weights> {
        let bad = |message: String| Error::BadData {
            path: manifest.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(manifest).map_err(Error::io(manifest))?;
        let groups: Vec<Group> = serde_json::from_str(&text)
            .map_err(|e| bad(format!("not a TF.js weights manifest: {e}")))?;
        let dir = manifest.parent().unwrap_or(Path::new("."));
        let mut tensors = BTreeMap::new();
        for group in groups {
            let mut buf = Vec::new();
            for shard in &group.paths {
                let path = dir.join(shard);
                buf.extend(std::fs::read(&path).map_err(Error::io(&path))?);
            }
            let mut offset = 0usize;
            for e in group.weights {
                let n = e.shape.iter().try_fold(1usize, |acc, &d| {
                    usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
                });
                let n = n.ok_or_else(|| bad(format!("{}: bad shape {:?}", e.name, e.shape)))?;
                let (values, bytes) = match &e.quantization {
                    Some(q) if q.dtype == "uint8" => {
                        let raw = offset.checked_add(n).and_then(|end| buf.get(offset..end));
                        let raw =
                            raw.ok_or_else(|| bad(format!("{}: shards too short", e.name)))?;
                        let v: Vec<f32> = raw
                            .iter()
                            .map(|&b| (f64::from(b) * q.scale + q.min) as f32)
                            .collect();
                        (v, n)
                    }
                    Some(q) => {
                        return Err(bad(format!(
                            "{}: quantization {} is not supported (only uint8)",
                            e.name, q.dtype
                        )))
                    }
                    None if e.dtype == "float32" => {
                        let end = n.checked_mul(4).and_then(|b| b.checked_add(offset));
                        let raw = end.and_then(|end| buf.get(offset..end));
                        let raw =
                            raw.ok_or_else(|| bad(format!("{}: shards too short", e.name)))?;
                        let v: Vec<f32> = raw
                            .chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect();
                        (v, 4 * n)
                    }
                    None => {
                        return Err(bad(format!(
                            "{}: dtype {} is not supported",
                            e.name, e.dtype
                        )))
                    }
                };
                offset += bytes;
                let t = Tensor::from_slice(&values).reshape(&e.shape);
                if tensors.insert(e.name.clone(), t).is_some() {
                    return Err(bad(format!("{}: listed twice", e.name)));
                }
            }
            if offset != buf.len() {
                return Err(bad(format!(
                    "the weights use {offset} bytes but the shards hold {}",
                    buf.len()
                )));
            }
        }
        Ok(Weights {
            manifest: manifest.to_path_buf(),
            tensors,
        })
    }

    /// Names and TF shapes of the tensors not taken yet, sorted by name.
    pub fn shapes(&self) -> Vec<(String, Vec<i64>)> {
        self.tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.size()))
            .collect()
    }

    /// Removes and returns tensor `name`, which must have the TF shape `shape`.
    pub fn take(&mut self, name: &str, shape: &[i64]) -> Result<Tensor> {
        let t = self.tensors.remove(name).ok_or_else(|| Error::BadData {
            path: self.manifest.clone(),
            message: format!("missing weight {name} (expected shape {shape:?})"),
        })?;
        if t.size() != shape {
            return Err(Error::BadData {
                path: self.manifest.clone(),
                message: format!(
                    "weight {name} has shape {:?}, the architecture expects {shape:?}",
                    t.size()
                ),
            });
        }
        Ok(t)
    }

    /// Succeeds when every tensor has been taken; else names the unused ones.
    pub fn finish(self) -> Result<()> {
        if self.tensors.is_empty() {
            return Ok(());
        }
        let unused: BTreeSet<&String> = self.tensors.keys().collect();
        Err(Error::BadData {
            path: self.manifest,
            message: format!("weights the architecture does not use: {unused:?}"),
        })
    }

    /// All remaining tensors by name (TF layout), e.g. for
    /// [`super::recognition::FaceRecognitionNet::import`].
    pub fn into_map(self) -> HashMap<String, Tensor> {
        self.tensors.into_iter().collect()
    }
}

/// The manifest of model `name` (e.g. `tiny_face_detector_model`) in `model_dir`.
pub fn manifest_path(model_dir: &Path, name: &str) -> PathBuf {
    model_dir.join(format!("{name}-weights_manifest.json"))
}

/// TF conv filters `[kh, kw, in, out]` (also pointwise `[1, 1, in, out]`) to torch
/// `[out, in, kh, kw]` (§1.2).
pub fn conv_filters(tf: &Tensor) -> Tensor {
    tf.permute([3, 2, 0, 1]).contiguous()
}

/// TF depthwise filters `[kh, kw, C, 1]` to a torch grouped-conv weight `[C, 1, kh, kw]` (§1.2).
pub fn depthwise_filters(tf: &Tensor) -> Tensor {
    tf.permute([2, 3, 0, 1]).contiguous()
}
