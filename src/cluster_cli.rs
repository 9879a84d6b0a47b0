//! `starling cluster nodes | channels | drain NODE_ID | undrain NODE_ID | put-certificate NAME
//! CHAIN KEY | certificate NAME`: operator commands
//! against the registry named by the same configuration as `serve` (file, environment).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use cluster::{NodeId, NodeInfo, Registry};

use crate::config::Config;
use crate::registry::{self, Backend};

/// Flags of `starling cluster`.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// TOML configuration file (the one `serve` reads).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// List the live nodes: id, roles, region, host, load, draining.
    Nodes,
    /// List the channels and the node that holds each one's publisher.
    Channels,
    /// Stop placing newcomers on a node.
    Drain {
        /// The node's id.
        node_id: String,
    },
    /// Place newcomers on a node again.
    Undrain {
        /// The node's id.
        node_id: String,
    },
    /// Store the TLS certificate for a public name, so any front can serve it (the key is
    /// read from its file, and checked to belong to the certificate).
    PutCertificate {
        /// The public host name, e.g. live.example.com.
        name: String,
        /// The certificate chain, PEM, leaf first.
        chain_file: PathBuf,
        /// Its private key, PEM.
        key_file: PathBuf,
    },
    /// Print the certificate chain stored for a public name (never its key).
    Certificate {
        /// The public host name.
        name: String,
    },
}

pub fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    tokio::runtime::Runtime::new()?.block_on(async move {
        let backend = registry::open(
            config.redis_url.as_deref(),
            config.redis_tls_bundle_url.as_ref(),
            config.redis_tls.as_ref(),
            config.redis_insecure,
            registry::Connect::Within(Duration::from_secs(5)),
        )
        .await?;
        let Backend::Redis(registry) = backend else {
            bail!("no cluster registry is configured: set redis_url (or STARLING_REDIS_URL)");
        };
        command(&*registry, args.command, args.json).await
    })
}

async fn command(
    registry: &impl Registry,
    command: ClusterCommand,
    json: bool,
) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Nodes => {
            let nodes = registry.nodes().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&nodes)?);
            } else {
                print!("{}", nodes_table(&nodes));
            }
        }
        ClusterCommand::Channels => {
            let channels = registry.channels().await?;
            if json {
                let list: Vec<_> = channels
                    .iter()
                    .map(|(c, n)| serde_json::json!({"channel": c, "node": n}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<32} NODE", "CHANNEL");
                for (channel, node) in channels {
                    println!("{:<32} {node}", channel.to_string());
                }
            }
        }
        ClusterCommand::Drain { node_id } | ClusterCommand::Undrain { node_id }
            if NodeId::new(&node_id).is_none() =>
        {
            bail!("{node_id:?} is not a node id");
        }
        ClusterCommand::Drain { node_id } => set_draining(registry, &node_id, true).await?,
        ClusterCommand::Undrain { node_id } => set_draining(registry, &node_id, false).await?,
        ClusterCommand::PutCertificate {
            name,
            chain_file,
            key_file,
        } => {
            let read = |path: &PathBuf| {
                std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))
            };
            let certificate = cluster::Certificate::from_pem(read(&chain_file)?, read(&key_file)?)
                .with_context(|| format!("certificate for {name}"))?;
            registry.put_certificate(&name, certificate).await?;
            println!("{name}: certificate stored");
        }
        ClusterCommand::Certificate { name } => match registry.certificate(&name).await? {
            Some(certificate) => print!("{}", certificate.chain_pem),
            None => bail!("no certificate stored for {name}"),
        },
    }
    Ok(())
}

async fn set_draining(registry: &impl Registry, id: &str, draining: bool) -> anyhow::Result<()> {
    let node = NodeId::new(id).context("node id")?;
    if !registry.set_draining(&node, draining).await? {
        bail!("no live node {id}");
    }
    println!(
        "{id}: {}",
        if draining {
            "draining"
        } else {
            "taking newcomers"
        }
    );
    Ok(())
}

fn nodes_table(nodes: &[NodeInfo]) -> String {
    let mut out = format!(
        "{:<20} {:<24} {:<10} {:<28} {:>7} {:>6} {}\n",
        "ID", "ROLES", "REGION", "HOST", "VIEWERS", "INGEST", "DRAINING"
    );
    for n in nodes {
        let roles: Vec<String> = n
            .roles
            .iter()
            .map(|r| format!("{r:?}").to_lowercase())
            .collect();
        out.push_str(&format!(
            "{:<20} {:<24} {:<10} {:<28} {:>7} {:>6} {}\n",
            n.id.to_string(),
            roles.join(","),
            n.region,
            n.public_host,
            n.load.viewers,
            n.load.ingest_streams,
            if n.draining { "yes" } else { "no" }
        ));
    }
    out
}
