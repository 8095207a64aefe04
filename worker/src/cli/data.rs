use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum Command {}

pub fn main(command: Command) -> anyhow::Result<ExitCode> {
    match command {}
}
