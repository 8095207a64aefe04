//! The `maelab` client commands a CI pipeline uses: `submit`, `runs
//! list|show|export` (also as `export`), `cancel`, `watch`, `study
//! submit|show|export|cancel|retry`, `import` (folders of the official MAE
//! output), and the operator's `token create|list|revoke`. Waiting follows
//! the server's event streams ([`sse`]).
//!
//! Exit codes (documented in `maelab --help` and the README), so a pipeline
//! can branch on them:
//! - 0: done; the run succeeded and met every `--fail-under` bar (a study:
//!   every chain succeeded and every `--fail-unless` claim is supported);
//! - 1: the run failed or was cancelled (a study: chains failed);
//! - 2: the run succeeded but missed a `--fail-under` bar (a study: a
//!   `--fail-unless` claim is not supported);
//! - 3: usage error, invalid config, refused request, or no connection.

mod artifacts;
mod client;
mod follow;
mod import;
pub mod mae_log;
mod runs;
pub mod sse;
mod study;
mod submit;
mod tokens;
mod watch;

use std::process::ExitCode;

use clap::{Args, Subcommand};

pub use client::{ApiError, Client};

/// The run succeeded (and met its bars).
pub const EXIT_OK: u8 = 0;
/// The run failed or was cancelled.
pub const EXIT_RUN_FAILED: u8 = 1;
/// The run succeeded but missed a `--fail-under` bar.
pub const EXIT_BAR_MISSED: u8 = 2;
/// Usage error, invalid config, refused request or no connection.
pub const EXIT_USAGE: u8 = 3;

/// A `--poll`-like number of seconds: finite and not negative (a NaN would
/// reach `Duration::from_secs_f64`, which panics on it).
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(v) => Err(format!(
            "{v} is not a number of seconds (finite, 0 or more)"
        )),
        Err(e) => Err(format!("not a number: {e}")),
    }
}

/// Where the server is and who we are.
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// Server URL.
    #[arg(long, env = "MAELAB_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API token (`maelab token create --name ci`); needed for writes.
    #[arg(long, env = "MAELAB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Shown under `maelab submit --help` and `maelab watch --help`.
const EXIT_CODES: &str = "Exit codes: 0 the run succeeded (and met every --fail-under bar); \
1 the run failed or was cancelled; 2 it succeeded but missed a bar; \
3 usage error, invalid config, refused request or no connection.";

/// The client subcommands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Submit a run from a TOML config; with --wait, wait for it to finish.
    #[command(after_help = EXIT_CODES)]
    Submit(submit::SubmitArgs),
    /// List, show or export runs.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// Print (or write) a run's epoch metrics as CSV, JSON or the MAE
    /// log.txt (`--format mae-log`: the lines an import read, byte for byte).
    Export(runs::ExportArgs),
    /// Import folders of the official MAE output (log.txt, checkpoint-N.pth)
    /// as runs, one per folder; importing a folder again adds nothing.
    #[command(after_help = import::AFTER_HELP)]
    Import(import::ImportArgs),
    /// Cancel a queued or running run.
    Cancel(runs::CancelArgs),
    /// Follow a run: one line per epoch and a progress bar, until it ends.
    #[command(after_help = EXIT_CODES)]
    Watch(watch::WatchArgs),
    /// Submit, follow, show, export, cancel or retry a study (arms x seeds
    /// at equal budgets, compared with confidence intervals).
    #[command(subcommand)]
    Study(study::StudyCommand),
    /// Create, list or revoke API tokens (talks to the database directly).
    #[command(subcommand)]
    Token(tokens::TokenCommand),
    /// Operator commands on the artifact store (migrate, gc).
    #[command(subcommand)]
    Artifacts(artifacts::ArtifactsCommand),
}

/// Run a client command and turn its outcome into the documented exit code.
pub async fn run(command: ClientCommand) -> ExitCode {
    let result = match command {
        ClientCommand::Submit(a) => submit::run(a).await,
        ClientCommand::Runs(c) => runs::run(c).await,
        ClientCommand::Export(a) => runs::export(a).await,
        ClientCommand::Import(a) => import::run(a).await,
        ClientCommand::Cancel(a) => runs::cancel(a).await,
        ClientCommand::Watch(a) => watch::run(a).await,
        ClientCommand::Study(c) => study::run(c).await,
        ClientCommand::Token(c) => tokens::run(c).await,
        ClientCommand::Artifacts(c) => artifacts::run(c).await,
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_finite_and_not_negative() {
        assert_eq!(parse_seconds("0.05"), Ok(0.05));
        assert_eq!(parse_seconds("0"), Ok(0.0));
        for bad in ["nan", "inf", "-1", "1e999", "5s", ""] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_nan_poll_is_a_usage_error() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(subcommand)]
            command: ClientCommand,
        }
        for args in [
            &["maelab", "submit", "run.toml", "--poll", "nan"][..],
            &["maelab", "study", "submit", "s.toml", "--poll", "NaN"],
            &["maelab", "watch", "r", "--poll", "nan"],
            &["maelab", "import", "d", "--follow", "--poll=-1"],
            &["maelab", "import", "d", "--follow", "--stall", "inf"],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{args:?}: {e}"
            );
        }
        assert!(
            Cli::try_parse_from(["maelab", "import", "d", "--follow", "--poll", "0.5"]).is_ok()
        );
    }
}
