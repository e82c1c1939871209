//! kube-failover: failover cluster instances for Kubernetes.
//!
//! A failover cluster instance groups a network name, virtual IPs, storage claims and a
//! workload; the controller keeps it online on one healthy node and moves it, fenced and in
//! order, when that node fails.
//!
//! - [`api`]: the `kube-failover.io/v1alpha1` types, and the CRDs generated from them ([`crd`]).
//! - [`decide`]: what to do, as a pure function of the spec, the observed cluster and the clock.
//! - [`agent`]: the node agent (`kube-failover agent`): virtual IPs on the owner's
//!   interface, a one-second heartbeat Lease, and self-fencing.
//! - [`controller`]: observes through watches, applies what `decide` returns, and serves
//!   `/metrics`, `/healthz` and `/readyz`.
//! - [`cli`]: the operator's verbs, `kubectl failover …` (the `kubectl-failover` plugin) and
//!   `kube-failover …`.
//!
//! The local control plane, the demo and the benchmark are in the `kube-failover-lab` crate,
//! which never ships.

pub mod agent;
pub mod api;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod decide;
