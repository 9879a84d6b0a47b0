//! `starling`: the one binary. Thin: parse the CLI, load config, start components, shut down.

mod cluster_cli;
mod config;
mod fronts;
mod logging;
mod node;
mod registry;
mod serve;

use clap::{Parser, Subcommand};

/// Starling: a live-media cluster. Streamers push RTMP; viewers watch in a browser over WebRTC.
#[derive(Parser)]
#[command(name = "starling", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: every role in one process by default (RTMP/SRT/FTL/WHIP ingest, WebRTC SFU,
    /// MoQ relay to other nodes, HTTP player and API), or those `--roles` names.
    Serve(Box<serve::ServeArgs>),
    /// Operator commands against the cluster registry: nodes, channels, drain, undrain.
    Cluster(cluster_cli::ClusterArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Cluster(args) => cluster_cli::run(args),
    }
}
