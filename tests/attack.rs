//! The feature-space attacks against models whose minimal perturbation is known in closed
//! form, and the robustness index over hand-made results.
use dvsp_core::attack::ensemble::{self, Attack};
use dvsp_core::attack::pgd::{Aim, Norm};
use dvsp_core::attack::{self, pgd, round8, FeatureMap, Goal};
use dvsp_core::config::EnsembleConfig;
use dvsp_core::metrics::robustness::summarize;
use std::f64::consts::PI;
use tch::{nn, Device, Kind, Tensor};

/// f(x) = x - (0.5, 0.5) on 2-pixel images `[P, 1, 1, 2]`: features on circles around the
/// image centre o. D(f(x~), f(x2)) <= T means the angle between x~ - o and x2 - o is at most
/// theta_T = acos(1 - T); for x1 at radius rho and angle phi > theta_T from the target
/// direction (phi - theta_T < 90 degrees) the minimal L2 move is rho * sin(phi - theta_T).
struct Shifted;

impl FeatureMap for Shifted {
    fn features(&self, x: &Tensor) -> Tensor {
        x.flatten(1, -1) - 0.5
    }
}

const THETA_T: f64 = PI / 6.0;

/// (rho, angle of x1, angle of the target) in radians.
fn cases() -> Vec<(f64, f64, f64)> {
    vec![
        (0.3, 0.0, PI / 2.0),
        (0.2, 0.2, 0.2 + 40f64.to_radians()),
        (0.4, 3.5, 3.5 + 60f64.to_radians()),
        (0.35, 1.0, 1.0 - 110f64.to_radians()),
        (0.25, 2.0, 2.0 + 75f64.to_radians()),
    ]
}

fn inputs(cases: &[(f64, f64, f64)]) -> (Tensor, Tensor, Vec<f64>) {
    let x1: Vec<f32> = cases
        .iter()
        .flat_map(|&(r, a, _)| [(0.5 + r * a.cos()) as f32, (0.5 + r * a.sin()) as f32])
        .collect();
    let t: Vec<f32> = cases
        .iter()
        .flat_map(|&(_, _, b)| [b.cos() as f32, b.sin() as f32])
        .collect();
    let truth = cases
        .iter()
        .map(|&(r, a, b)| r * (((a - b).abs() - THETA_T).sin()))
        .collect();
    let n = cases.len() as i64;
    (
        Tensor::from_slice(&x1).view([n, 1, 1, 2]),
        Tensor::from_slice(&t).view([n, 2]),
        truth,
    )
}

fn t() -> f64 {
    1.0 - THETA_T.cos()
}

/// The ensemble on the pairs, with its default budget.
fn ensemble_on(
    f: &impl FeatureMap,
    x1: &Tensor,
    x2: &Tensor,
    target: &Tensor,
    t: f64,
    cfg: &EnsembleConfig,
) -> ensemble::EnsembleOutcome {
    ensemble::attack(f, x1, x2, Goal { target, t }, cfg).unwrap()
}

/// Inputs at the target angles, radius 0.3, as x2 for the segment bound.
fn x2_of(cases: &[(f64, f64, f64)]) -> Tensor {
    let x2: Vec<f32> = cases
        .iter()
        .flat_map(|&(_, _, b)| [(0.5 + 0.3 * b.cos()) as f32, (0.5 + 0.3 * b.sin()) as f32])
        .collect();
    Tensor::from_slice(&x2).view([cases.len() as i64, 1, 1, 2])
}

/// Checks one attack's L2 per pair against the closed-form minimum: never below it (it is a
/// verified success), at most 5% above.
fn within_five_percent(name: &str, got: &[Option<f64>], truth: &[f64]) {
    for (i, (g, want)) in got.iter().zip(truth).enumerate() {
        let g = g.unwrap_or_else(|| panic!("{name}: pair {i} failed"));
        assert!(
            g >= want - 1e-5,
            "{name}: pair {i}: {g} below the true minimum {want}"
        );
        assert!(
            g <= want * 1.05,
            "{name}: pair {i}: {g} more than 5% above {want}"
        );
    }
}

/// The audit's ensemble with CW switched on as well (it is off by default).
fn every_member() -> EnsembleConfig {
    EnsembleConfig {
        cw: dvsp_core::config::CwConfig::default(),
        ..EnsembleConfig::default()
    }
}

