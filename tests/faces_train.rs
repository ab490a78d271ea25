//! The face training path on a generated image-folder data set (CASIA/LFW layout): sphere20
//! learns (its loss falls), `dvsp_core::train` runs on the folder, random mirroring is a mirror,
//! and LFW's pairs.txt protocol evaluates the result.
use dvsp_core::config::{Backbone, Method, TrainConfig};
use dvsp_core::data::DataSpec;
use dvsp_core::model::{Net, NetSpec};
use dvsp_core::spec::InputSpec;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// `ids` identities of `per` 48x56 RGB images: each identity a colour and stripe period,
/// each image shifted and noisy.
fn faces(root: &std::path::Path, ids: usize, per: usize) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..ids {
        let name = format!("Person_{i}");
        std::fs::create_dir_all(root.join(&name)).unwrap();
        for j in 1..=per {
            let shift = rng.random_range(0..4u32);
            let img = image::RgbImage::from_fn(48, 56, |x, y| {
                let stripe = ((y + shift) / (2 + i as u32)).is_multiple_of(2);
                let base = [(i * 60) as u8, 255 - (i * 50) as u8, (x * 5) as u8];
                let n: u8 = rng.random_range(0..40);
                image::Rgb(base.map(|c| if stripe { c.saturating_add(n) } else { n }))
            });
            img.save(root.join(&name).join(format!("{name}_{j:04}.png")))
                .unwrap();
        }
    }
}

#[test]
fn random_mirror_flips_some_images_left_right_and_keeps_the_rest() {
    tch::manual_seed(1);
    let x = Tensor::rand([64, 3, 4, 5], (Kind::Float, Device::Cpu));
    let y = dvsp_core::train::random_mirror(&x);
    let mut flipped = 0;
    for i in 0..64 {
        let (a, b) = (x.get(i), y.get(i));
        if b.equal(&a.flip([2])) {
            flipped += 1;
        } else {
            assert!(b.equal(&a), "image {i} is neither itself nor its mirror");
        }
    }
    assert!((16..=48).contains(&flipped), "{flipped} of 64 mirrored");
}

#[test]
fn sphere20_learns_on_a_face_folder_and_lfw_protocol_evaluates_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("faces");
    faces(&root, 5, 6);
    let split = DataSpec::Folder(root.clone())
        .load(std::path::Path::new("/"), Some((112, 96)))
        .unwrap();
    assert_eq!(split.train.shape(), [3, 112, 96]);

    // A few Adam steps on one batch: the loss falls.
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let spec = NetSpec {
        method: Method::Center,
        backbone: Backbone::Sphere20,
        input: InputSpec::for_shape([3, 112, 96]),
        feature_dim: 16,
        classes: split.train.classes as i64,
        radius: 1.0,
    };
    let mut net = Net::new(&vs.root(), spec);
    let mut opt = nn::Adam::default().build(&vs, 1e-4).unwrap();
    let cfg = TrainConfig::default();
    let x = dvsp_core::data::to_input(&split.train.images.narrow(0, 0, 16), Device::Cpu);
    let y = split.train.labels.narrow(0, 0, 16);
    let mut losses = Vec::new();
    for it in 0..6 {
        let out = net.loss(&x, &y, &cfg, it).unwrap();
        opt.backward_step(&out.loss);
        net.after_step(&out, &y, &cfg);
        losses.push(out.loss.double_value(&[]));
    }
    assert!(
        losses[5] < 0.8 * losses[0],
        "sphere20's loss did not fall: {losses:?}"
    );

    // The whole training job on the folder (dvsp, default backbone for 3x112x96 = sphere20).
    let model = dir.path().join("model");
    let cfg = TrainConfig {
        method: Method::Dvsp,
        epochs: 1,
        batch_size: 8,
        feature_dim: 16,
        align_faces: true,
        ..TrainConfig::default()
    };
    let card = dvsp_core::train::train(
        &cfg,
        &DataSpec::Folder(root.clone()),
        &split,
        &model,
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(card.net.backbone, Backbone::Sphere20);
    // --align-faces: the served model aligns probe photos, with its own detector files.
    assert_eq!(
        card.net.input.face,
        Some(dvsp_core::spec::FaceCrop::Sphereface112x96)
    );
    assert!(model
        .join("face-api/tiny_face_detector_model-weights_manifest.json")
        .exists());
    assert!(card.training.final_loss.is_finite());

    // LFW protocol over two folds of the folder.
    let pairs = model.join("pairs.txt");
    std::fs::write(
        &pairs,
        "2 2\nPerson_0 1 2\nPerson_1 1 3\nPerson_0 1 Person_1 1\nPerson_2 2 Person_3 2\n\
         Person_2 1 4\nPerson_4 2 5\nPerson_3 1 Person_4 1\nPerson_0 3 Person_2 3\n",
    )
    .unwrap();
    let r = dvsp_core::eval::evaluate_lfw(&model, &root, &pairs).unwrap();
    assert_eq!((r.pairs, r.folds.len()), (8, 2));
    // Four pairs per fold: accuracies are whole quarters.
    for f in &r.folds {
        let quarters = f.accuracy * 4.0;
        assert!((quarters - quarters.round()).abs() < 1e-12, "{f:?}");
    }
    let written: dvsp_core::metrics::lfw::LfwReport =
        serde_json::from_slice(&std::fs::read(model.join("lfw.json")).unwrap()).unwrap();
    assert_eq!(written, r);
    // A pairs.txt naming a missing image is an error, not a panic.
    std::fs::write(
        &pairs,
        "2 1\nNobody 1 2\nPerson_0 1 Person_1 1\nPerson_2 1 2\nPerson_3 1 Person_4 1\n",
    )
    .unwrap();
    let e = dvsp_core::eval::evaluate_lfw(&model, &root, &pairs).unwrap_err();
    assert!(format!("{e:#}").contains("Nobody"), "{e:#}");
}
