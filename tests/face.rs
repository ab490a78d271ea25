//! The face-api port (`dvsp_core::face`) against face-api 1.7.15 itself, with its real weights and
//! photos from `scripts/setup.sh` (`$DVSP_CACHE/faces`).
//!
//! Golden values in `tests/fixtures/face/reference.json` come from running the JS package
//! (tfjs 4.22 CPU backend) on jpeg-js decodes of face_recognition 1.3.0's test images; the
//! two `*.f32` files are the exact landmark and recognition net inputs of obama.jpg's face
//! (`[H, W, 3]` little-endian f32, 0..255 RGB). Our JPEG decoder (zune-jpeg) differs from
//! jpeg-js by a few grey levels, so the end-to-end checks from JPEGs are loose and the
//! net-level checks from the fixtures strict.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dvsp_core::face::align::{self, SPHEREFACE_112X96};
use dvsp_core::face::landmarks::{eye_centres, five_points};
use dvsp_core::face::recognition::{self, DIM, INPUT};
use dvsp_core::face::resize::{pad_to_square, resize_bilinear};
use dvsp_core::face::weights::{manifest_path, Weights};
use dvsp_core::face::{
    load_rgb, model_dir, to_unit, Face, FaceApi, FaceLandmark68Net, FaceRecognitionNet,
    TinyFaceDetector,
};
use serde_json::Value;
use tch::{nn, Device, Kind, Tensor};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/face")
}

