//! Quarantine of members that keep failing (WSFC's compute resiliency): counted and decided
//! from the cluster's status, as a pure function of the members' states, what the status
//! said before and the clock.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{MemberState, MemberStatus, Quarantine, QuarantineStatus};

/// Carries each member's failures and quarantine from `previous` (the status as it was) to
/// `members` (as it is now, states judged): a member that was heard from and is now Down or
/// Fenced failed now; failures older than the period are forgotten; a quarantine lasts until
/// its end, or until an operator cleared it (`cleared`: node → when, from
/// [`crate::api::CLEAR_QUARANTINE_ANNOTATION`]) after it began. Then members that failed
/// `threshold` times are quarantined, the most failed first, while at most a quarter of the
/// members are. Returns when to look again (the first quarantine's end, or the first
/// failure to fall out of its period).
pub fn carry_quarantine(
    members: &mut [MemberStatus],
    previous: &[MemberStatus],
    cleared: &BTreeMap<String, Timestamp>,
    q: &Quarantine,
    now: Timestamp,
) -> Option<Timestamp> {
    let period = SignedDuration::from_secs(i64::from(q.period_seconds));
    let failed = |s: MemberState| matches!(s, MemberState::Down | MemberState::Fenced);
    for m in members.iter_mut() {
        let Some(was) = previous.iter().find(|p| p.name == m.name) else {
            continue;
        };
        m.failures = was
            .failures
            .iter()
            .filter(|t| now.duration_since(t.0) < period)
            .cloned()
            .collect();
        if was.state.heard() && failed(m.state) {
            m.failures.push(Time(now));
        }
        m.quarantine = was.quarantine.clone().filter(|qs| {
            qs.until.0 > now && cleared.get(&m.name).is_none_or(|at| *at < qs.since.0)
        });
        if was.quarantine.is_some() && m.quarantine.is_none() {
            // Lifted or over: it starts afresh.
            m.failures.clear();
        }
    }
    if q.threshold > 0 {
        let cap = members.len() / 4;
        let already = members.iter().filter(|m| m.quarantine.is_some()).count();
        let mut due: Vec<usize> = (0..members.len())
            .filter(|&i| {
                members[i].quarantine.is_none() && members[i].failures.len() as u32 >= q.threshold
            })
            .collect();
        due.sort_by_key(|&i| std::cmp::Reverse(members[i].failures.len()));
        for i in due.into_iter().take(cap.saturating_sub(already)) {
            let until = now + SignedDuration::from_secs(i64::from(q.duration_seconds));
            members[i].quarantine = Some(QuarantineStatus {
                since: Time(now),
                until: Time(until),
            });
            members[i].failures.clear();
        }
    }
    members
        .iter()
        .flat_map(|m| {
            m.quarantine
                .iter()
                .map(|qs| qs.until.0)
                .chain(m.failures.iter().map(|t| t.0 + period))
        })
        .min()
}

