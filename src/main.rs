use clap::{Parser, Subcommand};

/// Failover cluster instances for Kubernetes.
#[derive(Parser)]
#[command(name = "kube-failover", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML, or write them to a directory.
    Crd {
        /// Write one file per CRD into this directory (the repository keeps them in crds/).
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
    },
    /// Print the version.
    Version,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd { out_dir: None } => print!("{}", kube_failover::crd::render()?),
        Command::Crd { out_dir: Some(dir) } => kube_failover::crd::write_dir(&dir)?,
        Command::Version => println!("kube-failover {}", env!("CARGO_PKG_VERSION")),
    }
    Ok(())
}
