//! `dvsp audit`: the feature-space robustness audit of a model (RI, eq. 17), with the heat map
//! of H_{k,l} (Figure 4) and a grid of adversarial samples (Figure 5).
use std::path::PathBuf;

use dvsp_core::audit::outputs::{audit, audit_pair, output_name, AuditArgs};
use dvsp_core::data::DataArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory (evaluated: the threshold comes from its card).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub audit: AuditArgs,
    /// Pair mode: attack this photo towards `--target` and back instead of sampling pairs
    /// (face models find and crop the face first).
    #[arg(long, requires = "target")]
    pub probe: Option<PathBuf>,
    /// Pair mode: the photo `--probe` is attacked towards (and the other way round).
    #[arg(long, requires = "probe")]
    pub target: Option<PathBuf>,
    /// Pair mode on a face model: also attack the probe towards this many faces of the LFW
    /// subset (the impostor pool) in the same batch.
    #[arg(long, default_value_t = 0, requires = "probe")]
    pub impostors: i64,
    /// Transfer check: attack the same pairs on this other model (at its own threshold of
    /// the same kind) and measure its perturbations on the audited one.
    #[arg(long, conflicts_with = "probe")]
    pub transfer_from: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if let (Some(probe), Some(target)) = (&a.probe, &a.target) {
        let results = audit_pair(&a.model, probe, target, a.impostors, &a.audit)?;
        for r in &results {
            println!(
                "{} -> {}: D {:.4} -> {:.4} (T = {:.4}), L2 {:.3} (RMS per pixel value {:.4}, by {}), L2 at 8 bits {:.3}",
                r.probe.display(),
                r.target.display(),
                r.distance_before,
                r.distance_after,
                r.threshold,
                r.l2,
                r.rms,
                r.winner.name(),
                r.l2_8bit
            );
        }
        if a.impostors > 0 {
            let mut l2: Vec<f64> = results[2..].iter().map(|r| r.l2).collect();
            l2.sort_by(f64::total_cmp);
            println!(
                "impostor pool: {} LFW faces, L2 min {:.3} median {:.3}",
                l2.len(),
                l2[0],
                l2[l2.len() / 2]
            );
        }
        println!(
            "wrote {} and {} (first four pairs)",
            a.model.join("attack_pair.json").display(),
            a.model.join("attack_pair.png").display()
        );
        return Ok(());
    }
    let r = audit(
        &a.model,
        &a.data,
        &a.audit.config(),
        a.transfer_from.as_deref(),
    )?;
    let fmt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
    println!(
        "{}: RI {} (8 bits: {}) at T = {:.4} ({}) over {} pairs, L2 median {} mean {}; {:.0}s ({:.0}s attacking; steps per pair: CW {}, DDN {}, PGD check {})",
        a.model.display(),
        fmt(r.robustness.ri),
        fmt(r.robustness_8bit.ri),
        r.threshold,
        r.config.threshold_at,
        r.pairs.len(),
        fmt(r.robustness.median_l2),
        fmt(r.robustness.mean_l2),
        r.seconds,
        r.attack_seconds,
        r.steps_per_pair[0],
        r.steps_per_pair[1],
        r.steps_per_pair[2],
    );
    let wins: Vec<String> = r
        .wins
        .iter()
        .map(|(a, n)| format!("{} {n}", a.name()))
        .collect();
    println!(
        "    pairs won: {}; PGD below the ensemble's budget: {} pairs",
        wins.join(", "),
        r.pgd_below_budget
    );
    let c = &r.convergence;
    let points: Vec<String> = c
        .points
        .iter()
        .map(|p| format!("{}x {:.3} ({:.0}s)", p.multiplier, p.ri, p.seconds))
        .collect();
    println!(
        "    convergence on {} pairs: RI {}; 1x / {}x = {:.4}: {}",
        c.pairs.len(),
        points.join(", "),
        c.points.last().map_or(1, |p| p.multiplier),
        c.ratio,
        if c.converged {
            "converged"
        } else if c.points.len() == 1 {
            "NOT CONVERGED (not checked: no --convergence-budgets)"
        } else {
            "NOT CONVERGED (more than 2% apart)"
        }
    );
    for b in &r.baselines {
        println!(
            "    {} at eps {}: success {:.1}%",
            b.attack,
            b.eps,
            b.success_rate * 100.0
        );
    }
    for c in &r.success_curves {
        let pts: Vec<String> = c
            .points
            .iter()
            .map(|(e, s)| match c.norm.as_str() {
                "linf" => format!("{:.0}/255 {:.1}%", e * 255.0, s * 100.0),
                _ => format!("{e} {:.1}%", s * 100.0),
            })
            .collect();
        println!(
            "    {} success against {} budget ({} pairs): {}",
            c.goal,
            c.norm,
            c.pairs,
            pts.join(", ")
        );
    }
    println!(
        "    gradient masking: FGSM <= PGD <= ensemble at every budget: {}; mean ||grad_x D|| at x1 {:.4}",
        r.masking.iterative_beats_single_step, r.masking.input_gradient_norm
    );
    match (&r.robustness_certified, r.lipschitz) {
        (Some(c), Some(lip)) => println!(
            "    certified lower bound (global Lipschitz constant {lip:.4e}): RI {} ({}x below the attacked RI); the true RI lies in [{}, {}]",
            fmt(c.ri),
            c.ri.zip(r.robustness.ri)
                .map_or("-".into(), |(c, a)| format!("{:.1}", a / c)),
            fmt(c.ri),
            fmt(r.robustness.ri)
        ),
        _ => println!("    certified lower bound: none (computed for the small CNN only)"),
    }
    if let Some(t) = &r.transfer {
        println!(
            "    transfer from {}: {:.1}% of its perturbations accepted unchanged, {} of {} pairs found by scaling (median {} x the white-box L2), {} below the white-box ensemble{}",
            t.source_model_id,
            t.success_unscaled * 100.0,
            t.found,
            t.l2.len(),
            t.median_ratio.map_or("-".into(), |m| format!("{m:.2}")),
            t.below_white_box,
            if t.below_white_box == 0 { "" } else { ": GRADIENT MASKING SUSPECTED" }
        );
    }
    println!(
        "wrote {}, heatmap, ri_vs_budget and adversarial images in {}",
        output_name("audit", "json", r.config.threshold_at),
        a.model.display()
    );
    Ok(())
}
