//! Backbones, heads and the model directory (weights + card) round trip.
use dvsp_core::artifact;
use dvsp_core::config::{Backbone, Method, TrainConfig};
use dvsp_core::data::{DataSpec, Dataset, Split};
use dvsp_core::model::{Net, NetSpec};
use dvsp_core::spec::InputSpec;
use tch::{nn, Device, Kind, Tensor};

fn spec(method: Method, backbone: Backbone, shape: [i64; 3]) -> NetSpec {
    NetSpec {
        method,
        backbone,
        input: InputSpec::for_shape(shape),
        feature_dim: 16,
        classes: 10,
        radius: 5.0,
    }
}

#[test]
fn sphere20_maps_112x96_faces_to_features() {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Net::new(
        &vs.root(),
        spec(Method::Sphereface, Backbone::Sphere20, [3, 112, 96]),
    );
    let x = Tensor::rand([2, 3, 112, 96], (Kind::Float, Device::Cpu));
    let f = tch::no_grad(|| net.features(&x));
    assert_eq!(f.size(), [2, 16]);
    // 20 convolutions (1+2, 1+4, 1+8, 1+2), each followed by a PReLU, then fc5.
    let convs = vs
        .variables()
        .keys()
        .filter(|k| k.contains("conv.weight"))
        .count();
    assert_eq!(convs, 20);
    let prelus = vs
        .variables()
        .keys()
        .filter(|k| k.contains("act.weight"))
        .count();
    assert_eq!(prelus, 20);
    assert_eq!(
        vs.variables()["backbone.fc5.weight"].size(),
        [512, 512 * 7 * 6]
    );
}

#[test]
fn dvsp_features_lie_on_the_radius_r_sphere_and_spread_is_positive() {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Net::new(&vs.root(), spec(Method::Dvsp, Backbone::Small, [1, 28, 28]));
    let x = Tensor::rand([5, 1, 28, 28], (Kind::Float, Device::Cpu));
    let f = tch::no_grad(|| net.features(&x));
    let n = f.norm_scalaropt_dim(2, [-1], false);
    assert!((n - 5.0).abs().max().double_value(&[]) < 1e-4);
    // The serving pass gives the same feature and the spread r(x) (eq. 14) from one trunk pass.
    let (fe, r) = tch::no_grad(|| net.embed(&x));
    assert!((&fe - &f).abs().max().double_value(&[]) < 1e-6);
    let r = r.unwrap();
    assert_eq!(r.size(), [5]);
    assert!(r.min().double_value(&[]) > 0.0);
    let (_, lambda) = tch::no_grad(|| net.posterior(&x)).unwrap();
    let want = lambda.mean_dim(-1, false, Kind::Float);
    assert!((&r - want).abs().max().double_value(&[]) < 1e-6);
    let center = Net::new(
        &nn::VarStore::new(Device::Cpu).root(),
        spec(Method::Center, Backbone::Small, [1, 28, 28]),
    );
    assert!(center.embed(&x).1.is_none());
}

fn tiny_split() -> Split {
    tch::manual_seed(0);
    let images =
        (Tensor::rand([64, 1, 28, 28], (Kind::Float, Device::Cpu)) * 255.0).to_kind(Kind::Uint8);
    let labels = Tensor::arange(64, (Kind::Int64, Device::Cpu)).remainder(10);
    let d = || Dataset {
        images: images.shallow_clone(),
        labels: labels.shallow_clone(),
        classes: 10,
    };
    Split {
        train: d(),
        test: d(),
        extra_test: None,
        description: "random".into(),
    }
}

