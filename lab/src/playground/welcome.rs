//! What the playground prints once it is ready: how to use it.

use std::path::Path;

use crate::controlplane::{CONTROLLER_NS, CONTROLLER_SA, ControlPlane};

use super::*;

pub(super) fn print_welcome(
    cp: &ControlPlane,
    dir: &Path,
    dir_given: bool,
    state: &State,
    controller_bin: Option<&Path>,
    metrics_addr: std::net::SocketAddr,
) {
    let here = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    let lab = if dir_given {
        format!("kube-failover-lab node --dir {}", dir.display())
    } else {
        "kube-failover-lab node".to_string()
    };
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/playground.yaml");
    let example = example.canonicalize().unwrap_or(example);
    let first = &state.nodes[0];
    println!(
        "\nThe playground is running (control plane ready in {:.1} s). In another terminal:\n",
        cp.startup.as_secs_f64()
    );
    println!("  export KUBECONFIG={}", state.kubeconfig.display());
    match &here {
        Some(here) => println!(
            "  export PATH={}:{}:$PATH",
            cp.tools_bin().display(),
            here.display()
        ),
        None => println!("  export PATH={}:$PATH", cp.tools_bin().display()),
    }
    println!(
        "\nNodes: {} (members of the FailoverCluster {CLUSTER}: label {MEMBER_LABEL}=true; Down 3 s after their last heartbeat).",
        state.nodes.join(", ")
    );
    println!(
        "Namespace {NAMESPACE} (the kubeconfig's default); the cluster allows every namespace."
    );
    let controller = match controller_bin {
        Some(bin) => format!("{} run", bin.display()),
        None => "in this process".to_string(),
    };
    println!(
        "The controller runs ({controller}) as the ServiceAccount {CONTROLLER_NS}/{CONTROLLER_SA} of deploy/kube-failover.yaml;"
    );
    println!(
        "  its log: {}\n  its metrics: http://{metrics_addr}/metrics",
        state.logs.join("kube-failover.log").display()
    );
    if let Some(here) = here
        .as_ref()
        .filter(|h| !h.join("kubectl-failover").is_file())
    {
        let release = if here.ends_with("release") {
            " --release"
        } else {
            ""
        };
        println!(
            "The kubectl plugin is not built beside this binary: cargo build{release} -p kubectl-failover"
        );
    }
    println!("\nThings to try:");
    println!(
        "  kubectl apply -f {}  # db (a VIP, a CSI volume) and web",
        example.display()
    );
    println!("  kubectl get fci -w");
    println!("  kubectl failover status");
    println!("  {lab} kill {first}  # a power cut: its heartbeats and its kubelet stop");
    println!("  kubectl failover history db");
    println!("  {lab} revive {first}");
    println!("  {lab} list");
    println!(
        "\nState in {}; Ctrl-C stops the playground and every process it started.",
        dir.display()
    );
}
