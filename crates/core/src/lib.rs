//! kube-failover's core: what every product of the project shares, with no I/O (no client,
//! no runtime, no network, no files).
//!
//! - [`api`]: the `kube-failover.io/v1alpha1` types, and the CRDs generated from them ([`crd`]).
//! - [`decide`]: what to do, as a pure function of the spec, the observed cluster and the clock.
//! - [`rules`]: the rules that judge the cluster's facts (membership, owners, pinned volumes),
//!   the same for the controller that acts and for `validate` that reports.
//! - [`validate`]: `kubectl failover validate`'s judgements of gathered facts, each a PASS,
//!   WARN or FAIL with what to do.
//!
//! The controller (`kube-failover-controller`), the node agent (`kube-failover-agent`) and
//! the plugin (`kubectl-failover`) build on it; see ARCHITECTURE.md.

pub mod api;
pub mod crd;
pub mod decide;
pub mod kinds;
pub mod rules;
pub mod validate;
