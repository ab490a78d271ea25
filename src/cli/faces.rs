//! Face commands: `dvsp import face-api` (face-api's recognition net as a model directory)
//! and `dvsp align` (photos to aligned crops). The face audit is `dvsp audit --probe --target`.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use dvsp_core::face::import::import_face_api;
use dvsp_core::face::{photo, FaceApi};
use dvsp_core::spec::FaceCrop;

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    pub what: Import,
}

#[derive(Debug, clap::Subcommand)]
pub enum Import {
    /// face-api's face recognition ResNet (128-d, 150x150 dlib crops), its detector and
    /// landmark nets: a model directory `serve`, `eval` and `audit` accept; evaluated on
    /// face-samples.
    FaceApi {
        /// Where face-api's model files are (default: the cache `make setup` fills).
        #[arg(long)]
        from: Option<PathBuf>,
        /// The model directory to write.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn import(a: ImportArgs) -> anyhow::Result<()> {
    match a.what {
        Import::FaceApi { from, out } => {
            let from = from.unwrap_or_else(dvsp_core::face::model_dir);
            let card = import_face_api(&from, &out)?;
            println!("wrote model {} to {}", card.model_id, out.display());
        }
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct AlignArgs {
    /// Photos: a folder of images, or of identity folders (CASIA-WebFace / LFW layout).
    #[arg(long = "in")]
    pub input: PathBuf,
    /// Aligned crops as PNG, in the same layout.
    #[arg(long)]
    pub out: PathBuf,
    /// sphereface: 112x96 on SphereFace's five-point template (the paper's); dlib: face-api's
    /// 150x150 recognition crop.
    #[arg(long, value_enum, default_value = "sphereface")]
    pub crop: CropArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CropArg {
    Sphereface,
    Dlib,
}

const IMAGE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "bmp", "webp"];

/// Image files under `dir` (one level of identity folders at most), sorted.
fn images_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            for f in std::fs::read_dir(&p)? {
                out.push(f?.path());
            }
        } else {
            out.push(p);
        }
    }
    out.retain(|p| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
    });
    out.sort();
    Ok(out)
}

/// Saves a `[3, H, W]` [0, 1] crop as PNG.
pub fn save_png(t: &tch::Tensor, path: &Path) -> anyhow::Result<()> {
    let s = t.size();
    let px = Vec::<u8>::try_from(
        (t.clamp(0.0, 1.0) * 255.0)
            .round()
            .to_kind(tch::Kind::Uint8)
            .permute([1, 2, 0])
            .contiguous()
            .flatten(0, -1),
    )?;
    image::save_buffer(
        path,
        &px,
        s[2] as u32,
        s[1] as u32,
        image::ExtendedColorType::Rgb8,
    )
    .with_context(|| format!("writing {}", path.display()))
}

/// Aligns every photo; photos without a face, undecodable or unalignable ones are listed
/// with the reason (in `no_face.txt` too), and the command fails if none was aligned.
pub fn align(a: AlignArgs) -> anyhow::Result<()> {
    let how = match a.crop {
        CropArg::Sphereface => FaceCrop::Sphereface112x96,
        CropArg::Dlib => FaceCrop::Dlib150,
    };
    let faces = FaceApi::load(&dvsp_core::face::model_dir())
        .context("loading face-api's detector (run `make setup`)")?;
    let files = images_under(&a.input)?;
    anyhow::ensure!(!files.is_empty(), "no images in {}", a.input.display());
    let pb = dvsp_core::progress::progress_bar(files.len() as u64, "align");
    let (mut done, mut missed) = (0usize, Vec::new());
    let start = Instant::now();
    for f in &files {
        let rel = f.strip_prefix(&a.input).unwrap_or(f);
        let out = a.out.join(rel).with_extension("png");
        let found =
            dvsp_core::face::load_rgb(f).and_then(|img| photo::best_face(&faces, &img, how));
        match found {
            Ok(Some((_, crop))) => {
                if let Some(dir) = out.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                save_png(&crop, &out)?;
                done += 1;
            }
            Ok(None) => missed.push(format!("{}: no face", rel.display())),
            Err(e) => missed.push(format!("{}: {e}", rel.display())),
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    std::fs::create_dir_all(&a.out)?;
    dvsp_core::artifact::write_atomic(&a.out.join("no_face.txt"), missed.join("\n").as_bytes())?;
    println!(
        "aligned {done} of {} photos into {} ({:.0} ms per photo)",
        files.len(),
        a.out.display(),
        start.elapsed().as_secs_f64() * 1e3 / files.len() as f64
    );
    for m in &missed {
        println!("    skipped {m}");
    }
    anyhow::ensure!(done > 0, "no face found in any photo");
    Ok(())
}
