//! The printed summary of a scenario.

use super::*;

pub fn print_result(r: &ScenarioResult) {
    println!("\n## {}", r.name);
    println!(
        "killed {} node(s) hosting {} instances; node Lease {} s, declared down after {} s without renewal",
        r.killed_nodes, r.affected, r.node_lease_seconds, r.lease_stale_seconds
    );
    println!("| seconds | p50 | p95 | p99 | max |\n|---|---|---|---|---|");
    for (name, s) in [
        ("detection (heartbeat stop → move started)", &r.detection),
        ("reaction (move started → new pod created)", &r.reaction),
        (
            "total (heartbeat stop → online, endpoint published)",
            &r.total,
        ),
    ] {
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} |",
            s.p50, s.p95, s.p99, s.max
        );
    }
    println!(
        "controller: all {} moves done {:.3} s after the first started; floor (same writes, plain client): {:.3} s; ratio {:.2}",
        r.affected,
        r.controller_wall,
        r.floor_wall,
        r.controller_wall / r.floor_wall
    );
    println!(
        "API requests per failover: {:?}",
        r.api_requests_per_failover
    );
    println!(
        "API requests per failover, by resource: {:?}",
        r.api_requests_by_resource
    );
    println!(
        "writes in 20 s at rest, before the kill: {:?}",
        r.idle_writes
    );
    println!(
        "at rest: {} reconciles, CPU {:.2} s, RSS {:.1} MiB",
        r.at_rest.reconciles, r.at_rest.cpu_seconds, r.at_rest.rss_mib
    );
    println!(
        "controller peak RSS {:.1} MiB, CPU {:.2} s during the failover, caches synced {:.2} s after start",
        r.controller_peak_rss_mib, r.controller_cpu_seconds, r.caches_synced_seconds
    );
    if let Some(lone) = &r.lone {
        println!(
            "one instance's reaction over {} lone failovers ({} moves): p50 {:.3} s, p99 {:.3} s, max {:.3} s",
            lone.rounds, lone.reaction.n, lone.reaction.p50, lone.reaction.p99, lone.reaction.max
        );
        for (step, s) in &lone.steps {
            println!(
                "  {step} after the move started: p50 {:.3} s, p99 {:.3} s",
                s.p50, s.p99
            );
        }
    }
    for b in &r.baselines {
        match b.recovered_after {
            Some(s) => println!("baseline {}: Ready elsewhere after {s:.1} s", b.workload),
            None => println!(
                "baseline {}: not Ready elsewhere within {} s ({})",
                b.workload, b.bound_seconds, b.note
            ),
        }
    }
}