fn reference() -> &'static Value {
    static REF: OnceLock<Value> = OnceLock::new();
    REF.get_or_init(|| {
        let text = std::fs::read_to_string(fixtures().join("reference.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    })
}

/// A `[1, 3, H, W]` tensor from a fixture of `[H, W, 3]` little-endian f32.
fn fixture_image(name: &str, side: i64) -> Tensor {
    let bytes = std::fs::read(fixtures().join(name)).unwrap();
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Tensor::from_slice(&v)
        .view([1, side, side, 3])
        .permute([0, 3, 1, 2])
        .contiguous()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn vec_of(t: &Tensor) -> Vec<f32> {
    Vec::try_from(t.to_kind(Kind::Float).contiguous().view(-1)).unwrap()
}

fn setup_hint() -> PathBuf {
    let dir = model_dir();
    assert!(
        manifest_path(&dir, "tiny_face_detector_model").exists(),
        "face models missing in {}: run scripts/setup.sh",
        dir.display()
    );
    dir
}

/// One photo of face_recognition's test images through the whole pipeline.
struct Portrait {
    file: String,
    width: i64,
    height: i64,
    faces: Vec<(Face, Vec<f32>)>,
}

/// The seven Obama/Biden photos of the fixture, decoded from the setup cache, with faces and
/// descriptors (computed once for all tests).
fn portraits() -> &'static [Portrait] {
    static P: OnceLock<Vec<Portrait>> = OnceLock::new();
    P.get_or_init(|| {
        let dir = setup_hint();
        let api = FaceApi::load(&dir).unwrap();
        let (_vs, rec) = FaceRecognitionNet::load(&dir, Device::Cpu).unwrap();
        let photos = dvsp_core::face::faces_root().join("face_recognition");
        reference()["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|im| {
                let file = im["file"].as_str().unwrap().to_string();
                let img = load_rgb(&photos.join(&file)).unwrap();
                let faces = api
                    .faces(&img)
                    .unwrap()
                    .into_iter()
                    .map(|f| {
                        let crop = align::descriptor_crop(&img, &f).unwrap();
                        assert_eq!(crop.size(), [3, INPUT, INPUT]);
                        let d = tch::no_grad(|| rec.forward(&to_unit(&crop).unsqueeze(0)));
                        assert_eq!(d.size(), [1, DIM]);
                        (f, vec_of(&d))
                    })
                    .collect();
                Portrait {
                    file,
                    width: img.size()[2],
                    height: img.size()[1],
                    faces,
                }
            })
            .collect()
    })
}

fn reference_image(file: &str) -> &'static Value {
    reference()["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|im| im["file"] == file)
        .unwrap()
}

#[test]
fn weight_files_match_the_architectures() {
    let dir = setup_hint();
    // Each constructor takes every tensor by name with its TF shape and refuses leftovers.
    let det = Weights::load(&manifest_path(&dir, "tiny_face_detector_model")).unwrap();
    assert_eq!(det.shapes().len(), 2 + 5 * 3 + 2);
    assert!(det
        .shapes()
        .contains(&("conv5/pointwise_filter".into(), vec![1, 1, 256, 512])));
    TinyFaceDetector::from_weights(det).unwrap();
    let lm = Weights::load(&manifest_path(&dir, "face_landmark_68_model")).unwrap();
    assert_eq!(lm.shapes().len(), 2 + 3 * 3 + 3 * 4 * 3 + 2);
    FaceLandmark68Net::from_weights(lm).unwrap();

    // Recognition: 29 conv layers x (filters, bias, scale weights, scale biases) + fc, each
    // matched to a var-store variable of the converted shape.
    let rec = Weights::load(&manifest_path(&dir, "face_recognition_model")).unwrap();
    let shapes: HashMap<String, Vec<i64>> = rec.shapes().into_iter().collect();
    assert_eq!(shapes.len(), 29 * 4 + 1);
    assert_eq!(shapes["conv32_down/conv/filters"], [7, 7, 3, 32]);
    assert_eq!(shapes["fc"], [256, 128]);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let _net = FaceRecognitionNet::new(&vs.root());
    FaceRecognitionNet::import(&mut vs, rec.into_map()).unwrap();
    let vars = vs.variables();
    assert_eq!(vars.len(), 29 * 4 + 1);
    assert_eq!(vars["conv32_down.conv.weight"].size(), [32, 3, 7, 7]);
    assert_eq!(vars["conv256_down_out.conv2.scale.bias"].size(), [256]);
    assert_eq!(vars["fc.weight"].size(), [128, 256]);

    // Weights of one net do not fit another.
    let lm = Weights::load(&manifest_path(&dir, "face_landmark_68_model")).unwrap();
    let err = TinyFaceDetector::from_weights(lm).unwrap_err().to_string();
    assert!(err.contains("missing weight conv0/filters"), "{err}");
}

#[test]
fn corrupted_weight_files_are_refused_by_name() {
    let dir = setup_hint();
    let tmp = tempfile::tempdir().unwrap();
    let name = "tiny_face_detector_model";
    let manifest = std::fs::read_to_string(manifest_path(&dir, name)).unwrap();
    let mut json: Value = serde_json::from_str(&manifest).unwrap();
    // Same byte count, wrong shape: the file still decodes, the architecture refuses it.
    for w in json[0]["weights"].as_array_mut().unwrap() {
        if w["name"] == "conv1/bias" {
            w["shape"] = serde_json::json!([4, 8]);
        }
    }
    std::fs::write(manifest_path(tmp.path(), name), json.to_string()).unwrap();
    let bin = format!("{name}.bin");
    std::fs::copy(dir.join(&bin), tmp.path().join(&bin)).unwrap();
    let err = TinyFaceDetector::load(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("conv1/bias") && err.contains("[4, 8]") && err.contains("[32]"),
        "{err}"
    );

    // A truncated shard.
    let bytes = std::fs::read(dir.join(&bin)).unwrap();
    std::fs::write(tmp.path().join(&bin), &bytes[..bytes.len() - 10]).unwrap();
    let err = TinyFaceDetector::load(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("shards too short"), "{err}");

    // Recognition import: a wrong shape, a foreign name, a missing tensor.
    let rec = || {
        Weights::load(&manifest_path(&dir, "face_recognition_model"))
            .unwrap()
            .into_map()
    };
    let import = |w| {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let _net = FaceRecognitionNet::new(&vs.root());
        FaceRecognitionNet::import(&mut vs, w)
            .unwrap_err()
            .to_string()
    };
    let mut w = rec();
    w.insert(
        "conv64_2/conv1/conv/bias".into(),
        Tensor::zeros([32], (Kind::Float, Device::Cpu)),
    );
    let err = import(w);
    assert!(
        err.contains("conv64_2/conv1/conv/bias") && err.contains("[32]") && err.contains("[64]"),
        "{err}"
    );
    let mut w = rec();
    w.insert(
        "conv512_1/conv1/conv/bias".into(),
        Tensor::zeros([512], (Kind::Float, Device::Cpu)),
    );
    assert!(import(w).contains("conv512_1/conv1/conv/bias"));
    let mut w = rec();
    w.remove("fc");
    assert!(import(w).contains("fc.weight"));
}

#[test]
fn legacy_bilinear_resize_matches_tensorflow() {
    // Golden values from spec_check.py's resize_bilinear_legacy (numpy), which equals
    // tf.image.resize_bilinear(align_corners=False, half_pixel_centers=False):
    //   x = np.arange(9, dtype=np.float32).reshape(3, 3, 1)
    //   resize_bilinear_legacy(x, 2) -> [[0, 1.5], [4.5, 6]]
    //   resize_bilinear_legacy(x, 4) -> [[0, .75, 1.5, 2], [2.25, 3, 3.75, 4.25],
    //                                    [4.5, 5.25, 6, 6.5], [6, 6.75, 7.5, 8]]
    // (source index 0.75 * i, no half-pixel offset, the last column clamped to column 2).
    let x = Tensor::arange(9, (Kind::Float, Device::Cpu)).view([1, 3, 3]);
    let down = resize_bilinear(&x, 2, 2).unwrap();
    assert_eq!(vec_of(&down), [0.0, 1.5, 4.5, 6.0]);
    let up = resize_bilinear(&x, 4, 4).unwrap();
    assert_eq!(
        vec_of(&up),
        [0.0, 0.75, 1.5, 2.0, 2.25, 3.0, 3.75, 4.25, 4.5, 5.25, 6.0, 6.5, 6.0, 6.75, 7.5, 8.0]
    );
    // The same on a batch [B, C, H, W].
    let batch = resize_bilinear(&x.unsqueeze(0).repeat([2, 1, 1, 1]), 4, 4).unwrap();
    assert!(batch.get(1).equal(&up));
    // Padding: detector style at the bottom/right, crops centred.
    let r = Tensor::ones([3, 2, 5], (Kind::Float, Device::Cpu));
    let p = pad_to_square(&r, false).unwrap();
    assert_eq!(p.size(), [3, 5, 5]);
    assert_eq!(
        vec_of(&p.select(0, 0).sum_dim_intlist(1, false, Kind::Float)),
        [5.0, 5.0, 0.0, 0.0, 0.0]
    );
    let c = pad_to_square(&r, true).unwrap();
    assert_eq!(
        vec_of(&c.select(0, 0).sum_dim_intlist(1, false, Kind::Float)),
        [0.0, 5.0, 5.0, 0.0, 0.0]
    );
    assert!(resize_bilinear(&Tensor::zeros([0, 2], (Kind::Float, Device::Cpu)), 4, 4).is_err());
    // square() skips building the padded image but gives the same bits.
    tch::manual_seed(0);
    for (h, w, size) in [(7, 4, 5), (4, 9, 16), (13, 6, 3), (5, 5, 8), (6, 3, 6)] {
        let img = Tensor::rand([3, h, w], (Kind::Float, Device::Cpu)) * 255.0;
        for centered in [false, true] {
            let want =
                resize_bilinear(&pad_to_square(&img, centered).unwrap(), size, size).unwrap();
            let got = dvsp_core::face::resize::square(&img, size, centered).unwrap();
            assert!(got.equal(&want), "{h}x{w} -> {size}, centered {centered}");
        }
    }
}

#[test]
fn landmark_net_matches_face_api_on_its_own_input() {
    let net = FaceLandmark68Net::load(&setup_hint()).unwrap();
    let x = fixture_image("obama_lm_input_112.f32", 112);
    let mean = Tensor::from_slice(&[122.782f32, 117.001, 104.298]).view([1, 3, 1, 1]);
    let out = tch::no_grad(|| net.forward(&((x - mean) / 255.0)));
    let want = floats(&reference()["obama_landmark_input"]["raw_136"]);
    for (g, w) in vec_of(&out).iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{g} vs {w}");
    }
}

#[test]
fn descriptor_matches_face_api_on_its_own_input() {
    // The strict check of the recognition weight import: face-api's 150x150 input for
    // obama.jpg, through the var-store net, within 1e-4 (Euclidean) of face-api's descriptor.
    let (vs, net) = FaceRecognitionNet::load(&setup_hint(), Device::Cpu).unwrap();
    let x = fixture_image("obama_rec_input_150.f32", INPUT);
    let d = tch::no_grad(|| net.forward(&to_unit(&x)));
    let want = floats(&reference()["obama_recognition_input"]["descriptor"]);
    let dist = recognition::distance(&vec_of(&d), &want);
    assert!(dist < 1e-4, "distance to face-api's descriptor {dist}");
    // Raw, not unit-normalised; a batch gives the same rows.
    let norm = d.norm().double_value(&[]);
    assert!((1.3..1.6).contains(&norm), "norm {norm}");
    let batch = tch::no_grad(|| net.forward(&to_unit(&Tensor::cat(&[&x, &x], 0))));
    assert!(batch.get(1).allclose(&d.get(0), 1e-5, 1e-6, false));

    // The var store round-trips through safetensors (as the crate's model directories do).
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("face_recognition.safetensors");
    vs.save(&file).unwrap();
    let mut vs2 = nn::VarStore::new(Device::Cpu);
    let net2 = FaceRecognitionNet::new(&vs2.root());
    vs2.load(&file).unwrap();
    let d2 = tch::no_grad(|| net2.forward(&to_unit(&x)));
    assert!(d2.equal(&d));
}

#[test]
fn one_face_per_portrait_close_to_face_api() {
    for p in portraits() {
        let im = reference_image(&p.file);
        let rf = &im["faces"][0];
        assert_eq!(p.faces.len(), 1, "{}: {} faces", p.file, p.faces.len());
        let d = &p.faces[0].0.detection;
        let b = &rf["box"];
        let want = [&b["x"], &b["y"], &b["width"], &b["height"]].map(|v| v.as_f64().unwrap());
        let got = [d.x, d.y, d.width, d.height];
        let box_err = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0, f64::max);
        let score_err = (d.score - rf["score"].as_f64().unwrap()).abs();
        println!(
            "{}: box off by {box_err:.3} px, score by {score_err:.4}",
            p.file
        );
        assert!(
            box_err < 3.0,
            "{}: box {got:?} vs face-api {want:?}",
            p.file
        );
        assert!(
            score_err < 0.02,
            "{}: score {} vs {}",
            p.file,
            d.score,
            rf["score"]
        );
        // Whole faces lie inside the image; the partial faces are cut by the left edge.
        let inside = d.x >= 0.0
            && d.y >= 0.0
            && d.x + d.width <= p.width as f64
            && d.y + d.height <= p.height as f64;
        assert_eq!(
            inside,
            !p.file.contains("partial"),
            "{}: box {got:?}",
            p.file
        );
        let lm_err = p.faces[0]
            .0
            .landmarks
            .iter()
            .zip(rf["landmarks"].as_array().unwrap())
            .map(|(g, w)| {
                (g.0 - w[0].as_f64().unwrap())
                    .abs()
                    .max((g.1 - w[1].as_f64().unwrap()).abs())
            })
            .fold(0.0, f64::max);
        println!("{}: landmarks off by {lm_err:.3} px", p.file);
        // Up to 3.1 px (obama_partial_face) from the JPEG decoder alone.
        assert!(lm_err < 4.0, "{}: landmarks off by {lm_err} px", p.file);
    }
}