#[test]
fn every_method_trains_saves_and_loads_back_identically() {
    for method in Method::ALL {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            method,
            epochs: 1,
            batch_size: 32,
            feature_dim: 8,
            ..TrainConfig::default()
        };
        let card = dvsp_core::train::train(
            &cfg,
            &DataSpec::Mnist,
            &tiny_split(),
            dir.path(),
            Device::Cpu,
        )
        .unwrap();
        assert_eq!(card.model_id.len(), 16);
        let m = artifact::load(dir.path(), Device::Cpu).unwrap();
        assert_eq!(m.card, card);
        let x = Tensor::rand([3, 1, 28, 28], (Kind::Float, Device::Cpu));
        let a = tch::no_grad(|| m.net.features(&x));
        let b = tch::no_grad(|| {
            artifact::load(dir.path(), Device::Cpu)
                .unwrap()
                .net
                .features(&x)
        });
        assert!(a.allclose(&b, 0.0, 0.0, false), "{method:?}");
        assert_eq!(a.size(), [3, 8]);
    }
}

#[test]
fn a_card_that_does_not_match_its_weights_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        method: Method::Dvib,
        epochs: 1,
        batch_size: 32,
        feature_dim: 8,
        ..TrainConfig::default()
    };
    let mut card = dvsp_core::train::train(
        &cfg,
        &DataSpec::Mnist,
        &tiny_split(),
        dir.path(),
        Device::Cpu,
    )
    .unwrap();
    // Architecture changed in the card: shapes no longer match.
    card.net.feature_dim = 12;
    artifact::write_card(dir.path(), &card).unwrap();
    let e = artifact::load(dir.path(), Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("(5 problems)") && e.contains("head.decoder.weight has shape [10, 8]"),
        "{e}"
    );
    // Method changed: tensor names differ.
    card.net.feature_dim = 8;
    card.net.method = Method::Sphereface;
    artifact::write_card(dir.path(), &card).unwrap();
    let e = artifact::load(dir.path(), Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("missing tensor") || e.contains("unexpected tensor"),
        "{e}"
    );
    // Weights replaced: the hash no longer matches the card.
    card.net.method = Method::Dvib;
    artifact::write_card(dir.path(), &card).unwrap();
    std::fs::write(dir.path().join(artifact::WEIGHTS), b"garbage").unwrap();
    assert!(artifact::load(dir.path(), Device::Cpu)
        .err()
        .unwrap()
        .to_string()
        .contains("does not match the weights"));
    std::fs::write(dir.path().join(artifact::CARD), b"{}").unwrap();
    assert!(artifact::load(dir.path(), Device::Cpu)
        .err()
        .unwrap()
        .to_string()
        .contains("not a dvsp model card"));
}

#[test]
fn bf16_inference_gives_f32_features_close_to_fp32() {
    use dvsp_core::model::Precision;
    let vs = nn::VarStore::new(Device::Cpu);
    let fp32 = Net::new(&vs.root(), spec(Method::Dvsp, Backbone::Small, [1, 28, 28]));
    let mut vs16 = nn::VarStore::new(Device::Cpu);
    let mut bf16 = Net::new(
        &vs16.root(),
        spec(Method::Dvsp, Backbone::Small, [1, 28, 28]),
    );
    vs16.copy(&vs).unwrap();
    bf16.set_precision(&mut vs16, Precision::Bf16);
    assert!(vs16
        .variables()
        .values()
        .all(|v| v.kind() == Kind::BFloat16));
    let x = Tensor::rand([8, 1, 28, 28], (Kind::Float, Device::Cpu));
    let (a, ra) = tch::no_grad(|| fp32.embed(&x));
    let (b, rb) = tch::no_grad(|| bf16.embed(&x));
    assert_eq!(
        (b.kind(), rb.as_ref().unwrap().kind()),
        (Kind::Float, Kind::Float)
    );
    // bf16 keeps 8 bits of mantissa: the features agree to cosine > 0.999, not exactly.
    let cos =
        (dvsp_core::model::unit(&a) * dvsp_core::model::unit(&b)).sum_dim_intlist(-1, false, None);
    assert!(cos.min().double_value(&[]) > 0.999, "{cos}");
    assert!((&a - &b).abs().max().double_value(&[]) > 0.0);
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let rel = ((&ra - &rb).abs() / &ra).max().double_value(&[]);
    assert!(rel < 0.02, "spread differs by {rel}");
}
