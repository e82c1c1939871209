//! `kubectl failover validate`: what Test-Cluster checks before WSFC hosts a role, for
//! kube-failover: the CRDs, the controller and its rights, the Kubernetes version, the
//! members' heartbeats and clocks, each cluster's quorum and address pools, whether each
//! instance's owners, claims and virtual IPs can follow it to another node, and whether its
//! cluster grants its namespace those addresses and its external hostname.
//!
//! Everything is read first ([`gather`], the only I/O), then judged by the core
//! (`kube_failover_core::validate::judge`, pure), each check saying PASS, WARN or FAIL and
//! what to do about it.

mod gather;

use std::process::ExitCode;

use anyhow::Result;
use kube::Client;

pub use gather::gather;
use kube_failover_core::validate::{ValidateReport, judge, render};

use super::Output;

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Instances of this namespace, and the clusters they use (default: the kubeconfig
    /// context's namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Instances of every namespace, and every cluster.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// `json` prints the checks for scripts (`yaml` too); `table` and `wide` print one line
    /// per check.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
    /// The namespace of the controller's leader Lease: its release namespace (the chart's
    /// `--namespace`; the controller's `POD_NAMESPACE`).
    #[arg(long, default_value = "kube-failover")]
    pub controller_namespace: String,
    /// The name of the leader Lease (the chart's `leaderElection.leaseName`).
    #[arg(long, default_value = "kube-failover-leader")]
    pub lease_name: String,
    /// The controller's ServiceAccount as `namespace/name`, whose rights are checked. By
    /// default found from the leader's pod, else from the controller's Deployment in
    /// `--controller-namespace`.
    #[arg(long, value_name = "NS/NAME")]
    pub controller_service_account: Option<String>,
}

/// Reads the cluster, judges it, prints the report; exit status 1 when any check fails.
pub async fn run(client: Client, args: ValidateArgs) -> Result<ExitCode> {
    let report = ValidateReport::new(judge(&gather(&client, &args).await?));
    match args.output {
        Output::Table | Output::Wide => print!("{}", render(&report)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&report)?),
    }
    Ok(if report.failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
