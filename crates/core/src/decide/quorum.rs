//! The quorum: the votes of a cluster's voting members and of its witness, as pure functions
//! of their health. One count for instances, the cluster's status, `validate` and the node
//! agents' peer groups alike.

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::health::required_healthy;
use crate::api::{MemberState, Quorum, Witness, WitnessStatus};

/// The witness vote as the controller judges it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessVote {
    /// `node cp-1`, `Lease kube-failover-witness-a`, `the API server`.
    pub name: String,
    /// Its vote counts now.
    pub heard: bool,
    /// Why it does not, when it does not.
    pub reason: Option<String>,
    /// Since when the controller has seen it renew without a break, on its own clock;
    /// `None` while it does not. The fence step counts on a silent agent's self-fence only
    /// after enough votes have been steady for the whole self-fence wait, and the witness is
    /// one of them.
    pub steady_since: Option<Timestamp>,
    /// When the vote would be lost without any new renewal: the time to look again.
    pub recheck_at: Option<Timestamp>,
}

impl WitnessVote {
    pub fn status(&self) -> WitnessStatus {
        WitnessStatus {
            name: self.name.clone(),
            heard: self.heard,
            reason: self.reason.clone(),
        }
    }
}

/// What the controller read of the witness, before it is judged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WitnessFacts {
    /// For a `node` or `lease` witness: when the controller saw its Lease's current renewal
    /// (`None`: no such Lease); for the API server: since when the controller has heard the
    /// members' heartbeats through it (`None`: out of sight now).
    pub renewed: Option<Timestamp>,
    /// See [`WitnessVote::steady_since`].
    pub steady_since: Option<Timestamp>,
    /// A `node` witness that is a member of the cluster.
    pub is_member: bool,
    /// For the API server: the voting members without a node agent that fences itself (no
    /// agent Lease, or one that announces no self-fence time).
    pub members_without_self_fence: Vec<String>,
}

/// The witness's vote now: a `node` or `lease` witness counts while its Lease has been seen
/// renewed within `stale`; the API server while the members' heartbeats are in sight and
/// every voting member's agent fences itself.
pub fn judge_witness(
    witness: &Witness,
    facts: &WitnessFacts,
    stale: SignedDuration,
    now: Timestamp,
) -> WitnessVote {
    let name = witness.describe();
    let refuse = |reason: String| WitnessVote {
        name: name.clone(),
        heard: false,
        reason: Some(reason),
        steady_since: None,
        recheck_at: None,
    };
    if witness.api_server {
        if let Some(first) = facts.members_without_self_fence.first() {
            let more = facts.members_without_self_fence.len() - 1;
            let others = if more > 0 {
                format!(" (and {more} more)")
            } else {
                String::new()
            };
            return refuse(format!(
                "member {first}{others} runs no node agent that fences itself: the API server \
                 votes only where every voting member does"
            ));
        }
        if facts.renewed.is_none() {
            return refuse("the members' heartbeats are out of sight".into());
        }
        return WitnessVote {
            name,
            heard: true,
            reason: None,
            steady_since: facts.steady_since,
            recheck_at: None,
        };
    }
    if facts.is_member {
        return refuse(format!(
            "{name} is a member of the cluster: a member votes once, as a member"
        ));
    }
    let Some(renewed) = facts.renewed else {
        return refuse(format!("{name}: no such Lease in kube-node-lease"));
    };
    let age = now.duration_since(renewed);
    if age >= stale {
        return refuse(format!(
            "{name} not renewed for {}s",
            age.as_secs().max(stale.as_secs())
        ));
    }
    WitnessVote {
        name,
        heard: true,
        reason: None,
        steady_since: facts.steady_since,
        recheck_at: Some(renewed + stale),
    }
}

/// The quorum's count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Votes {
    /// Voting members, and the witness.
    pub total: u32,
    /// Voting members heard from (Up or Paused), and the witness when it is heard.
    pub heard: u32,
    /// Needed for automatic failover.
    pub required: u32,
}

impl Votes {
    pub fn held(&self) -> bool {
        self.heard >= self.required
    }
}

/// Counts the votes of `members` (name, state), but those in `non_voting`, and the witness.
pub fn count_votes<'a>(
    members: impl IntoIterator<Item = (&'a str, MemberState)>,
    non_voting: &BTreeSet<String>,
    witness: Option<&WitnessVote>,
    min_healthy: &IntOrString,
) -> Votes {
    let (mut total, mut heard) = (0u32, 0u32);
    for (name, state) in members {
        if non_voting.contains(name) {
            continue;
        }
        total += 1;
        heard += u32::from(state.heard());
    }
    if let Some(w) = witness {
        total += 1;
        heard += u32::from(w.heard);
    }
    Votes {
        total,
        heard,
        required: required_healthy(min_healthy, total),
    }
}

/// The members `quorum.nonVotingNodes` names.
pub fn non_voting(quorum: &Quorum) -> BTreeSet<String> {
    quorum.non_voting_nodes.iter().cloned().collect()
}