#[test]
fn png_photo_matches_face_api_exactly() {
    // 32bit.png decodes losslessly, so we see face-api's very pixels: the whole pipeline
    // (detector, landmarks, descriptor crop, descriptor) must agree to float rounding.
    let p = portraits().iter().find(|p| p.file == "32bit.png").unwrap();
    let rf = &reference_image("32bit.png")["faces"][0];
    let (face, desc) = &p.faces[0];
    let d = &face.detection;
    assert!((d.score - rf["score"].as_f64().unwrap()).abs() < 1e-5);
    let b = &rf["box"];
    for (g, w) in [d.x, d.y, d.width, d.height]
        .iter()
        .zip(["x", "y", "width", "height"])
    {
        assert!(
            (g - b[w].as_f64().unwrap()).abs() < 1e-2,
            "box {w}: {g} vs {}",
            b[w]
        );
    }
    for (g, w) in face
        .landmarks
        .iter()
        .zip(rf["landmarks"].as_array().unwrap())
    {
        assert!((g.0 - w[0].as_f64().unwrap()).abs() < 1e-2, "{g:?} vs {w}");
        assert!((g.1 - w[1].as_f64().unwrap()).abs() < 1e-2, "{g:?} vs {w}");
    }
    let db = align::descriptor_box(
        &face.landmarks,
        &d.crop_box(p.width, p.height),
        p.width,
        p.height,
    );
    let c = &rf["descriptor_crop"];
    assert_eq!(
        [db.x, db.y, db.width, db.height],
        [&c["x"], &c["y"], &c["width"], &c["height"]].map(|v| v.as_i64().unwrap())
    );
    let dist = recognition::distance(desc, &floats(&rf["descriptor"]));
    assert!(dist < 1e-4, "descriptor {dist} from face-api's");
}

