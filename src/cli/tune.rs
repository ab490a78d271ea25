//! `dvsp tune --method M`: hyperparameters chosen on a validation split carved from the
//! training images (`dvsp_core::tune`), never on the test split; writes `OUT/M/tune.json` and
//! `tune.md`, which `dvsp reproduce --tuned OUT` reads.
use dvsp_core::tune::{tune_job, TuneArgs};

pub fn run(a: TuneArgs) -> anyhow::Result<()> {
    let (_, md) = tune_job(&a)?;
    print!("{md}");
    Ok(())
}