#[test]
fn every_attack_finds_the_closed_form_minimum_within_five_percent() {
    let all = cases();
    let (x1, target, truth) = inputs(&all);
    let out = ensemble_on(&Shifted, &x1, &x2_of(&all), &target, t(), &every_member());
    let l2: Vec<Option<f64>> = out.l2.iter().map(|&v| Some(v)).collect();
    within_five_percent("ensemble", &l2, &truth);
    for (a, m) in &out.members {
        if matches!(
            a,
            Attack::Cw | Attack::Ddn | Attack::DdnSegment | Attack::DdnRandom
        ) {
            within_five_percent(a.name(), m, &truth);
        }
    }
    // A success re-checked by a fresh forward pass crosses the threshold, and the reported
    // L2 is the recomputed ||x~ - x1||.
    let d_fresh = attack::distance(&Shifted, &out.adversarial, &target);
    let l2_fresh = attack::l2(&(&out.adversarial - &x1));
    for i in 0..truth.len() {
        assert!(d_fresh.double_value(&[i as i64]) <= t(), "pair {i}");
        assert!((l2_fresh.double_value(&[i as i64]) - out.l2[i]).abs() < 1e-6);
        assert!((out.distance[i] - d_fresh.double_value(&[i as i64])).abs() < 1e-6);
    }
    assert!(
        out.adversarial.min().double_value(&[]) >= 0.0
            && out.adversarial.max().double_value(&[]) <= 1.0
    );
    // The audit's default, CW off: CW is a member with no success and never the winner, and
    // the ensemble still lands within 5%.
    let default = ensemble_on(
        &Shifted,
        &x1,
        &x2_of(&all),
        &target,
        t(),
        &EnsembleConfig::default(),
    );
    let l2: Vec<Option<f64>> = default.l2.iter().map(|&v| Some(v)).collect();
    within_five_percent("default ensemble", &l2, &truth);
    assert_eq!(default.members[0].0, Attack::Cw);
    assert!(default.members[0].1.iter().all(Option::is_none));
    assert!(!default.winner.contains(&Attack::Cw));
    assert_eq!(default.steps[0], 0);
}

/// f(x) = (x_0 - 0.5, x_1 - 0.5) on 4-pixel images whose pixels 2 and 3 are idle at exactly
/// 0 and 1, and x1 with saturated active pixels too (the tanh start used to park such pixels
/// where the optimiser could not move them).
struct Saturated;

impl FeatureMap for Saturated {
    fn features(&self, x: &Tensor) -> Tensor {
        x.flatten(1, -1).narrow(1, 0, 2) - 0.5
    }
}

#[test]
fn saturated_pixels_move_and_the_minimum_is_found_within_five_percent() {
    // (x1's two active pixels, the target's angle); the minimum is rho sin(phi - theta_T)
    // with its foot inside the box in every case (worked out in the comments).
    let cases: [([f64; 2], f64); 3] = [
        // rho 0.5 at 0 deg, target 90 deg: 0.5 sin 60 deg, foot (0.625, 0.717).
        ([1.0, 0.5], PI / 2.0),
        // rho 0.707 at 225 deg, target 300 deg: 0.707 sin 45 deg = 0.5, foot (0.5, 0).
        ([0.0, 0.0], 300f64.to_radians()),
        // rho 0.707 at 45 deg, target -35 deg: 0.707 sin 50 deg, foot (0.953, 0.482).
        ([1.0, 1.0], (-35f64).to_radians()),
    ];
    let x1: Vec<f32> = cases
        .iter()
        .flat_map(|(p, _)| [p[0] as f32, p[1] as f32, 0.0, 1.0])
        .collect();
    let x1 = Tensor::from_slice(&x1).view([3, 1, 1, 4]);
    let x2: Vec<f32> = cases
        .iter()
        .flat_map(|&(_, b)| {
            [
                (0.5 + 0.4 * b.cos()) as f32,
                (0.5 + 0.4 * b.sin()) as f32,
                0.0,
                1.0,
            ]
        })
        .collect();
    let x2 = Tensor::from_slice(&x2).view([3, 1, 1, 4]);
    let target = tch::no_grad(|| dvsp_core::model::unit(&Saturated.features(&x2)));
    let truth: Vec<f64> = cases
        .iter()
        .map(|&(p, b)| {
            let (u, v) = (p[0] - 0.5, p[1] - 0.5);
            let phi = (v.atan2(u) - b).rem_euclid(2.0 * PI);
            let phi = phi.min(2.0 * PI - phi);
            (u * u + v * v).sqrt() * (phi - THETA_T).sin()
        })
        .collect();
    assert!((truth[1] - 0.5).abs() < 1e-9, "{truth:?}");
    let out = ensemble_on(&Saturated, &x1, &x2, &target, t(), &every_member());
    for (a, m) in &out.members {
        if matches!(
            a,
            Attack::Cw | Attack::Ddn | Attack::DdnSegment | Attack::DdnRandom
        ) {
            within_five_percent(a.name(), m, &truth);
        }
    }
    // The idle saturated pixels have no gradient: the smallest perturbation leaves them.
    let idle = out.adversarial.flatten(1, -1).narrow(1, 2, 2);
    assert!(idle.allclose(&x1.flatten(1, -1).narrow(1, 2, 2), 0.0, 1e-6, false));
}

