//! kube-failover: failover cluster instances for Kubernetes.
//!
//! A failover cluster instance groups a network name, virtual IPs, storage claims and a
//! workload; the controller keeps it online on one healthy node and moves it, fenced and in
//! order, when that node fails.

pub mod api;
pub mod bench;
pub mod controller;
pub mod controlplane;
pub mod crd;
pub mod decide;
pub mod demo;
