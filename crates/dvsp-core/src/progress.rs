//! Progress of long jobs (training, evaluation, audits, re-embedding, key rotation): a bar on
//! a terminal; without one (a log file, CI, `kubectl logs`) a log line at most every
//! [`LOG_EVERY`] with the count, the rate and the time left, and one at the end.
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often a job without a terminal logs its progress.
pub const LOG_EVERY: Duration = Duration::from_secs(30);

/// A job's progress: `len` steps of `what`.
pub struct Progress {
    bar: ProgressBar,
    what: String,
    /// Without a terminal: when the job started and when it last logged.
    log: Option<Mutex<(Instant, Instant)>>,
}

impl Progress {
    fn new(len: u64, what: &str, template: &str) -> Progress {
        let bar = ProgressBar::new(len);
        bar.set_style(ProgressStyle::with_template(template).expect("static template"));
        let now = Instant::now();
        let log = bar.is_hidden().then(|| Mutex::new((now, now)));
        Progress {
            bar,
            what: what.to_string(),
            log,
        }
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        self.log_if_due(false);
    }

    pub fn set_message(&self, msg: impl Into<std::borrow::Cow<'static, str>>) {
        self.bar.set_message(msg);
    }

    pub fn tick(&self) {
        self.bar.tick();
    }

    pub fn finish(&self) {
        // Logged first: finishing moves the bar's position to its length.
        self.log_if_due(true);
        self.bar.finish();
    }

    pub fn finish_and_clear(&self) {
        self.log_if_due(true);
        self.bar.finish_and_clear();
    }

    fn log_if_due(&self, end: bool) {
        let Some(log) = &self.log else { return };
        let mut at = log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if !end && now.duration_since(at.1) < LOG_EVERY {
            return;
        }
        at.1 = now;
        let (done, len) = (self.bar.position(), self.bar.length().unwrap_or(0));
        let secs = now.duration_since(at.0).as_secs_f64();
        let rate = done as f64 / secs.max(1e-9);
        let left = if done > 0 {
            len.saturating_sub(done) as f64 / rate
        } else {
            f64::NAN
        };
        tracing::info!(
            job = %self.what,
            done,
            of = len,
            per_second = (rate * 100.0).round() / 100.0,
            elapsed_s = secs.round(),
            left_s = left.round(),
            status = %self.bar.message(),
            "{}",
            if end { "finished" } else { "progress" }
        );
    }
}

/// A bar for a long job, its steps counted against `len`.
pub fn progress_bar(len: u64, what: &str) -> Progress {
    Progress::new(
        len,
        what,
        &format!("{what} {{bar:30}} {{pos}}/{{len}} [{{elapsed_precise}}<{{eta_precise}}] {{msg}}"),
    )
}

/// A bar counting `len` items with `unit` after the count (e.g. "templates re-issued"; it may
/// hold `{msg}`, the message set later), logged as job `what`.
pub fn counter(len: u64, what: &str, unit: &str) -> Progress {
    Progress::new(
        len,
        what,
        &format!("{{bar:40}} {{pos}}/{{len}} {unit} ({{eta}} left)"),
    )
}
