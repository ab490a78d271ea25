//! What an audit records (`audit.json`): every attacked pair with each attack's verified L2,
//! RI (eq. 17) and its heat map, the convergence re-attack, the gradient-masking checks and the
//! transfer check.
use serde::{Deserialize, Serialize};

use crate::attack::ensemble::Attack;
use crate::config::AuditConfig;
use crate::metrics::robustness::Robustness;

/// Each attack's verified L2 on a pair (`None`: it found no success).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberL2 {
    pub cw: Option<f64>,
    /// DDN from x1, from the segment bound, and the best of its random starts.
    pub ddn: Option<f64>,
    pub ddn_segment: Option<f64>,
    pub ddn_random: Option<f64>,
    pub segment: Option<f64>,
    pub pgd: Option<f64>,
}

/// One attacked pair: test-set indices, classes and the smallest perturbation found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairRecord {
    pub source_class: usize,
    pub target_class: usize,
    pub source_index: usize,
    pub target_index: usize,
    /// ||x~ - x1||_2 of the smallest verified success over the ensemble (an upper bound of
    /// the true minimum; every pair has one).
    pub l2: f64,
    /// The same after rounding x~ to 8 bits.
    pub l2_8bit: f64,
    /// D(f(x~), f(x2)) rechecked by a fresh forward pass.
    pub distance: f64,
    pub winner: Attack,
    pub members: MemberL2,
    /// The certified lower bound of the pair's minimal perturbation (`crate::certify`), where
    /// the model has a Lipschitz constant: the true minimum lies in [certified, l2].
    pub certified: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetResult {
    pub attack: String,
    pub eps: f64,
    pub success_rate: f64,
}

/// RI of the convergence subset at one budget multiple.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetPoint {
    pub multiplier: usize,
    pub ri: f64,
    pub ri_8bit: f64,
    /// RI of each attack alone on the subset (`None` if it failed on a whole class pair).
    pub member_ri: Vec<(Attack, Option<f64>)>,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Convergence {
    /// Indices into `pairs` of the re-attacked subset.
    pub pairs: Vec<usize>,
    pub points: Vec<BudgetPoint>,
    /// RI at 1x over RI at the largest multiple, on the subset.
    pub ratio: f64,
    /// `ratio` is within 2% of 1 at a multiple above 1x (false without one: no evidence).
    pub converged: bool,
}

/// Checks for gradient masking (Athalye et al. 2018; Carlini et al. 2019).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskingChecks {
    /// (eps, share of pairs with a verified success at L2 <= eps): must reach 1.
    pub success_vs_budget: Vec<(f64, f64)>,
    /// At every fixed budget: FGSM <= PGD <= the ensemble's success rate.
    pub iterative_beats_single_step: bool,
    /// Mean ||grad_x D(f(x), f(x2))||_2 at x = x1 over the pairs.
    pub input_gradient_norm: f64,
}

/// Attack success rate against budget, as the face-robustness literature reports it (RobFR,
/// Yang et al. 2020), at the audit's threshold T, by PGD with `pgd_steps` steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuccessCurve {
    /// "impersonation" (an impostor pair pushed to D <= T) or "dodging" (a genuine pair that
    /// matched pushed to D > T).
    pub goal: String,
    /// "l2" or "linf".
    pub norm: String,
    /// The pairs attacked.
    pub pairs: usize,
    /// (budget, share of the pairs broken).
    pub points: Vec<(f64, f64)>,
}

/// `audit.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    pub model_id: String,
    pub config: AuditConfig,
    pub threshold: f64,
    pub robustness: Robustness,
    /// The same with every x~ rounded to 8 bits.
    pub robustness_8bit: Robustness,
    /// Pairs on which each attack gave the kept (smallest) perturbation.
    pub wins: Vec<(Attack, usize)>,
    /// Pairs where PGD-L2 at the ensemble's per-pair budget succeeded more than 0.1% below
    /// it (its point is then kept).
    pub pgd_below_budget: usize,
    pub convergence: Convergence,
    pub baselines: Vec<BudgetResult>,
    pub masking: MaskingChecks,
    /// Impersonation on the convergence subset, dodging on as many genuine pairs that match.
    pub success_curves: Vec<SuccessCurve>,
    /// Wall time of the whole audit and of the 1x attack.
    pub seconds: f64,
    pub attack_seconds: f64,
    /// Gradient steps per pair at 1x: CW (all rounds, after early stops), DDN, PGD check.
    pub steps_per_pair: [usize; 3],
    /// The global L2 Lipschitz constant of the certified bound, and RI over the pairs'
    /// certified radii (a lower bound of the true RI, as `robustness` is an upper bound).
    pub lipschitz: Option<f64>,
    pub robustness_certified: Option<Robustness>,
    /// The transfer check (`dvsp audit --transfer-from`), when one was run.
    pub transfer: Option<TransferCheck>,
    pub pairs: Vec<PairRecord>,
}

/// A transfer attack (gradient-masking check, Athalye et al. 2018): the pairs attacked by
/// the ensemble on another model at that model's threshold, each perturbation then scaled
/// along its direction by the least factor in (0, 4] the audited model accepts. If it beats
/// the white-box ensemble, the audited model's gradients mislead its own attack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferCheck {
    pub source_model_id: String,
    pub source_threshold: f64,
    /// The source model's own RI on these pairs.
    pub source_ri: Option<f64>,
    /// Share of the pairs whose source adversarial the audited model accepts unchanged.
    pub success_unscaled: f64,
    /// Pairs with an accepted point along the transferred direction (scale <= 4).
    pub found: usize,
    /// Pairs where that point is more than 0.1% below the white-box ensemble's: must be 0.
    pub below_white_box: usize,
    /// Median over the found pairs of its L2 over the white-box L2.
    pub median_ratio: Option<f64>,
    /// Per pair (in `pairs` order), the transferred L2 (`None`: not accepted up to scale 4).
    pub l2: Vec<Option<f64>>,
}
