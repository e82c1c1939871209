//! What the plugin's end-to-end tests share.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use kube_failover_lab::harness::control_plane;

/// `kubectl failover ARGS`: kubectl finding the plugin on PATH (the one this build made,
/// and the pinned tools), with the control plane's admin kubeconfig.
pub fn kubectl_failover_command(args: &[&str]) -> Command {
    let cp = control_plane();
    let plugin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-failover"))
        .parent()
        .unwrap();
    let path = std::env::join_paths(
        [plugin_dir.to_path_buf(), cp.tools_bin().to_path_buf()]
            .into_iter()
            .chain(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            )),
    )
    .unwrap();
    let mut c = Command::new(cp.tools_bin().join("kubectl"));
    c.arg("failover")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", cp.kubeconfig());
    c
}
