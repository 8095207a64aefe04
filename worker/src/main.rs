use anyhow::Result;
use clap::{Parser, Subcommand};

/// The maelab worker: one process per GPU (or the CPU).
#[derive(Parser)]
#[command(name = "maelab-worker", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the torch version, CUDA availability, device count and CPU threads.
    Doctor {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Doctor { json } => {
            let report = maelab_worker::doctor::report();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
        }
    }
    Ok(())
}
