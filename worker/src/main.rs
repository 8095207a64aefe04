//! `maelab-worker`: doctor, train, bench, data and the queue worker, each a
//! module of `maelab_worker::cli`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use maelab_worker::cli;

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
    Doctor(cli::doctor::Args),
    /// Train one run from a config file, without the server.
    Train(cli::train::Args),
    /// Measure images/second and peak memory of full training steps.
    Bench(cli::bench::Args),
    /// Measure augmented images/second of the CPU loader and of the device path.
    BenchAugment(cli::bench_augment::Args),
    /// Upload and download a checkpoint-sized file through the artifact store, measuring peak RSS growth.
    BenchStore(cli::bench_store::Args),
    /// Fetch or prepare datasets.
    #[command(subcommand)]
    Data(cli::data::Command),
    /// Claim jobs from PostgreSQL and train them until stopped.
    Run(cli::run::Args),
    /// Measure queue throughput and enqueue-to-start latency with load-test jobs.
    QueueBench(cli::queue_bench::Args),
}

fn main() -> ExitCode {
    maelab_worker::allocator::keep_settings();
    maelab_worker::telemetry::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Doctor(args) => cli::doctor::main(args),
        Command::Train(args) => cli::train::main(args),
        Command::Bench(args) => cli::bench::main(args),
        Command::BenchAugment(args) => cli::bench_augment::main(args),
        Command::BenchStore(args) => cli::bench_store::main(args),
        Command::Data(cmd) => cli::data::main(cmd),
        Command::Run(args) => cli::run::main(args),
        Command::QueueBench(args) => cli::queue_bench::main(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // One line a person can act on, no backtrace.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
