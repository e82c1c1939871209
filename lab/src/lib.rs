//! The kube-failover lab: everything that tests, demonstrates and measures the controller,
//! and nothing that ships with it.
//!
//! - [`controlplane`]: a real control plane on loopback (etcd, kube-apiserver,
//!   kube-controller-manager, kube-scheduler) with KWOK's simulated nodes, built from pinned
//!   Go modules by `lab/tools/install.sh`, and a stand-in for a CSI attacher.
//! - [`harness`]: what the integration tests share (one control plane per test binary, a
//!   namespace per test, controller replicas, waits on watches).
//! - [`demo`], [`bench`], [`chaos`] and [`playground`]: the `kube-failover-lab` commands.
//! - [`simruntime`]: a simulated container runtime (CRI over a unix socket) per simulated
//!   node, for node agents to stop containers in and the chaos run to count them.

pub mod bench;
pub mod chaos;
pub mod containerd;
pub mod controlplane;
pub mod demo;
pub mod harness;
pub mod netlab;
pub mod playground;
pub mod simruntime;
