//! Which rounds may act before their decision is written to the status.
//!
//! A round records its decision before it acts: the write carries the resourceVersion the
//! decision was made from (anything written meanwhile, by a user or another leader, makes
//! it fail, and nothing is done), and it leaves in the API what a restarted controller needs
//! to carry the move on (its number, hence the new pod's name; the nodes it leaves and goes
//! to; the owner). Most rounds of a move change none of that: they record the time of a step
//! the API server has just confirmed and ask for the next step of the move already written.
//! Such a round may act first and leave its status to the next round's write, which follows
//! at once on the API server's answers (`kube-failover-controller`'s reconcile).
//!
//! What such a round may ask for is what its written move already licenses, each guarded
//! on its own: publishing or withdrawing the endpoint (undone by the next decision), and
//! deleting a pod or an attachment (by UID; a pod with no grace period and an attachment
//! only on a node read fresh and found fenced). Never a fence, a pod's creation, a claim, a
//! Service, or a request to an agent: those always follow a write.
//!
//! If the controller stops before the next write, nothing is lost that matters: each of
//! these steps is observed again from the API (the endpoint empty, the node tainted, the
//! pod and the attachment gone), and only its recorded time is later.

use super::{Action, Decision};
use crate::api::{FailoverClusterInstanceStatus, condition};

/// Whether a round that decided `decision` on the status `written` (as last written, or as
/// the rounds since carried it without writing) may act before writing its status: it
/// carries on the move written, changes only the times of its steps, the endpoint it
/// serves and what the Online condition says, and asks only for what that move licenses (see the module's
/// documentation).
pub fn may_act_before_recording(
    written: Option<&FailoverClusterInstanceStatus>,
    decision: &Decision,
) -> bool {
    let Some(written) = written else { return false };
    if written.current_move.is_none() || decision.status.current_move.is_none() {
        return false;
    }
    let mut acts = false;
    for action in &decision.actions {
        match action {
            Action::Event(_) => {}
            Action::SetEndpoints(_)
            | Action::DeletePod { .. }
            | Action::DeleteAttachment { .. } => acts = true,
            _ => return false,
        }
    }
    acts && without_progress(written) == without_progress(&decision.status)
}

