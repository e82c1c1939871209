//! Which heartbeat counts, and for how long.

use crate::api::{Heartbeat, HeartbeatSource, KUBELET_LEASE_STALE_FLOOR};

/// Seconds after its last renewal that a node's kubelet Lease makes it Down. With the
/// agent's Lease as the heartbeat source, `leaseStaleSeconds` is meant for the agent's
/// Lease (renewed every second), and the kubelet's is judged with no less than the
/// kubelet's own renewal period allows ([`KUBELET_LEASE_STALE_FLOOR`]).
pub fn kubelet_lease_stale_seconds(hb: &Heartbeat) -> u32 {
    match hb.source {
        HeartbeatSource::Kubelet => hb.lease_stale_seconds,
        HeartbeatSource::Agent => hb.lease_stale_seconds.max(KUBELET_LEASE_STALE_FLOOR),
    }
}