#[test]
fn a_pair_no_attack_reaches_is_bounded_by_the_segment_never_dropped() {
    let all = cases();
    let (x1, target, _) = inputs(&all);
    let x2 = x2_of(&all);
    // No optimisation at all: only the segment [x1, x2] is left (DDN started on the segment
    // bound keeps its start, shrunk towards x1 by bisection at most).
    let mut cfg = EnsembleConfig::default();
    cfg.cw.search = 0;
    cfg.ddn.steps = 0;
    cfg.ddn.restarts = 0;
    cfg.pgd_steps = 0;
    let out = ensemble_on(&Shifted, &x1, &x2, &target, t(), &cfg);
    let span = attack::l2(&(&x2 - &x1));
    let member = |a: Attack| &out.members.iter().find(|m| m.0 == a).unwrap().1;
    for i in 0..all.len() {
        assert!(matches!(
            out.winner[i],
            Attack::Segment | Attack::DdnSegment
        ));
        let segment = member(Attack::Segment)[i].expect("the segment bounds every pair");
        assert!(out.l2[i] > 0.0 && out.l2[i] <= segment + 1e-9);
        assert!(segment <= span.double_value(&[i as i64]) + 1e-6);
        assert!(out.distance[i] <= t());
        for a in [Attack::Cw, Attack::Ddn, Attack::DdnRandom] {
            assert!(member(a)[i].is_none(), "{}", a.name());
        }
    }
    // A threshold below D(x2, x2) = 0 cannot be crossed even by x2: an error, not a number.
    let e = ensemble::attack(
        &Shifted,
        &x1,
        &x2,
        Goal {
            target: &target,
            t: -0.01,
        },
        &cfg,
    );
    assert!(e.unwrap_err().to_string().contains("not even x2"));
}

fn random_net(seed: i64) -> (nn::VarStore, dvsp_core::model::Net) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let spec = dvsp_core::model::NetSpec {
        method: dvsp_core::config::Method::Dvib,
        backbone: dvsp_core::config::Backbone::Small,
        input: dvsp_core::spec::InputSpec::for_shape([1, 28, 28]),
        feature_dim: 8,
        classes: 10,
        radius: 1.0,
    };
    let net = dvsp_core::model::Net::new(&vs.root(), spec);
    (vs, net)
}

