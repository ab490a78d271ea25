//! Model selection on training data only, and the bootstrap intervals of Table 1.
use dvsp_core::config::{Method, TrainConfig};
use dvsp_core::data::{DataSpec, Dataset};
use dvsp_core::metrics::bootstrap::{ri_interval, PairTable};
use dvsp_core::metrics::eer::Scores;
use dvsp_core::tune::{choose, grid, holdout, Candidate, VALIDATION};
use tch::{Device, Kind, Tensor};

#[test]
fn the_validation_split_comes_from_the_training_images_never_the_test_split() {
    // Labels that are the image's index in the training file.
    let train = Dataset {
        images: Tensor::zeros([50_000, 1, 2, 2], (Kind::Uint8, Device::Cpu)),
        labels: Tensor::arange(50_000, (Kind::Int64, Device::Cpu)),
        classes: 50_000,
    };
    let (fit, val) = holdout(&train, VALIDATION).unwrap();
    let ids = |d: &Dataset| Vec::<i64>::try_from(&d.labels).unwrap();
    assert_eq!(ids(&fit), (0..40_000).collect::<Vec<_>>());
    assert_eq!(ids(&val), (40_000..50_000).collect::<Vec<_>>());
    assert!(holdout(&train, 50_000).is_err() && holdout(&train, 0).is_err());
    // On MNIST: fit and validation together are exactly the paper's training split (training
    // file 0..50,000); the test split is the file's 50,000..60,000.
    let split = DataSpec::Mnist
        .load(&dvsp_core::data::default_root(), None)
        .unwrap();
    let (fit, val) = holdout(&split.train, VALIDATION).unwrap();
    let file =
        dvsp_core::data::load_idx_pair(&dvsp_core::data::default_root().join("mnist"), "train")
            .unwrap();
    assert!(Tensor::cat(&[&fit.images, &val.images], 0).equal(&file.images.narrow(0, 0, 50_000)));
    assert!(split
        .test
        .images
        .equal(&file.images.narrow(0, 50_000, 10_000)));
}

#[test]
fn every_method_gets_the_same_budget_and_the_balance_rule_is_the_rank_sum() {
    for m in Method::ALL {
        let g = grid(m, &TrainConfig::default());
        assert_eq!(g.len(), 4, "{m:?}");
        assert!(g.iter().all(|(_, c)| c.method == m));
    }
    let c = |eer: f64, ri: f64| Candidate {
        label: String::new(),
        config: TrainConfig::default(),
        validation_eer: eer,
        validation_ri: ri,
    };
    // EER ranks 0 1 2 3; RI ranks (descending) 2 0 1 3: sums 2 1 3 6.
    let cands = [c(0.01, 1.0), c(0.02, 3.0), c(0.03, 2.0), c(0.04, 0.5)];
    assert_eq!(choose(&cands), Some(1));
    // A tie in the rank sum goes to the lower EER.
    assert_eq!(choose(&[c(0.02, 2.0), c(0.01, 1.0)]), Some(1));
}

#[test]
fn the_weighted_eer_with_unit_weights_is_the_plain_eer() {
    tch::manual_seed(1);
    let n = 300;
    let labels: Vec<i64> = (0..n).map(|i| i % 5).collect();
    let centres = Tensor::randn([5, 4], (Kind::Float, Device::Cpu));
    let lab = Tensor::from_slice(&labels);
    let emb =
        centres.index_select(0, &lab) + Tensor::randn([n, 4], (Kind::Float, Device::Cpu)) * 0.8;
    let emb = dvsp_core::model::unit(&emb);
    let table = PairTable::new(&emb, &labels).unwrap();
    let plain = dvsp_core::eval::pair_scores(&emb, &lab)
        .unwrap()
        .eer()
        .target;
    let weighted = table.weighted_eer(&vec![1.0; n as usize]);
    assert!((plain - weighted).abs() < 1e-9, "{plain} vs {weighted}");
    assert!(plain > 0.01 && plain < 0.5, "{plain}");
    let (lo, hi) = table.eer_interval(100, 0);
    assert!(
        lo < plain && plain < hi && hi - lo < 0.2,
        "[{lo}, {hi}] around {plain}"
    );
    // Hand-made: distances 0.1 0.2 (genuine) 0.3 0.4 (impostor) separate perfectly.
    let s = Scores::new(vec![0.1, 0.2], vec![0.3, 0.4]).unwrap();
    assert_eq!(s.eer().target, 0.0);
}

#[test]
fn ri_intervals_resample_class_pairs_then_their_pairs() {
    // Every attacked pair at L2 2: no resample can move RI.
    let flat: Vec<(usize, usize, f64)> = (0..3)
        .flat_map(|k| (0..3).filter(move |&l| l != k).map(move |l| (k, l, 2.0)))
        .flat_map(|r| [r, r, r])
        .collect();
    let (lo, hi) = ri_interval(3, &flat, 50, 0);
    assert!(
        (lo - 2.0).abs() < 1e-12 && (hi - 2.0).abs() < 1e-12,
        "[{lo}, {hi}]"
    );
    // Two class pairs of one attacked pair each, H 0 and 1: RI* is 0, 1/2 or 1 with
    // probabilities 1/4, 1/2, 1/4, so the 2.5% and 97.5% percentiles are 0 and 1.
    let (lo, hi) = ri_interval(2, &[(0, 1, 0.0), (1, 0, 1.0)], 2000, 0);
    assert_eq!((lo, hi), (0.0, 1.0));
    // One attacked pair per class pair (`--pairs 1`): the interval has width and holds RI.
    let single: Vec<(usize, usize, f64)> = (0..3)
        .flat_map(|k| (0..3).filter(move |&l| l != k).map(move |l| (k, l)))
        .enumerate()
        .map(|(i, (k, l))| (k, l, 1.0 + i as f64 / 5.0))
        .collect();
    let ri = single.iter().map(|r| r.2).sum::<f64>() / single.len() as f64;
    let (lo, hi) = ri_interval(3, &single, 500, 0);
    assert!(
        lo < ri && ri < hi && hi - lo > 0.2,
        "[{lo}, {hi}] around {ri}"
    );
}
