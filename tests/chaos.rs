//! A short chaos run on the real control plane (`kube-failover-lab chaos`, see
//! `lab/src/chaos/mod.rs`): faults of every kind at random from a fixed seed, against two
//! processes of the binary that ships and a node agent of it on every simulated node,
//! judged by an independent watcher of the invariants of `docs/safety.md`, which counts the
//! running copies of each instance at the nodes' simulated container runtimes. Here, not
//! in the lab, because only this package's tests can name the controller binary
//! (`CARGO_BIN_EXE_kube-failover`).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use kube_failover_lab::chaos::{ChaosArgs, FaultKind, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_minutes_of_chaos_break_no_invariant() {
    let summary = run(ChaosArgs {
        seed: Some(7),
        minutes: 2.0,
        instances: 8,
        nodes: 6,
        controller_bin: Some(PathBuf::from(env!("CARGO_BIN_EXE_kube-failover"))),
        work_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("controlplane")),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(
        summary.violations.is_empty(),
        "{} violation(s) (seed {}; the history is printed above; logs in {}):\n{}",
        summary.violations.len(),
        summary.seed,
        summary.logs.display(),
        summary
            .violations
            .iter()
            .map(|v| format!("  {:+.1} s {}: {}", v.at_seconds, v.invariant, v.message))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for kind in FaultKind::ALL {
        assert!(
            summary.faults.get(&kind).copied().unwrap_or(0) >= 1,
            "no {} injected: {:?}",
            kind.name(),
            summary.faults
        );
    }
    assert!(
        summary.liveness_seconds.is_some(),
        "every instance online after the healing"
    );
    assert!(
        summary.tally.copy_checks > 0 && summary.runtime.started >= 8,
        "the containers of every instance counted at the runtimes: {:?}, {:?}",
        summary.runtime,
        summary.tally
    );
}