#[test]
fn bad_inputs_are_errors() {
    let dir = setup_hint();
    let det = TinyFaceDetector::load(&dir).unwrap();
    let img = Tensor::zeros([3, 64, 48], (Kind::Float, Device::Cpu));
    assert!(det.detect(&img, 100, 0.5).is_err());
    assert!(det.detect(&img, 416, 1.5).is_err());
    assert!(det.detect(&img.select(0, 0), 416, 0.5).is_err());
    assert!(det.detect(&img.to_kind(Kind::Uint8), 416, 0.5).is_err());
    // A black image has no faces; a box outside the image has no landmarks.
    assert!(det.detect(&img, 128, 0.5).unwrap().is_empty());
    let lm = FaceLandmark68Net::load(&dir).unwrap();
    let outside = dvsp_core::face::Detection {
        x: 100.0,
        y: 10.0,
        width: 20.0,
        height: 20.0,
        score: 0.9,
    };
    assert!(lm.landmarks(&img, &outside).is_err());
    assert!(load_rgb(&fixtures().join("reference.json")).is_err());
}

#[test]
fn descriptor_box_is_face_apis() {
    // From face-api's own landmarks and landmark crop, the dlib-style box is exactly face-api's
    // (including obama_partial_face, where the landmark crop width caps it).
    for im in reference()["images"].as_array().unwrap() {
        let (w, h) = (
            im["width"].as_i64().unwrap(),
            im["height"].as_i64().unwrap(),
        );
        for f in im["faces"].as_array().unwrap() {
            let mut lm = [(0.0, 0.0); 68];
            for (p, v) in lm.iter_mut().zip(f["landmarks"].as_array().unwrap()) {
                *p = (v[0].as_f64().unwrap(), v[1].as_f64().unwrap());
            }
            let c = &f["landmark_crop"];
            let crop = dvsp_core::face::CropBox {
                x: c["x"].as_i64().unwrap(),
                y: c["y"].as_i64().unwrap(),
                width: c["width"].as_i64().unwrap(),
                height: c["height"].as_i64().unwrap(),
            };
            let b = align::descriptor_box(&lm, &crop, w, h);
            let d = &f["descriptor_crop"];
            let want = [&d["x"], &d["y"], &d["width"], &d["height"]].map(|v| v.as_i64().unwrap());
            assert_eq!([b.x, b.y, b.width, b.height], want, "{}", im["file"]);
        }
    }
}

