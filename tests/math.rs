//! Known-value tests for the paper's math: eq. 16 error rates, the Gaussian KL of eq. 6/13,
//! sphere sampling and projection (eq. 11, 14), A-Softmax psi, the eq. 15 step, center update.
use dvsp_core::loss::{center, dvib, dvsp as dv, sphereface};
use dvsp_core::metrics::eer::Scores;
use std::f64::consts::PI;
use tch::{Kind, Tensor};

fn close(a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() <= tol, "{a} != {b} (tol {tol})");
}

#[test]
fn eer_and_fnmr_at_fmr_on_a_hand_made_score_set() {
    // Distances: match when D <= T. At T = 0.4: one impostor (0.4) accepted -> FMR 1/4,
    // one genuine (0.6) rejected -> FNMR 1/4: EER = 0.25 exactly.
    let s = Scores::new(vec![0.1, 0.2, 0.3, 0.6], vec![0.4, 0.5, 0.7, 0.8]).unwrap();
    let e = s.eer();
    close(e.target, 0.25, 1e-12);
    close(e.threshold, 0.4, 1e-6);
    close(e.fmr, 0.25, 1e-12);
    close(e.fnmr, 0.25, 1e-12);
    // FMR <= 0.25 allows one impostor: T just below 0.5, FNMR 1/4.
    let p = s.at_fmr(0.25);
    assert!(p.threshold < 0.5 && p.threshold >= 0.4, "{p:?}");
    close(p.fmr, 0.25, 1e-12);
    close(p.fnmr, 0.25, 1e-12);
    // FMR <= 0.5: T just below 0.7, every genuine accepted.
    let p = s.at_fmr(0.5);
    close(p.fmr, 0.5, 1e-12);
    close(p.fnmr, 0.0, 1e-12);
    // FMR 0: T below the closest impostor; 0.6 is rejected.
    let p = s.at_fmr(0.0);
    close(p.fmr, 0.0, 1e-12);
    close(p.fnmr, 0.25, 1e-12);
    let r = s.report(&[0.25]);
    assert_eq!((r.genuine_pairs, r.impostor_pairs), (4, 4));
}

#[test]
fn eer_extremes_and_bad_input() {
    let separated = Scores::new(vec![0.1, 0.2], vec![0.5, 0.6]).unwrap();
    close(separated.eer().target, 0.0, 1e-12);
    let inverted = Scores::new(vec![0.5, 0.6], vec![0.1, 0.2]).unwrap();
    close(inverted.eer().target, 1.0, 1e-12);
    // Unequal sizes: 3 genuine, 5 impostor. |FMR - FNMR| at T = 0.2: |0 - 1/3|; at 0.3:
    // |1/5 - 1/3| = 2/15; at 0.4: |2/5 - 1/3| = 1/15 (smallest); at 0.5: |3/5 - 1/3|.
    // So EER = (2/5 + 1/3) / 2 = 11/30 at T = 0.4.
    let s = Scores::new(vec![0.1, 0.2, 0.9], vec![0.3, 0.4, 0.5, 0.6, 0.7]).unwrap();
    close(s.eer().target, 11.0 / 30.0, 1e-12);
    close(s.eer().threshold, 0.4, 1e-6);
    assert!(Scores::new(vec![], vec![0.1]).is_err());
    assert!(Scores::new(vec![f32::NAN], vec![0.1]).is_err());
}

#[test]
fn gaussian_kl_matches_its_closed_form() {
    // KL[N(mu, diag(l)) || N(0, I)] = 1/2 sum (l + mu^2 - 1 - ln l).
    // mu = (1, 2), l = (0.5, 2): 1/2 * ((0.5 + 1 - 1 - ln 0.5) + (2 + 4 - 1 - ln 2)) = 2.75.
    let mu = Tensor::from_slice(&[1.0f32, 2.0, 0.0, 0.0]).view([2, 2]);
    let l = Tensor::from_slice(&[0.5f32, 2.0, 1.0, 1.0]).view([2, 2]);
    let kl = dvib::kl_standard_normal(&mu, &l).unwrap();
    close(kl.double_value(&[0]), 2.75, 1e-5);
    close(kl.double_value(&[1]), 0.0, 1e-6);
    // Numerical check against E_p[log p - log q] by Monte Carlo for mu = 0.3, l = 0.2 (1-d).
    let n = 400_000;
    let z = Tensor::randn([n], (Kind::Double, tch::Device::Cpu)) * 0.2f64.sqrt() + 0.3;
    let log_p = -(&z - 0.3).square() / (2.0 * 0.2) - 0.5 * (2.0 * PI * 0.2).ln();
    let log_q = -z.square() / 2.0 - 0.5 * (2.0 * PI).ln();
    let mc = (log_p - log_q).mean(Kind::Double).double_value(&[]);
    let exact = dvib::kl_standard_normal(
        &Tensor::from_slice(&[0.3f64]).view([1, 1]),
        &Tensor::from_slice(&[0.2f64]).view([1, 1]),
    )
    .unwrap()
    .double_value(&[0]);
    close(exact, 0.5 * (0.2 + 0.09 - 1.0 - 0.2f64.ln()), 1e-12);
    close(mc, exact, 5e-3);
    assert!(dvib::kl_standard_normal(&mu, &l.view([4, 1]))
        .unwrap_err()
        .to_string()
        .contains("[4, 1]"));
}

