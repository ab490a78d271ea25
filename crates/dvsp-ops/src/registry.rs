//! The model registry's use cases: register a model directory, judge a candidate with the
//! promotion gate against the serving model, promote or refuse it, every action recorded with
//! who and when.
use anyhow::Context;

use dvsp_core::registry::{gate, GatePolicy, GateReport};
use dvsp_custody::store::{ModelRow, Store, StoreError};

#[derive(Debug, Clone, clap::Args)]
pub struct GateArgs {
    /// The operating point compared (the service's --fmr; the cards hold 1e-2, 1e-3, 1e-4).
    #[arg(long, env = "DVSP_FMR", default_value_t = 1e-3)]
    pub fmr: f64,
    /// The card's held-out set compared.
    #[arg(long, default_value = "test")]
    pub test_set: String,
    /// How much higher the candidate's FNMR may be, absolute (0.005: half a point).
    #[arg(long, default_value_t = 0.005)]
    pub max_fnmr_loss: f64,
    /// How much lower the candidate's RI may be, relative (0.05: 5%).
    #[arg(long, default_value_t = 0.05)]
    pub max_ri_loss: f64,
}

impl GateArgs {
    /// The tolerances, checked: an FMR in (0, 1), an FNMR loss in [0, 1], an RI loss in [0, 1).
    pub fn policy(&self) -> anyhow::Result<GatePolicy> {
        anyhow::ensure!(
            self.fmr > 0.0 && self.fmr < 1.0,
            "--fmr must be within (0, 1)"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.max_fnmr_loss),
            "--max-fnmr-loss must be within [0, 1]"
        );
        anyhow::ensure!(
            (0.0..1.0).contains(&self.max_ri_loss),
            "--max-ri-loss must be within [0, 1)"
        );
        Ok(GatePolicy {
            fmr: self.fmr,
            test_set: self.test_set.clone(),
            max_fnmr_loss: self.max_fnmr_loss,
            max_ri_loss: self.max_ri_loss,
        })
    }
}

/// The acting user: `--by`, else $USER; no control characters.
pub fn actor(by: &Option<String>) -> anyhow::Result<String> {
    let who = by
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into());
    anyhow::ensure!(
        !who.is_empty() && who.len() <= 128 && !who.chars().any(char::is_control),
        "--by: 1-128 characters, no control characters"
    );
    Ok(who)
}

/// The card of a registered model, read from its models directory.
pub fn card_of(row: &ModelRow) -> anyhow::Result<dvsp_core::artifact::ModelCard> {
    serde_json::from_value(row.card.clone())
        .with_context(|| format!("the registered card of {} does not parse", row.id))
}

/// Registers the model directory `model`: loads it (weights against the card's hash, every
/// tensor's shape) before anything is written, copies it into the models directory, records
/// it as a candidate. Returns its id.
pub async fn register(
    store: &Store,
    model: &std::path::Path,
    models_dir: &std::path::Path,
    who: &str,
) -> anyhow::Result<String> {
    let m = dvsp_core::artifact::load(model, tch::Device::Cpu)?;
    let id = m.card.model_id.clone();
    let dir = dvsp_core::registry::store_files(model, models_dir, &id)?;
    let card = std::fs::read(dir.join(dvsp_core::artifact::CARD))?;
    let sha = dvsp_core::registry::sha256_hex(&card);
    let card = String::from_utf8(card).context("model.json is not UTF-8")?;
    match store.register_model(&id, &card, &sha, who).await {
        Ok(()) => println!("registered {id} as a candidate ({})", dir.display()),
        Err(StoreError::Conflict) => anyhow::bail!("model {id} is registered already"),
        Err(e) => return Err(e.into()),
    }
    Ok(id)
}

/// A gate's decision on a candidate, printed but not yet applied.
pub struct Judged {
    pub report: GateReport,
    /// The model the candidate was compared with: a promotion retires exactly it.
    serving: Option<ModelRow>,
}

/// Applies the gate to candidate `id` against the serving model, prints the report, and
/// promotes it (passed or `force`) or records the refusal. Returns the report.
pub async fn decide(
    store: &Store,
    id: &str,
    g: &GateArgs,
    force: bool,
    who: &str,
) -> anyhow::Result<GateReport> {
    let judged = judge(store, id, g, force).await?;
    apply(store, id, &judged, who).await?;
    Ok(judged.report)
}

