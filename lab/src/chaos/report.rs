//! The printed summary of a run.

use super::*;

pub fn print_summary(s: &Summary) {
    println!(
        "\n## Chaos run: seed {}, {} min of faults, {} instances on {} nodes",
        s.seed, s.minutes, s.instances, s.nodes
    );
    let total: usize = s.faults.values().sum();
    println!("faults injected: {total}");
    for kind in FaultKind::ALL {
        println!(
            "  {:<32} {}",
            kind.name(),
            s.faults.get(&kind).copied().unwrap_or(0)
        );
    }
    println!(
        "  node faults at once: at most {} (quorum), {} injected beyond it, {} at most seen",
        s.max_faulty_nodes, s.beyond_bound, s.most_faulty_at_once
    );
    if !s.apiserver_restart_seconds.is_empty() {
        let max = s
            .apiserver_restart_seconds
            .iter()
            .copied()
            .fold(0.0f64, f64::max);
        println!("  kube-apiserver back within {max:.1} s of each restart");
    }
    println!(
        "  node agents: {} restarts; asking their peers before fencing themselves: {}",
        s.agent_restarts, s.agents_ask_peers
    );
    let r = &s.runtime;
    println!(
        "containers: {} started by kubelets, {} stopped by kubelets, {} stopped by agents (CRI), {} gone with a power cut",
        r.started, r.stopped_by_kubelet, r.stopped_through_cri, r.lost_to_power_off
    );
    let t = &s.tally;
    println!(
        "running copies judged {} times at the runtimes; most copies of one instance at once: {}",
        t.copy_checks, t.most_copies_at_once
    );
    println!(
        "moves completed: {} failovers, {} planned moves, {} called off (node back before fencing); {} move starts judged",
        t.failovers, t.planned_moves, t.abandoned, t.move_starts_checked
    );
    println!("Events: {:?}", t.events);
    println!(
        "audit log: {} lines; {} force deletes of pods and {} VolumeAttachment deletes by the controller judged ({} whose node was unknown); {} out-of-service taints seen added",
        t.audit_lines,
        t.audited_force_pod_deletes,
        t.audited_attachment_deletes,
        t.unverified_deletes,
        t.taints_seen
    );
    match s.liveness_seconds {
        Some(l) => {
            println!("liveness: every instance online {l:.1} s after every fault was healed")
        }
        None => println!("liveness: not reached (see violations)"),
    }
    println!("violations: {}", s.violations.len());
    for v in &s.violations {
        println!("  {:+.1} s {}: {}", v.at_seconds, v.invariant, v.message);
    }
    println!(
        "duration: {:.0} s ({:.0} s of set-up); logs in {}",
        s.duration_seconds,
        s.setup_seconds,
        s.logs.display()
    );
}
