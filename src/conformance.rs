//! Conformance fixtures: replaying transcripts against any host.

use std::process::ExitCode;

use crate::datadir::DataDir;

/// `openwork-host conformance` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn main(_args: Args, _data_dir: &DataDir) -> anyhow::Result<ExitCode> {
    Ok(ExitCode::SUCCESS)
}
