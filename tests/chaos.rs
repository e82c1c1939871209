//! A short chaos run on the real control plane (`kube-failover-lab chaos`, see
//! `lab/src/chaos.rs`): faults of every kind at random from a fixed seed, against two
//! processes of the binary that ships, judged by an independent watcher of the invariants of
//! `docs/safety.md`. Here, not in the lab, because only this package's tests can name the
//! controller binary (`CARGO_BIN_EXE_kube-failover`).

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
}