/// The status without what a step of a move in progress changes as it is confirmed.
fn without_progress(status: &FailoverClusterInstanceStatus) -> FailoverClusterInstanceStatus {
    let mut s = status.clone();
    if let Some(m) = s.current_move.as_mut() {
        m.endpoint_withdrawn = None;
        m.fenced = None;
        m.old_pod_gone = None;
        m.volumes_detached = None;
        m.pod_created = None;
    }
    if let Some(served) = s.served.as_mut() {
        // The endpoint as observed in the EndpointSlice: withdrawn or published by the step.
        served.endpoint = None;
    }
    s.conditions.retain(|c| c.type_ != condition::ONLINE);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Move, Phase};
    use crate::decide::{Event, HeartbeatBasis};
    use jiff::Timestamp;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};

    fn at(s: i64) -> MicroTime {
        MicroTime(Timestamp::from_second(s).unwrap())
    }

    fn online(reason: &str) -> Condition {
        Condition {
            type_: condition::ONLINE.into(),
            status: "False".into(),
            reason: reason.into(),
            message: reason.into(),
            observed_generation: Some(1),
            last_transition_time: Time(Timestamp::from_second(1).unwrap()),
        }
    }

    /// A failover from a to b, started and written.
    fn moving() -> FailoverClusterInstanceStatus {
        FailoverClusterInstanceStatus {
            owner_node: Some("a".into()),
            phase: Phase::Moving,
            move_seq: 2,
            current_move: Some(Move::started(
                Some("a".into()),
                None,
                "NodeDown",
                false,
                at(10),
            )),
            conditions: vec![online("Fencing")],
            ..Default::default()
        }
    }

    fn decision(status: FailoverClusterInstanceStatus, actions: Vec<Action>) -> Decision {
        Decision {
            status,
            actions,
            recheck_at: None,
            recheck_for_owner: false,
        }
    }

    fn delete_pod() -> Action {
        Action::DeletePod {
            name: "db-1".into(),
            uid: "u1".into(),
            force: true,
        }
    }

    fn fenced_and_withdrawn() -> FailoverClusterInstanceStatus {
        let mut s = moving();
        let m = s.current_move.as_mut().unwrap();
        m.endpoint_withdrawn = Some(at(11));
        m.fenced = Some(at(12));
        s.conditions = vec![online("StoppingOldPod")];
        s
    }

    #[test]
    fn the_deletes_after_a_confirmed_fence_go_out_before_the_write() {
        let d = decision(
            fenced_and_withdrawn(),
            vec![
                delete_pod(),
                Action::DeleteAttachment {
                    name: "va".into(),
                    uid: "u2".into(),
                },
                Action::Event(Event {
                    warning: false,
                    reason: "Fenced".into(),
                    message: "a is fenced".into(),
                }),
            ],
        );
        assert!(may_act_before_recording(Some(&moving()), &d));
    }

    #[test]
    fn a_fence_a_creation_or_a_claim_always_follows_a_write() {
        let fence = Action::Fence {
            node: "a".into(),
            basis: HeartbeatBasis::default(),
        };
        let create = Action::CreatePod {
            node: "b".into(),
            seq: 2,
        };
        for a in [
            fence,
            create,
            Action::ClaimAddresses(vec!["10.0.0.1".into()]),
            Action::ReleaseAddresses(vec!["10.0.0.1".into()]),
            Action::EnsureService,
            Action::EnsureClaims,
            Action::RequestWorkloadStop {
                node: "a".into(),
                basis: HeartbeatBasis::default(),
            },
        ] {
            let d = decision(fenced_and_withdrawn(), vec![delete_pod(), a.clone()]);
            assert!(!may_act_before_recording(Some(&moving()), &d), "{a:?}");
        }
    }

    #[test]
    fn a_round_that_only_records_writes() {
        let d = decision(fenced_and_withdrawn(), Vec::new());
        assert!(!may_act_before_recording(Some(&moving()), &d));
        let events_only = decision(
            fenced_and_withdrawn(),
            vec![Action::Event(Event {
                warning: false,
                reason: "Fenced".into(),
                message: String::new(),
            })],
        );
        assert!(!may_act_before_recording(Some(&moving()), &events_only));
    }

    #[test]
    fn anything_but_a_step_s_time_and_the_online_condition_is_written_first() {
        let base = moving();
        let changes: Vec<fn(&mut FailoverClusterInstanceStatus)> = vec![
            |s| s.owner_node = Some("b".into()),
            |s| s.move_seq = 3,
            |s| s.phase = Phase::Online,
            |s| s.current_move.as_mut().unwrap().to = Some("b".into()),
            |s| s.current_move.as_mut().unwrap().planned = true,
            |s| s.current_move.as_mut().unwrap().vip_released = Some(at(13)),
            |s| s.current_move.as_mut().unwrap().online = Some(at(13)),
            |s| s.current_move = None,
            |s| {
                s.conditions.push(Condition {
                    type_: condition::VALID.into(),
                    ..online("Invalid")
                })
            },
            |s| s.failover_count = 1,
        ];
        for (i, change) in changes.into_iter().enumerate() {
            let mut s = fenced_and_withdrawn();
            change(&mut s);
            let d = decision(s, vec![delete_pod()]);
            assert!(!may_act_before_recording(Some(&base), &d), "change {i}");
        }
        // A move not yet written, or none: the round writes first.
        let d = decision(fenced_and_withdrawn(), vec![delete_pod()]);
        assert!(!may_act_before_recording(None, &d));
        let steady = FailoverClusterInstanceStatus::default();
        assert!(!may_act_before_recording(Some(&steady), &d));
    }

    #[test]
    fn publishing_the_ready_pod_goes_out_before_the_write_that_says_online() {
        let mut created = fenced_and_withdrawn();
        {
            let m = created.current_move.as_mut().unwrap();
            m.to = Some("b".into());
            m.old_pod_gone = Some(at(13));
            m.volumes_detached = Some(at(13));
            m.pod_created = Some(at(14));
        }
        created.owner_node = Some("b".into());
        let mut publishing = created.clone();
        publishing.conditions = vec![online("PublishingEndpoint")];
        let d = decision(
            publishing,
            vec![Action::SetEndpoints(vec!["10.0.0.9".into()])],
        );
        assert!(may_act_before_recording(Some(&created), &d));
    }
}
