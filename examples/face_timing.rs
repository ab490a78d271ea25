//! Per-photo time of the face pipeline on this machine: decode, detection alone, detection +
//! landmarks (`FaceApi::faces`), and descriptor crop + recognition net for every face, over the photos
//! `scripts/setup.sh` puts in `$DVSP_CACHE/faces`.
//!
//! `cargo run --example face_timing [threads]` (default: libtorch's choice).
use std::time::{Duration, Instant};

use dvsp::face::{align, faces_root, load_rgb, model_dir, to_unit, FaceApi, FaceRecognitionNet};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    if let Some(n) = std::env::args().nth(1) {
        tch::set_num_threads(n.parse()?);
    }
    let api = FaceApi::load(&model_dir())?;
    let (_vs, rec) = FaceRecognitionNet::load(&model_dir(), tch::Device::Cpu)?;
    let mut photos = Vec::new();
    for sub in ["face_recognition", "face-api/samples"] {
        for e in std::fs::read_dir(faces_root().join(sub))? {
            photos.push(e?.path());
        }
    }
    photos.sort();
    println!("{} threads", tch::get_num_threads());
    println!(
        "photo                     size       faces  decode  detect  detect+lm  descriptors  total (ms)"
    );
    for path in photos {
        let t = Instant::now();
        let img = load_rgb(&path)?;
        let decode = t.elapsed();
        // Best of three runs of the nets (the first warms up libtorch).
        let (mut detect, mut faces_t, mut describe, mut n) =
            (Duration::MAX, Duration::MAX, Duration::MAX, 0);
        for _ in 0..3 {
            let t = Instant::now();
            api.detector
                .detect(&img, FaceApi::INPUT_SIZE, FaceApi::SCORE_THRESHOLD)?;
            detect = detect.min(t.elapsed());
            let t = Instant::now();
            let faces = api.faces(&img)?;
            let d = t.elapsed();
            let t = Instant::now();
            for f in &faces {
                let crop = align::descriptor_crop(&img, f)?;
                let _ = tch::no_grad(|| rec.forward(&to_unit(&crop).unsqueeze(0)));
            }
            faces_t = faces_t.min(d);
            describe = describe.min(t.elapsed());
            n = faces.len();
        }
        println!(
            "{:24}  {:>9}  {n:5}  {:6.1}  {:6.1}  {:9.1}  {:11.1}  {:10.1}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            format!("{}x{}", img.size()[2], img.size()[1]),
            ms(decode),
            ms(detect),
            ms(faces_t),
            ms(describe),
            ms(decode + faces_t + describe)
        );
    }
    Ok(())
}
