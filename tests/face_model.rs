//! face-api's recognition net imported as a dvsp model, end to end on real photos: the model
//! directory loads like a trained one, the service takes ordinary photos (it finds and crops
//! the face), `dvsp align` lists photos without a face, and the pair-mode audit crosses the
//! threshold with the perturbation it reports.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dvsp_core::config::ThresholdAt;
use dvsp_custody::store::Store;
use dvsp_server::auth;

fn photo(name: &str) -> PathBuf {
    dvsp_core::face::faces_root()
        .join("face_recognition")
        .join(name)
}

/// `dvsp import face-api` once per test run.
fn model() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("faceapi-model");
        dvsp_core::face::import::import_face_api(&dvsp_core::face::model_dir(), &dir).unwrap();
        dir
    })
    .clone()
}

#[test]
fn imported_model_loads_like_a_trained_one_and_separates_obama_from_biden() {
    let dir = model();
    let m = dvsp_core::artifact::load(&dir, tch::Device::Cpu).unwrap();
    assert_eq!(m.card.net.method.name(), "pretrained");
    assert_eq!(m.card.net.input.shape(), [3, 150, 150]);
    // Evaluated on face-samples at import: the card has thresholds.
    let t = ThresholdAt::Eer.from_card(&m.card).unwrap();
    assert!(t > 0.0 && t < 0.5, "{t}");
    let faces = dvsp_core::face::photo::load_for(&dir).unwrap();
    let how = m.card.net.input.face.unwrap();
    let x = tch::Tensor::stack(
        &["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"]
            .map(|f| dvsp_core::face::photo::crop_file(&faces, &photo(f), how).unwrap()),
        0,
    );
    let f = tch::no_grad(|| dvsp_core::model::unit(&m.net.features(&x)));
    let d = |i: i64, j: i64| 1.0 - f.get(i).dot(&f.get(j)).double_value(&[]);
    for (i, j) in [(0, 1), (0, 2), (1, 2)] {
        assert!(d(i, j) < t, "obama {i}-{j}: {} >= {t}", d(i, j));
    }
    for i in 0..3 {
        assert!(d(i, 3) > t, "obama {i}-biden: {} <= {t}", d(i, 3));
    }
    // A saved model's weights are the imported ones: the same features after reloading.
    let again = dvsp_core::artifact::load(&dir, tch::Device::Cpu).unwrap();
    let g = tch::no_grad(|| dvsp_core::model::unit(&again.net.features(&x)));
    assert!(f.allclose(&g, 0.0, 0.0, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_takes_ordinary_photos_for_a_face_model() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("f.db").display());
    let key = {
        let store = Store::connect(&db).await.unwrap();
        let k = auth::generate();
        let full = dvsp_server::auth::ScorePolicy::Full;
        store
            .insert_key(&k.row(&[dvsp_server::auth::Role::Admin], None, full))
            .await
            .unwrap();
        k.key
    };
    let m = model();
    let keys = dir.path().join("f.keys");
    std::fs::write(
        &keys,
        dvsp_custody::seal::Keyring::new_key_line("f").unwrap(),
    )
    .unwrap();
    let args = dvsp_server::config::ServeArgs::from_argv([
        "serve",
        "--model",
        m.to_str().unwrap(),
        "--db",
        &db,
        "--template-keys",
        keys.to_str().unwrap(),
        "--fmr",
        "1e-2",
    ])
    .unwrap();
    let state = args.state().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dvsp_server::serve(listener, state, async {
        let _ = rx.await;
    }));
    let c = reqwest::Client::new();
    let post = |path: &str, file: &Path| {
        c.post(format!("{base}{path}"))
            .bearer_auth(&key)
            .header("content-type", "application/octet-stream")
            .body(std::fs::read(file).unwrap())
    };
    let r = c
        .post(format!("{base}/v1/subjects"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"id": "obama"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = post("/v1/subjects/obama/templates", &photo("obama.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // The reply says where the face was (the console draws it over the photo): a confident
    // box inside the photo, covering a fair part of a portrait.
    let enrolled: serde_json::Value = r.json().await.unwrap();
    let (w, h) = image::image_dimensions(photo("obama.jpg")).unwrap();
    let face = &enrolled["face"];
    let f = |k: &str| {
        face[k]
            .as_f64()
            .unwrap_or_else(|| panic!("face.{k}: {enrolled}"))
    };
    assert!(f("x") >= 0.0 && f("y") >= 0.0, "{face}");
    assert!(f("x") + f("width") <= w as f64 + 1.0, "{face} in {w}x{h}");
    assert!(f("y") + f("height") <= h as f64 + 1.0, "{face} in {w}x{h}");
    assert!(
        f("width") * f("height") > 0.02 * (w * h) as f64,
        "{face} in {w}x{h}"
    );
    assert!(f("score") > 0.5 && f("score") <= 1.0, "{face}");
    let verify = async |name: &str| -> serde_json::Value {
        let r = post("/v1/subjects/obama/verify", &photo(name))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    };
    for name in ["obama2.jpg", "obama3.jpg"] {
        let v = verify(name).await;
        assert_eq!(v["match"], true, "{name}: {v}");
        assert!(v["face"]["width"].as_f64().unwrap() > 0.0, "{name}: {v}");
    }
    let v = verify("biden.jpg").await;
    assert_eq!(v["match"], false, "{v}");
    // A photo without a face: 422 with a JSON reason.
    let blank = dir.path().join("blank.png");
    image::RgbImage::from_pixel(200, 160, image::Rgb([120, 130, 140]))
        .save(&blank)
        .unwrap();
    let r = post("/v1/subjects/obama/verify", &blank)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("no face"),
        "{body}"
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

fn dvsp_cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dvsp"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn align_writes_112x96_crops_and_lists_photos_without_a_face() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(input.join("Barack_Obama")).unwrap();
    std::fs::copy(
        photo("obama.jpg"),
        input.join("Barack_Obama/Barack_Obama_0001.jpg"),
    )
    .unwrap();
    image::RgbImage::from_pixel(120, 90, image::Rgb([20, 200, 90]))
        .save(input.join("Barack_Obama/Barack_Obama_0002.png"))
        .unwrap();
    let out = dir.path().join("out");
    let (ok, text) = dvsp_cli(&[
        "align",
        "--in",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("aligned 1 of 2"), "{text}");
    let crop = image::open(out.join("Barack_Obama/Barack_Obama_0001.png")).unwrap();
    assert_eq!((crop.width(), crop.height()), (96, 112));
    let missed = std::fs::read_to_string(out.join("no_face.txt")).unwrap();
    assert_eq!(missed.trim(), "Barack_Obama/Barack_Obama_0002.png: no face");
    // Nothing to align: a clear error, non-zero exit.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (ok, text) = dvsp_cli(&[
        "align",
        "--in",
        empty.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && text.contains("no images"), "{text}");
}

#[test]
fn pair_audit_crosses_the_threshold_with_the_perturbation_it_reports() {
    let dir = model();
    let args = dvsp_core::audit::outputs::AuditArgs::from_argv([
        "audit",
        "--cw-steps",
        "30",
        "--cw-search",
        "3",
        "--ddn-steps",
        "30",
        "--pgd-check-steps",
        "5",
        "--bisect",
        "8",
        "--threshold-at",
        "fmr=1e-2",
    ])
    .unwrap();
    let r = dvsp_core::audit::outputs::audit_pair(
        &dir,
        &photo("biden.jpg"),
        &photo("obama.jpg"),
        0,
        &args,
    )
    .unwrap();
    assert_eq!(r.len(), 2);
    for p in &r {
        assert!(p.distance_before > p.threshold, "{p:?}");
        assert!(p.l2 > 0.0 && p.distance_after <= p.threshold, "{p:?}");
    }
    assert!(dir.join("attack_pair.png").exists());
}