#[test]
fn sphere_samples_have_unit_norm_and_zero_mean() {
    tch::manual_seed(1);
    let u = dv::sphere_samples(&[200_000, 8], (Kind::Float, tch::Device::Cpu));
    let norms = u.norm_scalaropt_dim(2, [-1], false);
    close(norms.min().double_value(&[]), 1.0, 1e-5);
    close(norms.max().double_value(&[]), 1.0, 1e-5);
    let mean = u.mean_dim(0, false, None);
    assert!(mean.abs().max().double_value(&[]) < 0.01, "mean {mean}");
    // Uniform on the sphere: E[u_i^2] = 1/k.
    close(
        u.square()
            .mean_dim(0, false, None)
            .mean(Kind::Float)
            .double_value(&[]),
        1.0 / 8.0,
        1e-3,
    );
}

#[test]
fn projection_and_shell_lie_at_radius_r() {
    tch::manual_seed(2);
    let mu = Tensor::randn([64, 16], (Kind::Float, tch::Device::Cpu)) * 0.01;
    let lambda = Tensor::rand([64, 16], (Kind::Float, tch::Device::Cpu)) + 0.1;
    let p = dv::project(&mu, 3.5);
    let n = p.norm_scalaropt_dim(2, [-1], false);
    close(n.min().double_value(&[]), 3.5, 1e-5);
    close(n.max().double_value(&[]), 3.5, 1e-5);
    // Shell centre c(x) on the radius-R sphere (our reading of eq. 11/14), r(x) = mean Lambda.
    let (c, r) = dv::shell(&mu, &lambda, 3.5).unwrap();
    close(
        c.norm_scalaropt_dim(2, [-1], false).max().double_value(&[]),
        3.5,
        1e-5,
    );
    close(
        (r - lambda.mean_dim(-1, false, None))
            .abs()
            .max()
            .double_value(&[]),
        0.0,
        1e-7,
    );
    assert!(dv::shell(&mu, &lambda.narrow(1, 0, 4), 1.0)
        .unwrap_err()
        .to_string()
        .contains("[64, 4]"));
}

#[test]
fn a_softmax_psi_at_known_angles() {
    // psi(theta) = (-1)^k cos(4 theta) - 2k, theta in [k pi/4, (k+1) pi/4].
    let cases = [
        (0.0, 1.0),
        (PI / 4.0, -1.0),
        (PI / 3.0, -1.5),
        (PI / 2.0, -3.0),
        (2.0 * PI / 3.0, -4.5),
        (PI, -7.0),
    ];
    for (theta, want) in cases {
        let cos = Tensor::from_slice(&[theta.cos()]);
        close(sphereface::psi(&cos, 4).double_value(&[0]), want, 1e-6);
    }
    // psi is monotonically decreasing on [0, pi].
    let thetas = Tensor::linspace(0.0, PI, 1000, (Kind::Double, tch::Device::Cpu));
    let psi = sphereface::psi(&thetas.cos(), 4);
    let d = psi.narrow(0, 1, 999) - psi.narrow(0, 0, 999);
    assert!(d.max().double_value(&[]) <= 1e-9);
    // m = 1 is the plain cosine.
    close(
        sphereface::psi(&Tensor::from_slice(&[0.3f64]), 1).double_value(&[0]),
        0.3,
        1e-12,
    );
    close(sphereface::lambda_at(0), 1000.0, 1e-9);
    close(
        sphereface::lambda_at(1_000_000),
        sphereface::LAMBDA_MIN,
        1e-9,
    );
}

#[test]
fn adversarial_step_has_l2_norm_eps() {
    tch::manual_seed(3);
    let x = Tensor::rand([8, 1, 28, 28], (Kind::Float, tch::Device::Cpu));
    let g = Tensor::randn([8, 1, 28, 28], (Kind::Float, tch::Device::Cpu)) * 37.0;
    let xa = dv::adversarial_step(&x, &g, 0.1);
    let norms = (&xa - &x).view([8, -1]).norm_scalaropt_dim(2, [1], false);
    close(norms.min().double_value(&[]), 0.1, 1e-5);
    close(norms.max().double_value(&[]), 0.1, 1e-5);
    // Along the gradient: the cosine between step and gradient is 1.
    let cos = ((&xa - &x).view([8, -1]) * g.view([8, -1])).sum_dim_intlist(1, false, None)
        / (norms * g.view([8, -1]).norm_scalaropt_dim(2, [1], false));
    close(cos.min().double_value(&[]), 1.0, 1e-5);
}

#[test]
fn center_update_follows_wen_et_al() {
    // Two class-0 features (1, 0) and (3, 0), centres at 0, alpha 0.5:
    // delta_0 = (2 * 0 - (4, 0)) / (1 + 2) = (-4/3, 0); c_0 = 0 - 0.5 * delta_0 = (2/3, 0).
    let mut centers = Tensor::zeros([2, 2], (Kind::Float, tch::Device::Cpu));
    let f = Tensor::from_slice(&[1.0f32, 0.0, 3.0, 0.0]).view([2, 2]);
    let y = Tensor::from_slice(&[0i64, 0]);
    center::update_centers(&mut centers, &f, &y, 0.5);
    close(centers.double_value(&[0, 0]), 2.0 / 3.0, 1e-6);
    close(centers.double_value(&[1, 0]), 0.0, 1e-9);
    // Loss: lambda/2 * mean ||f - c||^2 = 0.1/2 * ((1/3)^2 + (7/3)^2) / 2.
    let l = center::center_loss(&f, &centers, &y, 0.1)
        .unwrap()
        .double_value(&[]);
    close(l, 0.05 * ((1.0f64 / 9.0) + 49.0 / 9.0) / 2.0, 1e-6);
}
