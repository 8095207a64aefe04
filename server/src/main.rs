//! `maelab`: the server (`serve`) and the command line client.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use maelab_server::serve::Server;
use maelab_server::settings::ServeSettings;

#[derive(Parser)]
#[command(
    name = "maelab",
    version,
    about = "Self-hosted MAE / Wave-MAE experiment service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the web server and REST API.
    Serve(ServeSettings),
    /// Client commands (submit, runs, cancel, watch, token).
    #[command(flatten)]
    Client(maelab_server::cli::ClientCommand),
}

/// Exit code for usage and connection errors (documented in the README).
const EXIT_USAGE: u8 = 3;

#[tokio::main]
async fn main() -> ExitCode {
    maelab_server::telemetry::init();
    // Usage errors exit 3 (clap's own 2 means "a bar was missed" here).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let result = match cli.command {
        Command::Serve(settings) => serve(settings).await,
        Command::Client(command) => return maelab_server::cli::run(command).await,
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

async fn serve(settings: ServeSettings) -> anyhow::Result<ExitCode> {
    let server = Server::build(settings).await?;
    let addr = server.local_addr()?;
    println!("maelab is up: open http://{addr}/");
    server.run_until_stopped().await?;
    Ok(ExitCode::SUCCESS)
}