/// The gate's decision on candidate `id` against the serving model, its report printed.
pub async fn judge(store: &Store, id: &str, g: &GateArgs, force: bool) -> anyhow::Result<Judged> {
    let policy = g.policy()?;
    let row = store
        .model(id)
        .await?
        .with_context(|| format!("no registered model {id:?}"))?;
    let candidate = card_of(&row)?;
    let serving = store.serving_model().await?;
    anyhow::ensure!(
        serving.as_ref().is_none_or(|s| s.id != id),
        "model {id} serves already"
    );
    let serving_card = serving.as_ref().map(card_of).transpose()?;
    let report = gate(serving_card.as_ref(), &candidate, &policy, force);
    print_report(&report);
    Ok(Judged { report, serving })
}

/// Promotes `id` as `judged` decided (retiring the model it was compared with, only if that
/// one still serves) or records the refusal.
pub async fn apply(store: &Store, id: &str, judged: &Judged, who: &str) -> anyhow::Result<()> {
    let (report, serving) = (&judged.report, &judged.serving);
    // Templates are per model: say what the promotion leaves to migrate.
    if let (Some(old), true) = (serving, report.promoted()) {
        let without = store.count_subjects_without(id).await?;
        if without > 0 {
            let images = store.count_images_to_reembed(id).await?;
            let (_, pending) = store.pending_subjects(id, 0).await?;
            println!(
                "migration: {without} subjects have no template of {id}; replicas verify them \
                 with {} (kept loaded as the previous model) and identify does not find them, \
                 until `dvsp reembed --to {id}` embeds their {images} retained images; {pending} \
                 of them have no retained image and must be enrolled again (`dvsp models pending`)",
                old.id
            );
        }
    }
    let json = serde_json::to_value(report)?;
    if report.promoted() {
        let before = serving.as_ref().map(|s| s.id.as_str());
        match store.promote_model(id, before, who, &json).await {
            Ok(()) => println!(
                "promoted {id}{}",
                before.map_or(String::new(), |b| format!(" (retired {b})"))
            ),
            Err(StoreError::Conflict) => anyhow::bail!(
                "the serving model changed while the gate ran (another promotion or a \
                 retirement committed); nothing was changed: run promote again"
            ),
            Err(e) => return Err(e.into()),
        }
    } else {
        match store.refuse_model(id, who, &json).await {
            Ok(()) => {}
            Err(StoreError::Conflict) => {
                anyhow::bail!("model {id} was promoted meanwhile; its report was kept")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The serving model's card, if one serves.
pub async fn serving_card(store: &Store) -> anyhow::Result<Option<dvsp_core::artifact::ModelCard>> {
    store
        .serving_model()
        .await?
        .as_ref()
        .map(card_of)
        .transpose()
}

/// A rate as a percentage, `-` when unmeasured.
pub fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{:.3}%", 100.0 * x))
}

/// A figure to 4 decimals, `-` when unmeasured.
pub fn num(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:.4}"))
}

/// The gate report as the operator reads it: both models side by side, each check, the
/// decision.
pub fn print_report(r: &GateReport) {
    let s = r.serving.as_ref();
    println!(
        "gate: candidate {} against serving {}",
        r.candidate.model_id,
        s.map_or("(none)", |s| &s.model_id)
    );
    println!("  {:<28} {:>18} {:>18}", "", "candidate", "serving");
    let row = |what: &str, c: String, s: String| println!("  {what:<28} {c:>18} {s:>18}");
    row(
        "method",
        r.candidate.method.clone(),
        s.map_or("-".into(), |s| s.method.clone()),
    );
    row(
        &format!("EER ({})", r.policy.test_set),
        pct(r.candidate.eer),
        pct(s.and_then(|s| s.eer)),
    );
    row(
        &format!("FNMR at FMR {}", r.policy.fmr),
        pct(r.candidate.fnmr),
        pct(s.and_then(|s| s.fnmr)),
    );
    row(
        "RI (eq. 17)",
        num(r.candidate.ri),
        num(s.and_then(|s| s.ri)),
    );
    for c in &r.checks {
        println!(
            "  [{}] {}: {}",
            if c.passed { "pass" } else { "FAIL" },
            c.what,
            c.detail
        );
    }
    println!(
        "decision: {} ({})",
        if r.promoted() { "promote" } else { "refuse" },
        r.reason
    );
}
