//! The client side: commands people run against an access (also as the kubectl plugin
//! `kubectl-inference_access`).

/// Client commands. Filled in by the CLI work (issue 4).
#[derive(clap::Subcommand)]
pub enum Command {}

pub fn run(command: Command) -> Result<(), String> {
    match command {}
}
