//! Data sets: the MNIST family from IDX files, and image folders (one folder per identity,
//! the CASIA-WebFace / LFW layout). Images stay as `u8` tensors `[N, C, H, W]` until a batch
//! is taken; [`to_input`] maps them to the model's pixel range [0, 1].
pub mod faces;
pub mod folder;
pub mod idx;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// A labelled image set.
#[derive(Debug)]
pub struct Dataset {
    /// `[N, C, H, W]`, `u8`.
    pub images: Tensor,
    /// `[N]`, `i64` identity labels in `0..classes`.
    pub labels: Tensor,
    pub classes: usize,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `[C, H, W]` of one image.
    pub fn shape(&self) -> [i64; 3] {
        let s = self.images.size();
        [s[1], s[2], s[3]]
    }

    /// The first `n` items (all when `n` exceeds the size).
    pub fn head(&self, n: usize) -> Dataset {
        let n = n.min(self.len()) as i64;
        Dataset {
            images: self.images.narrow(0, 0, n),
            labels: self.labels.narrow(0, 0, n),
            classes: self.classes,
        }
    }
}

/// Train and test sets of one data source, with the split written down.
#[derive(Debug)]
pub struct Split {
    pub train: Dataset,
    pub test: Dataset,
    /// A second test set, e.g. MNIST's official 10,000-image test file.
    pub extra_test: Option<(String, Dataset)>,
    /// How the split was made, for the model card.
    pub description: String,
}

/// Which data to load: `mnist`, `fashion-mnist`, `face-samples` or `folder:PATH`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum DataSpec {
    Mnist,
    FashionMnist,
    /// The labelled face photos `make setup` fetches (`crate::face::samples`).
    FaceSamples,
    Folder(PathBuf),
}

impl std::str::FromStr for DataSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mnist" => Ok(DataSpec::Mnist),
            "fashion-mnist" => Ok(DataSpec::FashionMnist),
            "face-samples" => Ok(DataSpec::FaceSamples),
            _ => match s.strip_prefix("folder:") {
                Some(p) if !p.is_empty() => Ok(DataSpec::Folder(PathBuf::from(p))),
                _ => Err(Error::Invalid(format!(
                    "unknown data set {s:?}: use mnist, fashion-mnist, face-samples or folder:PATH"
                ))),
            },
        }
    }
}

impl std::fmt::Display for DataSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSpec::Mnist => write!(f, "mnist"),
            DataSpec::FashionMnist => write!(f, "fashion-mnist"),
            DataSpec::FaceSamples => write!(f, "face-samples"),
            DataSpec::Folder(p) => write!(f, "folder:{}", p.display()),
        }
    }
}

impl From<DataSpec> for String {
    fn from(d: DataSpec) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for DataSpec {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

/// Where `make setup` puts the data: `$DVSP_DATA`, else `~/.cache/dvsp/data`.
pub fn default_root() -> PathBuf {
    if let Some(d) = std::env::var_os("DVSP_DATA") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/dvsp/data")
}

/// Number of training images in the paper's MNIST split: the first 50,000 of the 60,000
/// training images train, the remaining 10,000 test (section 4.2).
pub const MNIST_TRAIN: usize = 50_000;

impl DataSpec {
    /// Loads the split. MNIST-family: the paper's 50,000 / 10,000 split of the training file,
    /// with the official test file as `extra_test`. Folders: identities sorted by name, the
    /// last fifth of identities held out as the test set (disjoint identities, as the paper's
    /// CASIA/LFW protocol), images resized to `size` (height, width).
    pub fn load(&self, root: &Path, size: Option<(u32, u32)>) -> Result<Split> {
        match self {
            DataSpec::Mnist | DataSpec::FashionMnist => {
                let dir = root.join(self.to_string());
                let train = load_idx_pair(&dir, "train")?;
                let official = load_idx_pair(&dir, "t10k")?;
                if train.len() != 60_000 {
                    return Err(Error::BadData {
                        path: dir,
                        message: format!("expected 60000 training images, found {}", train.len()),
                    });
                }
                let test = Dataset {
                    images: train.images.narrow(0, MNIST_TRAIN as i64, 10_000),
                    labels: train.labels.narrow(0, MNIST_TRAIN as i64, 10_000),
                    classes: 10,
                };
                Ok(Split {
                    train: train.head(MNIST_TRAIN),
                    test,
                    extra_test: Some(("t10k".into(), official)),
                    description: "train: training file images 0..50000; test: training file images 50000..60000 (paper section 4.2); extra test: official t10k file".into(),
                })
            }
            DataSpec::FaceSamples => {
                let (h, w) = size.unwrap_or((150, 150));
                faces::load(&crate::face::faces_root(), h, w)
            }
            DataSpec::Folder(path) => {
                let (h, w) = size.unwrap_or((112, 96));
                folder::load_split(path, h, w)
            }
        }
    }
}

/// Reads `{prefix}-images-idx3-ubyte(.gz)` and `{prefix}-labels-idx1-ubyte(.gz)` from `dir`.
pub fn load_idx_pair(dir: &Path, prefix: &str) -> Result<Dataset> {
    let find = |stem: String| -> Result<PathBuf> {
        let gz = dir.join(format!("{stem}.gz"));
        let plain = dir.join(&stem);
        if gz.exists() {
            Ok(gz)
        } else if plain.exists() {
            Ok(plain)
        } else {
            Err(Error::BadData {
                path: dir.to_path_buf(),
                message: format!("{stem}(.gz) not found; run `make setup` or pass --data-dir"),
            })
        }
    };
    let ipath = find(format!("{prefix}-images-idx3-ubyte"))?;
    let lpath = find(format!("{prefix}-labels-idx1-ubyte"))?;
    let images = idx::read(&ipath)?;
    let labels = idx::read(&lpath)?;
    if images.dims.len() != 3 {
        return Err(Error::BadData {
            path: ipath,
            message: format!("images must have 3 dimensions, found {:?}", images.dims),
        });
    }
    if labels.dims.len() != 1 {
        return Err(Error::BadData {
            path: lpath,
            message: format!("labels must have 1 dimension, found {:?}", labels.dims),
        });
    }
    if labels.dims[0] != images.dims[0] {
        return Err(Error::BadData {
            path: lpath,
            message: format!("{} labels for {} images", labels.dims[0], images.dims[0]),
        });
    }
    if let Some(bad) = labels.data.iter().find(|&&l| l > 9) {
        return Err(Error::BadData {
            path: lpath,
            message: format!("label {bad} outside 0..=9"),
        });
    }
    let (n, h, w) = (
        images.dims[0] as i64,
        images.dims[1] as i64,
        images.dims[2] as i64,
    );
    Ok(Dataset {
        images: Tensor::from_slice(&images.data).reshape([n, 1, h, w]),
        labels: Tensor::from_slice(&labels.data).to_kind(Kind::Int64),
        classes: 10,
    })
}

/// `u8` images `[N, C, H, W]` to the model's input range [0, 1] as `f32` on `device`.
pub fn to_input(images: &Tensor, device: tch::Device) -> Tensor {
    images.to_device(device).to_kind(Kind::Float) / 255.0
}

/// Where the data comes from (shared by the subcommands that read data).
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// Data set: mnist, fashion-mnist or folder:PATH (one sub-folder per identity).
    #[arg(long)]
    pub data: Option<DataSpec>,
    /// Folder holding the data sets (default: $DVSP_DATA or ~/.cache/dvsp/data, filled by `make setup`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl DataArgs {
    pub fn root(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_root)
    }
}
