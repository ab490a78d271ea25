mod cli;

use std::io::IsTerminal;

use clap::Parser;

fn main() -> std::process::ExitCode {
    dvsp_core::artifact::set_source_commit(env!("DVSP_GIT_COMMIT"));
    let cli = cli::Cli::parse();
    init_logs(cli.log_format);
    match cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cause_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs on stderr: text, in colour only on a terminal and never with NO_COLOR set
/// (<https://no-color.org>), so a file, CI or `kubectl logs` gets plain text; or one JSON object
/// per line for log shippers. `RUST_LOG` filters (default: warnings, and dvsp's info).
fn init_logs(format: cli::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,dvsp=info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Json => logs.json().init(),
        cli::LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            logs.with_ansi(colour).init()
        }
    }
}

/// The error and its causes, each said once: a cause the message before it already ends with
/// (`...: cause`, an error that prints its source) is not repeated.
fn cause_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.is_empty() {
            out = text;
        } else if !out.ends_with(&format!(": {text}")) {
            out = format!("{out}: {text}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::cause_chain;

    #[test]
    fn a_cause_the_message_already_says_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        // An error that prints its source and also returns it from `source()`.
        #[derive(Debug, thiserror::Error)]
        #[error("model.json: {0}")]
        struct Read(#[source] std::io::Error);
        let e = anyhow::Error::new(Read(io)).context("loading the model");
        assert_eq!(
            cause_chain(&e),
            "loading the model: model.json: No such file"
        );
        // A cause that only happens to end the message is still said.
        let e = anyhow::anyhow!("1").context("--threads must be at least 1");
        assert_eq!(cause_chain(&e), "--threads must be at least 1: 1");
    }
}
