use std::process::ExitCode;

use crate::doctor;

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Print the `--device` of each worker to start on this host, one a line
    /// (one per CUDA device, else `cpu`); `scripts/start` reads it.
    #[arg(long, conflicts_with = "json")]
    worker_devices: bool,
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let report = doctor::report();
    if args.worker_devices {
        for device in &report.worker_devices {
            println!("{device}");
        }
    } else if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}