/// The members quarantined now, and until when.
pub fn quarantined(members: &[MemberStatus], now: Timestamp) -> BTreeMap<String, Timestamp> {
    members
        .iter()
        .filter_map(|m| {
            let q = m.quarantine.as_ref().filter(|q| q.until.0 > now)?;
            Some((m.name.clone(), q.until.0))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn member(name: &str, state: MemberState) -> MemberStatus {
        MemberStatus {
            name: name.into(),
            state,
            last_heartbeat: None,
            reason: None,
            instance_count: 0,
            agent: None,
            non_voting: false,
            site: None,
            failures: Vec::new(),
            quarantine: None,
        }
    }

    /// Judges the members' states at `now`, carrying `status` forward.
    fn round(
        status: &mut Vec<MemberStatus>,
        states: &[MemberState],
        now: i64,
    ) -> Option<Timestamp> {
        let mut next: Vec<MemberStatus> = status
            .iter()
            .zip(states)
            .map(|(m, s)| member(&m.name, *s))
            .collect();
        let at = carry_quarantine(
            &mut next,
            status,
            &BTreeMap::new(),
            &Quarantine::default(),
            t(now),
        );
        *status = next;
        at
    }

    #[test]
    fn a_member_that_fails_three_times_within_the_hour_is_quarantined_for_two_hours() {
        use MemberState::{Down, Fenced, Up};
        let mut s: Vec<MemberStatus> = ["a", "b", "c", "d"].iter().map(|n| member(n, Up)).collect();
        let flap = |s: &mut Vec<MemberStatus>, at: i64, how: MemberState| {
            round(s, &[how, Up, Up, Up], at);
            round(s, &[Up, Up, Up, Up], at + 60);
        };
        flap(&mut s, 0, Down);
        flap(&mut s, 600, Fenced);
        assert_eq!(s[0].failures.len(), 2);
        assert!(s[0].quarantine.is_none());
        // Staying down is one failure, not one per round.
        round(&mut s, &[Down, Up, Up, Up], 1200);
        round(&mut s, &[Down, Up, Up, Up], 1210);
        let q = s[0]
            .quarantine
            .clone()
            .expect("quarantined on the third failure");
        assert_eq!((q.since.0, q.until.0), (t(1200), t(1200 + 7200)));
        assert!(s[0].failures.is_empty());
        assert_eq!(quarantined(&s, t(1300)).keys().collect::<Vec<_>>(), ["a"]);
        // Over after two hours, and it starts afresh.
        round(&mut s, &[Up, Up, Up, Up], 1200 + 7200);
        assert!(s[0].quarantine.is_none());
        assert!(quarantined(&s, t(1200 + 7200)).is_empty());
    }

    #[test]
    fn failures_older_than_the_period_are_forgotten() {
        use MemberState::{Down, Up};
        let mut s: Vec<MemberStatus> = ["a", "b", "c", "d"].iter().map(|n| member(n, Up)).collect();
        for at in [0, 2000, 4000] {
            round(&mut s, &[Down, Up, Up, Up], at);
            round(&mut s, &[Up, Up, Up, Up], at + 10);
        }
        assert!(
            s[0].quarantine.is_none(),
            "three failures, never three within an hour"
        );
        assert_eq!(s[0].failures.len(), 2, "the first one forgotten");
    }

    #[test]
    fn at_most_a_quarter_of_the_members_are_quarantined_and_an_operator_can_lift_one() {
        use MemberState::{Down, Up};
        let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
        let mut s: Vec<MemberStatus> = names.iter().map(|n| member(n, Up)).collect();
        // Three members fail three times each; a quarter of eight is two.
        for at in [0, 100, 200] {
            round(&mut s, &[Down, Down, Down, Up, Up, Up, Up, Up], at);
            round(&mut s, &[Up; 8], at + 10);
        }
        let q = quarantined(&s, t(300));
        assert_eq!(q.len(), 2, "{q:?}");
        // Lifted by an operator after it began: the third may go in its place next round.
        let lifted = q.keys().next().unwrap().clone();
        let mut next: Vec<MemberStatus> = s.iter().map(|m| member(&m.name, Up)).collect();
        let cleared = BTreeMap::from([(lifted.clone(), t(400))]);
        carry_quarantine(&mut next, &s, &cleared, &Quarantine::default(), t(400));
        let q = quarantined(&next, t(400));
        assert!(!q.contains_key(&lifted), "{q:?}");
        assert_eq!(q.len(), 2, "the third member took the free place: {q:?}");
        // Fewer than four members: none at all.
        let mut three: Vec<MemberStatus> = ["a", "b", "c"].iter().map(|n| member(n, Up)).collect();
        for at in [0, 100, 200] {
            round(&mut three, &[Down, Up, Up], at);
            round(&mut three, &[Up, Up, Up], at + 10);
        }
        assert!(quarantined(&three, t(300)).is_empty());
    }
}