/// How the quorum is told in messages: `1 of 3 votes heard (member nodes 1 of 2; witness
/// Lease kube-failover-witness-a: not renewed for 30s), 2 required`.
pub fn describe_votes(
    votes: &Votes,
    members_heard: u32,
    members_voting: u32,
    some_do_not_vote: bool,
    witness: Option<&WitnessVote>,
) -> String {
    let voting = if some_do_not_vote { "voting " } else { "" };
    match witness {
        None => format!(
            "{} of {} {voting}member nodes up, {} required",
            votes.heard, votes.total, votes.required
        ),
        Some(w) => {
            let said = match (&w.reason, w.heard) {
                (_, true) => "heard".to_string(),
                (Some(r), false) => r.clone(),
                (None, false) => "not heard".to_string(),
            };
            format!(
                "{} of {} votes heard ({voting}member nodes {members_heard} of {members_voting}; \
                 witness {}: {said}), {} required",
                votes.heard, votes.total, w.name, votes.required
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn lease(name: &str) -> Witness {
        Witness {
            lease: Some(name.into()),
            ..Default::default()
        }
    }

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn a_two_node_cluster_with_a_heard_witness_keeps_its_quorum_when_one_node_fails() {
        let w = judge_witness(
            &lease("kube-failover-witness-a"),
            &WitnessFacts {
                renewed: Some(t(9)),
                steady_since: Some(t(0)),
                ..Default::default()
            },
            SignedDuration::from_secs(3),
            t(10),
        );
        assert!(w.heard, "{w:?}");
        let members = [("a", MemberState::Down), ("b", MemberState::Up)];
        let votes = count_votes(members, &BTreeSet::new(), Some(&w), &pct("51%"));
        assert_eq!((votes.total, votes.heard, votes.required), (3, 2, 2));
        assert!(votes.held());
        // Without the witness the same cluster holds nothing over.
        let alone = count_votes(members, &BTreeSet::new(), None, &pct("51%"));
        assert_eq!((alone.total, alone.heard, alone.required), (2, 1, 2));
        assert!(!alone.held());
    }

    #[test]
    fn a_witness_silent_for_the_threshold_gives_no_vote_and_says_how_long() {
        let w = judge_witness(
            &lease("kube-failover-witness-a"),
            &WitnessFacts {
                renewed: Some(t(0)),
                ..Default::default()
            },
            SignedDuration::from_secs(3),
            t(5),
        );
        assert!(!w.heard);
        assert_eq!(
            w.reason.as_deref(),
            Some("Lease kube-failover-witness-a not renewed for 5s")
        );
        let votes = count_votes(
            [("a", MemberState::Down), ("b", MemberState::Up)],
            &BTreeSet::new(),
            Some(&w),
            &pct("51%"),
        );
        assert!(!votes.held());
        let said = describe_votes(&votes, 1, 2, false, Some(&w));
        assert!(said.contains("1 of 3 votes heard"), "{said}");
        assert!(said.contains("not renewed for 5s"), "{said}");
        let missing = judge_witness(
            &lease("kube-failover-witness-a"),
            &WitnessFacts::default(),
            SignedDuration::from_secs(3),
            t(5),
        );
        assert!(!missing.heard);
        assert!(missing.reason.unwrap().contains("no such Lease"));
    }

    #[test]
    fn a_member_named_as_witness_gives_no_second_vote() {
        let w = judge_witness(
            &Witness {
                node: Some("b".into()),
                ..Default::default()
            },
            &WitnessFacts {
                renewed: Some(t(10)),
                is_member: true,
                ..Default::default()
            },
            SignedDuration::from_secs(3),
            t(10),
        );
        assert!(!w.heard);
        assert!(w.reason.unwrap().contains("member"));
    }

    #[test]
    fn the_api_server_votes_only_where_every_voting_member_fences_itself() {
        let api = Witness {
            api_server: true,
            ..Default::default()
        };
        let stale = SignedDuration::from_secs(3);
        let all = WitnessFacts {
            renewed: Some(t(0)),
            steady_since: Some(t(0)),
            ..Default::default()
        };
        assert!(judge_witness(&api, &all, stale, t(100)).heard);
        let without = WitnessFacts {
            members_without_self_fence: vec!["b".into(), "c".into()],
            ..all.clone()
        };
        let w = judge_witness(&api, &without, stale, t(100));
        assert!(!w.heard);
        assert!(w.reason.unwrap().contains("member b (and 1 more)"));
        let blind = WitnessFacts {
            renewed: None,
            ..all
        };
        assert!(!judge_witness(&api, &blind, stale, t(100)).heard);
    }

    #[test]
    fn non_voting_members_count_neither_way() {
        let non_voting: BTreeSet<String> = ["c".to_string()].into();
        let up = count_votes(
            [
                ("a", MemberState::Up),
                ("b", MemberState::Down),
                ("c", MemberState::Up),
            ],
            &non_voting,
            None,
            &pct("51%"),
        );
        assert_eq!((up.total, up.heard, up.required), (2, 1, 2));
        let down = count_votes(
            [
                ("a", MemberState::Up),
                ("b", MemberState::Up),
                ("c", MemberState::Down),
            ],
            &non_voting,
            None,
            &pct("51%"),
        );
        assert_eq!((down.total, down.heard, down.required), (2, 2, 2));
        assert!(down.held());
    }
}