#[test]
fn on_a_cnn_the_ensemble_is_never_above_a_member_and_its_8_bit_points_are_accepted() {
    let (_vs, net) = random_net(5);
    let x1 = round8(Tensor::rand([6, 1, 28, 28], (Kind::Float, Device::Cpu)));
    let x2 = x1.roll([1], [0]);
    let target = tch::no_grad(|| dvsp_core::model::unit(&net.features(&x2)));
    let t_net = 0.02;
    let mut cfg = EnsembleConfig::default();
    cfg.cw.steps = 60;
    cfg.cw.search = 3;
    cfg.ddn.steps = 60;
    let out = ensemble_on(&net, &x1, &x2, &target, t_net, &cfg);
    for i in 0..6 {
        for (a, m) in &out.members {
            if let Some(v) = m[i] {
                assert!(
                    out.l2[i] <= v + 1e-6,
                    "pair {i}: ensemble {} above {} {v}",
                    out.l2[i],
                    a.name()
                );
            }
        }
    }
    let q = &out.adversarial_8bit;
    assert!(
        (q * 255.0 - (q * 255.0).round())
            .abs()
            .max()
            .double_value(&[])
            < 1e-4
    );
    let d8 = attack::distance(&net, q, &target);
    let l8 = attack::l2(&(q - &x1));
    for i in 0..6 {
        assert!(d8.double_value(&[i]) <= t_net, "pair {i} at 8 bits");
        assert!((l8.double_value(&[i]) - out.l2_8bit[i as usize]).abs() < 1e-5);
    }
    // Batched and one pair at a time agree within 5%.
    for i in 0..6 {
        let one = ensemble_on(
            &net,
            &x1.narrow(0, i, 1),
            &x2.narrow(0, i, 1),
            &target.narrow(0, i, 1),
            t_net,
            &cfg,
        );
        let (a, b) = (out.l2[i as usize], one.l2[0]);
        assert!(
            (a - b).abs() <= 0.05 * b,
            "pair {i}: batched {a} vs single {b}"
        );
    }
}

#[test]
fn pgd_and_fgsm_respect_their_budget_and_the_box() {
    let (x1, target, truth) = inputs(&cases());
    for eps in [0.05, 0.5] {
        let b = pgd::budget(&x1, eps);
        for x in [
            pgd::fgsm(&Shifted, &x1, &target, &b),
            pgd::attack(&Shifted, &x1, &target, &b, 20, Norm::L2, Aim::Impersonate),
        ] {
            let n = attack::l2(&(&x - &x1));
            assert!(n.max().double_value(&[]) <= eps + 1e-5);
            assert!(x.min().double_value(&[]) >= 0.0 && x.max().double_value(&[]) <= 1.0);
        }
    }
    // Per-pair budgets: 10% above every true minimum PGD succeeds on all pairs; 10% below,
    // on none.
    let above = Tensor::from_slice(&truth.iter().map(|v| v * 1.1).collect::<Vec<_>>());
    let x = pgd::attack(
        &Shifted,
        &x1,
        &target,
        &above,
        50,
        Norm::L2,
        Aim::Impersonate,
    );
    assert!(
        Goal {
            target: &target,
            t: t()
        }
        .accepted(&Shifted, &x)
        .all()
        .int64_value(&[])
            == 1
    );
    let below = Tensor::from_slice(&truth.iter().map(|v| v * 0.9).collect::<Vec<_>>());
    let x = pgd::attack(
        &Shifted,
        &x1,
        &target,
        &below,
        50,
        Norm::L2,
        Aim::Impersonate,
    );
    assert!(
        Goal {
            target: &target,
            t: t()
        }
        .accepted(&Shifted, &x)
        .any()
        .int64_value(&[])
            == 0
    );
}

#[test]
fn robustness_index_over_hand_made_results() {
    let results = [
        (0, 1, Some(1.0)),
        (0, 1, Some(3.0)),
        (1, 0, Some(2.0)),
        (1, 0, None),
        (0, 2, None),
    ];
    let r = summarize(3, &results);
    assert_eq!(r.h[0][1], Some(2.0));
    assert_eq!(r.h[1][0], Some(2.0));
    assert_eq!((r.h[0][2], r.h[0][0]), (None, None));
    assert_eq!(
        (r.failures[1][0], r.failures[0][2], r.attempts[0][1]),
        (1, 1, 2)
    );
    assert_eq!(r.ri, Some(2.0));
    assert!((r.success_rate - 0.6).abs() < 1e-12);
    assert_eq!((r.median_l2, r.mean_l2), (Some(2.0), Some(2.0)));
    let r = summarize(
        3,
        &[
            (0, 1, Some(1.0)),
            (1, 2, Some(4.0)),
            (2, 0, Some(1.0)),
            (2, 1, Some(2.0)),
        ],
    );
    assert_eq!((r.ri, r.median_l2), (Some(2.0), Some(1.5)));
    assert!(
        "fmr=1e-3".parse::<dvsp_core::config::ThresholdAt>().is_ok()
            && "fmr=2".parse::<dvsp_core::config::ThresholdAt>().is_err()
    );
}

