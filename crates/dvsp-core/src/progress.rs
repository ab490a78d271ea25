//! Progress of long jobs (training, evaluation, audits, re-embedding, key rotation).
use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar for a long job: hidden when stderr is not a terminal.
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:30}} {{pos}}/{{len}} [{{elapsed_precise}}<{{eta_precise}}] {{msg}}"
        ))
        .expect("static template"),
    );
    pb
}

/// A progress bar counting `len` items with `unit` after the count (e.g. "templates
/// re-issued"): hidden when stderr is not a terminal.
pub fn counter(len: u64, unit: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {unit} ({{eta}} left)"))
            .expect("static template"),
    );
    pb
}