#[test]
fn descriptors_tell_obama_from_biden() {
    let ps = portraits();
    let desc = |file: &str| {
        let p = ps.iter().find(|p| p.file == file).unwrap();
        (
            p.faces[0].1.clone(),
            floats(&reference_image(file)["faces"][0]["descriptor"]),
        )
    };
    let obamas = ["obama.jpg", "obama2.jpg", "obama3.jpg"];
    let biden = desc("biden.jpg");
    for (i, a) in obamas.iter().enumerate() {
        let da = desc(a);
        // Each descriptor is near face-api's own for the (differently decoded) photo.
        let own = recognition::distance(&da.0, &da.1);
        println!("{a}: {own:.4} from face-api's descriptor");
        assert!(own < 0.15, "{a}: {own}");
        let mut pairs: Vec<(String, Vec<f32>, Vec<f32>, bool)> = obamas[i + 1..]
            .iter()
            .map(|b| {
                let db = desc(b);
                (b.to_string(), db.0, db.1, true)
            })
            .collect();
        pairs.push(("biden.jpg".into(), biden.0.clone(), biden.1.clone(), false));
        for (b, ours, theirs, same) in pairs {
            let d = recognition::distance(&da.0, &ours);
            let want = recognition::distance(&da.1, &theirs);
            println!("{a} - {b}: {d:.4} (face-api {want:.4})");
            assert_eq!(d < recognition::THRESHOLD, same, "{a} - {b}: {d}");
            assert!((d - want).abs() < 0.15, "{a} - {b}: {d} vs face-api {want}");
        }
    }
}