#[test]
fn an_audit_of_a_single_class_set_is_an_error_not_a_panic() {
    let test = dvsp_core::data::Dataset {
        images: Tensor::zeros([4, 1, 28, 28], (Kind::Uint8, Device::Cpu)),
        labels: Tensor::zeros([4], (Kind::Int64, Device::Cpu)),
        classes: 1,
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let spec = dvsp_core::model::NetSpec {
        method: dvsp_core::config::Method::Center,
        backbone: dvsp_core::config::Backbone::Small,
        input: dvsp_core::spec::InputSpec::for_shape([1, 28, 28]),
        feature_dim: 4,
        classes: 2,
        radius: 1.0,
    };
    let net = dvsp_core::model::Net::new(&vs.root(), spec);
    let cfg = dvsp_core::config::AuditConfig {
        pairs: 2,
        threshold_at: dvsp_core::config::ThresholdAt::Eer,
        attack: EnsembleConfig::default(),
        budgets: vec![1.0],
        pgd_steps: 2,
        batch: 8,
        seed: 0,
        convergence_pairs: 2,
        convergence_budgets: vec![3],
    };
    let e = dvsp_core::audit::run(&net, "m", 0.5, &test, &cfg).unwrap_err();
    assert!(
        e.to_string().contains("no pairs of different classes"),
        "{e}"
    );
    // No re-attacked subset, or a multiple that is no evidence: refused before any attack.
    for (pairs, budgets, says) in [
        (0, vec![3], "--convergence-pairs"),
        (2, vec![3, 1], "1x is no evidence"),
        (2, vec![0], "0x is no evidence"),
    ] {
        let bad = dvsp_core::config::AuditConfig {
            convergence_pairs: pairs,
            convergence_budgets: budgets,
            ..cfg.clone()
        };
        let e = dvsp_core::audit::run(&net, "m", 0.5, &test, &bad).unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
    }
}

#[test]
fn an_audit_bounds_every_pair_and_re_attacks_a_subset_at_larger_budgets() {
    tch::manual_seed(3);
    let test = dvsp_core::data::Dataset {
        images: Tensor::randint(256, [30, 1, 28, 28], (Kind::Uint8, Device::Cpu)),
        labels: Tensor::arange(30, (Kind::Int64, Device::Cpu)).remainder(3),
        classes: 3,
    };
    let (_vs, net) = random_net(7);
    let mut attack = EnsembleConfig::default();
    attack.cw.steps = 20;
    attack.cw.search = 2;
    attack.ddn.steps = 20;
    attack.pgd_steps = 5;
    let cfg = dvsp_core::config::AuditConfig {
        pairs: 3,
        threshold_at: dvsp_core::config::ThresholdAt::Eer,
        attack,
        budgets: vec![0.5, 2.0],
        pgd_steps: 5,
        batch: 7,
        seed: 1,
        convergence_pairs: 6,
        convergence_budgets: vec![3],
    };
    let (r, adv) = dvsp_core::audit::run(&net, "m", 0.01, &test, &cfg).unwrap();
    assert_eq!(r.pairs.len(), 18);
    assert_eq!(adv.size()[0], 18);
    assert!(r.robustness.failures.iter().flatten().all(|&f| f == 0));
    assert_eq!(r.robustness.success_rate, 1.0);
    assert!(r.robustness.ri.is_some_and(f64::is_finite));
    assert_eq!(r.wins.iter().map(|w| w.1).sum::<usize>(), 18);
    for p in &r.pairs {
        let m = &p.members;
        let all = [m.cw, m.ddn, m.ddn_segment, m.ddn_random, m.segment, m.pgd];
        for v in all.into_iter().flatten() {
            assert!(p.l2 <= v + 1e-6, "{p:?}");
        }
        assert!(p.distance <= 0.01 && p.l2_8bit.is_finite(), "{p:?}");
    }
    // One pair of every ordered class pair (6 requested over 6 class pairs), at 1x and 3x.
    assert_eq!(r.convergence.pairs, vec![0, 3, 6, 9, 12, 15]);
    let m: Vec<usize> = r.convergence.points.iter().map(|p| p.multiplier).collect();
    assert_eq!(m, vec![1, 3]);
    assert!(
        (r.convergence.ratio - r.convergence.points[0].ri / r.convergence.points[1].ri).abs()
            < 1e-12
    );
    // Without a larger multiple there is no evidence, so the audit does not claim convergence.
    let unchecked = dvsp_core::config::AuditConfig {
        convergence_budgets: vec![],
        ..cfg.clone()
    };
    let (u, _) = dvsp_core::audit::run(&net, "m", 0.01, &test, &unchecked).unwrap();
    assert_eq!(
        (u.convergence.points.len(), u.convergence.converged),
        (1, false)
    );
    // The success curve reaches every pair at the largest perturbation.
    assert_eq!(r.masking.success_vs_budget.last().unwrap().1, 1.0);
    assert!(r.masking.input_gradient_norm > 0.0);
    assert_eq!(r.baselines.len(), 6);
    // Every pair's true minimum lies in [certified, attacked].
    assert!(r.lipschitz.is_some_and(|l| l.is_finite() && l > 0.0));
    for p in &r.pairs {
        let c = p.certified.expect("a certified radius");
        assert!(c >= 0.0 && c <= p.l2 + 1e-9, "{p:?}");
    }
    let (c, a) = (
        r.robustness_certified.as_ref().unwrap().ri.unwrap(),
        r.robustness.ri.unwrap(),
    );
    assert!(c > 0.0 && c <= a, "certified RI {c}, attacked {a}");
    // Transfer from the model itself: its own points, so every pair is found at the white-box
    // size; from another model: every accepted point is still above the certified radius.
    let t = dvsp_core::audit::transfer(&net, &net, "m", 0.01, &test, &r).unwrap();
    assert_eq!(
        (t.success_unscaled, t.found, t.below_white_box),
        (1.0, 18, 0)
    );
    assert!(
        t.median_ratio.is_some_and(|m| (m - 1.0).abs() < 1e-6),
        "{t:?}"
    );
    let (_vs2, other) = random_net(8);
    let t = dvsp_core::audit::transfer(&net, &other, "o", 0.01, &test, &r).unwrap();
    assert_eq!(t.l2.len(), 18);
    for (v, p) in t.l2.iter().zip(&r.pairs) {
        if let Some(v) = v {
            assert!(*v >= p.certified.unwrap() - 1e-9, "{v} {p:?}");
        }
    }
    assert_eq!(
        t.below_white_box,
        t.l2.iter()
            .zip(&r.pairs)
            .filter(|(v, p)| v.is_some_and(|v| v < p.l2 * (1.0 - 1e-3)))
            .count()
    );
}

#[test]
fn the_certified_radius_of_an_isometry_is_the_closed_form_minimum() {
    let all = cases();
    let (x1, target, truth) = inputs(&all);
    let g1 = Shifted.features(&x1);
    let r = attack::to_f64(&dvsp_core::certify::radius(&g1, &target, t(), 1.0));
    let half = attack::to_f64(&dvsp_core::certify::radius(&g1, &target, t(), 2.0));
    for i in 0..truth.len() {
        assert!(
            (r[i] - truth[i]).abs() < 1e-6,
            "pair {i}: {} vs {}",
            r[i],
            truth[i]
        );
        assert!((half[i] - truth[i] / 2.0).abs() < 1e-6);
    }
    // x1 already accepted (its own target): radius 0; a target opposite x1: ||g1|| (the
    // apex of the cone is the nearest accepted feature).
    let own = dvsp_core::model::unit(&g1);
    let zero = attack::to_f64(&dvsp_core::certify::radius(&g1, &own, t(), 1.0));
    assert!(zero.iter().all(|&v| v.abs() < 1e-9), "{zero:?}");
    let apex = attack::to_f64(&dvsp_core::certify::radius(&g1, &(-own), t(), 1.0));
    for (i, &(rho, _, _)) in all.iter().enumerate() {
        assert!((apex[i] - rho).abs() < 1e-6);
    }
}

#[test]
fn operator_norms_of_known_maps() {
    use dvsp_core::certify::operator_norm;
    let d = Tensor::from_slice(&[2.0f64, 5.0, 1.0]).diag(0);
    let n = operator_norm(&|x: &Tensor| x.matmul(&d), &[3]).unwrap();
    assert!((n - 5.0).abs() < 1e-9, "{n}");
    // A 1x1 convolution into two channels with weights 3 and 4: x -> (3x, 4x), norm 5.
    let w = Tensor::from_slice(&[3.0f64, 4.0]).view([2, 1, 1, 1]);
    let conv = |x: &Tensor| x.conv2d(&w, None::<Tensor>, [1], [0], [1], 1);
    let n = operator_norm(&conv, &[1, 4, 4]).unwrap();
    assert!((n - 5.0).abs() < 1e-9, "{n}");
    // A 3x3 kernel that picks its centre: a crop, norm 1.
    let k = Tensor::zeros([1, 1, 3, 3], (Kind::Double, Device::Cpu));
    let _ = k.narrow(2, 1, 1).narrow(3, 1, 1).fill_(1.0);
    let crop = |x: &Tensor| x.conv2d(&k, None::<Tensor>, [1], [0], [1], 1);
    let n = operator_norm(&crop, &[1, 6, 6]).unwrap();
    assert!((n - 1.0).abs() < 1e-9, "{n}");
    assert!(operator_norm(&|x: &Tensor| x.shallow_clone(), &[100_000]).is_err());
}

#[test]
fn the_lipschitz_constant_of_a_cnn_bounds_its_differences_and_its_gradients() {
    let (_vs, net) = random_net(11);
    let l = net.lipschitz().expect("the small CNN has one");
    tch::manual_seed(12);
    let x = Tensor::rand([16, 1, 28, 28], (Kind::Float, Device::Cpu));
    let g = |x: &Tensor| tch::no_grad(|| net.unprojected(x));
    for scale in [1.0, 1e-2] {
        let y = (&x + Tensor::randn_like(&x) * scale).clamp(0.0, 1.0);
        let ratio = attack::l2(&(g(&x) - g(&y))) / attack::l2(&(&x - &y));
        let max = ratio.max().double_value(&[]);
        assert!(max <= l * (1.0 + 1e-5), "{max} > {l}");
    }
    // ||J^T u|| for unit u at random points: a lower estimate of the local constant.
    let xg = x.copy().set_requires_grad(true);
    let f = net.unprojected(&xg);
    let u = dvsp_core::model::unit(&Tensor::randn_like(&f));
    let grad = Tensor::run_backward(&[&(f * u).sum(Kind::Float)], &[&xg], false, false).remove(0);
    let max = attack::l2(&grad).max().double_value(&[]);
    assert!(max > 0.0 && max <= l * (1.0 + 1e-5), "{max} > {l}");
}

#[test]
fn linf_pgd_keeps_its_box_and_dodging_pushes_a_genuine_pair_apart() {
    let all = cases();
    let (x1, target, _) = inputs(&all);
    // A genuine match: the target 10 degrees from x1 (theta_T is 30).
    let near: Vec<f32> = all
        .iter()
        .flat_map(|&(_, a, _)| {
            let b = a + 10f64.to_radians();
            [b.cos() as f32, b.sin() as f32]
        })
        .collect();
    let own = Tensor::from_slice(&near).view([all.len() as i64, 2]);
    for eps in [2.0 / 255.0, 16.0 / 255.0] {
        let b = pgd::budget(&x1, eps);
        let x = pgd::attack(&Shifted, &x1, &target, &b, 10, Norm::Linf, Aim::Impersonate);
        assert!((&x - &x1).abs().max().double_value(&[]) <= eps + 1e-6);
        assert!(x.min().double_value(&[]) >= 0.0 && x.max().double_value(&[]) <= 1.0);
        let d0 = attack::distance(&Shifted, &x1, &own);
        let x = pgd::attack(&Shifted, &x1, &own, &b, 10, Norm::Linf, Aim::Dodge);
        let d = attack::distance(&Shifted, &x, &own);
        assert!(
            d.gt_tensor(&(d0 + 1e-4)).all().int64_value(&[]) == 1,
            "dodging raises D"
        );
    }
}

#[test]
fn the_convergence_budgets_default_to_3x_and_10x_and_can_be_switched_off() {
    let parse = |argv: &[&str]| {
        dvsp_core::audit::outputs::AuditArgs::from_argv(argv)
            .unwrap()
            .convergence_budgets
    };
    assert_eq!(parse(&["audit"]), vec![3, 10]);
    assert_eq!(
        parse(&["audit", "--convergence-budgets", "2,5"]),
        vec![2, 5]
    );
    assert!(parse(&["audit", "--convergence-budgets"]).is_empty());
}
