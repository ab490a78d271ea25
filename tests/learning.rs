//! A real learning test: two epochs on a small MNIST subset bring the EER far below chance.
use dvsp_core::config::{Method, TrainConfig};
use dvsp_core::data::DataSpec;
use dvsp_core::eval::score_set;
use tch::Device;

#[test]
fn two_epochs_on_an_mnist_subset_learn_verification() {
    let split = DataSpec::Mnist
        .load(&dvsp_core::data::default_root(), None)
        .expect("MNIST from `make setup`");
    let test = split.test.head(2_000);
    let dir = tempfile::tempdir().unwrap();
    for method in [Method::Dvsp, Method::Center] {
        let cfg = TrainConfig {
            method,
            epochs: 2,
            limit: 5_000,
            batch_size: 64,
            ..TrainConfig::default()
        };
        let card = dvsp_core::train::train(
            &cfg,
            &DataSpec::Mnist,
            &split,
            &dir.path().join(method.name()),
            Device::Cpu,
        )
        .unwrap();
        let model =
            dvsp_core::artifact::load(&dir.path().join(method.name()), Device::Cpu).unwrap();
        let untrained_eer = {
            let cfg0 = TrainConfig {
                epochs: 1,
                limit: 64,
                batch_size: 64,
                lr: 0.0,
                ..cfg.clone()
            };
            dvsp_core::train::train(
                &cfg0,
                &DataSpec::Mnist,
                &split,
                &dir.path().join("untrained"),
                Device::Cpu,
            )
            .unwrap();
            let m0 = dvsp_core::artifact::load(&dir.path().join("untrained"), Device::Cpu).unwrap();
            score_set(&m0.net, &test, Device::Cpu).unwrap().eer().target
        };
        let eer = score_set(&model.net, &test, Device::Cpu)
            .unwrap()
            .eer()
            .target;
        assert!(
            card.training.final_accuracy > 0.9,
            "{method:?}: accuracy {}",
            card.training.final_accuracy
        );
        // Chance is 0.5; the untrained net (random features) scores about 0.3.
        assert!(
            eer < 0.12,
            "{method:?}: EER {eer} after 2 epochs (untrained {untrained_eer})"
        );
        assert!(
            eer < untrained_eer / 2.5,
            "{method:?}: EER {eer} vs untrained {untrained_eer}"
        );
    }
}