#[test]
fn five_points_align_onto_the_sphereface_template() {
    for p in portraits() {
        if p.file.contains("partial") {
            continue; // face-api misplaces landmarks of faces cut by the image border
        }
        let lm = &p.faces[0].0.landmarks;
        let m = align::similarity(&five_points(lm), &SPHEREFACE_112X96).unwrap();
        let (l, r) = eye_centres(lm);
        for (got, want) in [(l, SPHEREFACE_112X96[0]), (r, SPHEREFACE_112X96[1])] {
            let e = align::apply(&m, got);
            let d = (e.0 - want.0).hypot(e.1 - want.1);
            println!("{}: eye lands {d:.2} px from the template", p.file);
            assert!(d <= 3.0, "{}: eye at {e:?}, template {want:?}", p.file);
        }
        let rms = (five_points(lm)
            .iter()
            .zip(&SPHEREFACE_112X96)
            .map(|(&s, &t)| {
                let e = align::apply(&m, s);
                (e.0 - t.0).powi(2) + (e.1 - t.1).powi(2)
            })
            .sum::<f64>()
            / 5.0)
            .sqrt();
        println!("{}: five-point RMS residual {rms:.2} px", p.file);
        // 1.9-3.9 px: the 68-point nose tip and mouth corners are not MTCNN's points.
        assert!(rms <= 5.0, "{}: residual {rms}", p.file);
    }
    // The warped crop of obama.jpg is a face-sized image, not black.
    let img = load_rgb(&dvsp_core::face::faces_root().join("face_recognition/obama.jpg")).unwrap();
    let lm = &portraits()[0].faces[0].0.landmarks;
    let m = align::similarity(&five_points(lm), &SPHEREFACE_112X96).unwrap();
    let crop = align::warp(&img, &m, 112, 96).unwrap();
    assert_eq!(crop.size(), [3, 112, 96]);
    let mean = crop.mean(Kind::Float).double_value(&[]);
    assert!((40.0..220.0).contains(&mean), "mean {mean}");
}

#[test]
fn similarity_recovers_a_known_transform() {
    let (s, theta, tx, ty) = (1.7_f64, 0.4_f64, -12.5, 30.25);
    let truth = [
        [s * theta.cos(), -s * theta.sin(), tx],
        [s * theta.sin(), s * theta.cos(), ty],
    ];
    let src = [
        (10.0, 20.0),
        (50.0, 22.0),
        (31.0, 40.0),
        (15.0, 61.0),
        (47.0, 60.0),
    ];
    let dst: Vec<(f64, f64)> = src.iter().map(|&p| align::apply(&truth, p)).collect();
    let m = align::similarity(&src, &dst).unwrap();
    for (row, want) in m.iter().zip(&truth) {
        for (a, b) in row.iter().zip(want) {
            assert!((a - b).abs() < 1e-9, "{m:?} vs {truth:?}");
        }
    }
    // A mirror image is not a similarity: no reflection is fitted, a residual remains.
    let mirrored: Vec<(f64, f64)> = src.iter().map(|&(x, y)| (-x, y)).collect();
    let m = align::similarity(&src, &mirrored).unwrap();
    let worst = src
        .iter()
        .zip(&mirrored)
        .map(|(&p, &q)| {
            let e = align::apply(&m, p);
            (e.0 - q.0).hypot(e.1 - q.1)
        })
        .fold(0.0, f64::max);
    assert!(worst > 5.0, "{m:?} fits a reflection");
    assert!(align::similarity(&src[..1], &dst[..1]).is_err());
    assert!(align::similarity(&[(1.0, 1.0); 3], &dst[..3]).is_err());
}

#[test]
fn warp_by_a_translation_moves_pixels() {
    let img = Tensor::arange(12, (Kind::Float, Device::Cpu)).view([1, 3, 4]);
    // Output (u, v) samples input (u + 1, v - 1): shifted left by one, down by one.
    let m = [[1.0, 0.0, -1.0], [0.0, 1.0, 1.0]];
    let out = align::warp(&img, &m, 3, 4).unwrap();
    assert_eq!(
        vec_of(&out),
        [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 0.0, 5.0, 6.0, 7.0, 0.0]
    );
    assert!(align::warp(&img, &[[0.0; 3]; 2], 3, 4).is_err());
}
