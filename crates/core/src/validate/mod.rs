//! `kubectl failover validate`'s judgements: what Test-Cluster checks before WSFC hosts a
//! role, for kube-failover. The plugin reads the cluster into [`Facts`]; [`judge`] turns
//! them into checks that say PASS, WARN or FAIL and what to do, with no I/O, on the same
//! rules the controller acts on ([`crate::rules`]).

mod addresses;
mod claims;
mod control;
mod facts;
mod members;
mod owners;
mod rbac;
#[cfg(test)]
mod tests;
mod time;
mod vips;

use serde::Serialize;

pub use addresses::{judge_network_name, judge_pools};
pub use claims::{ClaimFacts, KNOWN_ATTACHING_DRIVERS, judge_claim};
pub use control::{judge_crd, judge_leader, judge_version};
pub use facts::{ClusterFacts, Facts, InstanceFacts, Read, judge};
pub use members::{judge_member_lease, judge_quorum, judge_resilience};
pub use owners::{eligible_owners, judge_owners, members_of};
pub use rbac::{
    Access, CONTROLLER_PERMISSIONS, Scope, judge_rbac, needed_access, parse_service_account,
};
pub use time::{
    clock_offset, human_age, parse_http_date, renewal_age, renewal_written, surely_past,
};
pub use vips::{VipFacts, judge_vips};

/// PASS, WARN or FAIL; ordered by gravity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

/// One finding: what was checked, the verdict, why, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// Which check: `crds`, `leader`, `rbac`, `version`, `heartbeats`, `quorum`, `resilience`,
    /// `addressPools`, `owners`, `storage`, `virtualIPs`, `networkName`.
    pub check: &'static str,
    pub verdict: Verdict,
    /// What it is about: `instance shop/db`, `node n1 (cluster c1)`…
    pub subject: String,
    pub message: String,
    /// What to do, when it is not a pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub(crate) fn new(check: &'static str, verdict: Verdict, subject: impl Into<String>) -> Self {
        Self {
            check,
            verdict,
            subject: subject.into(),
            message: String::new(),
            fix: None,
        }
    }
    pub(crate) fn pass(
        check: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            message: message.into(),
            ..Self::new(check, Verdict::Pass, subject)
        }
    }
    pub(crate) fn warn(
        check: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            message: message.into(),
            fix: Some(fix.into()),
            ..Self::new(check, Verdict::Warn, subject)
        }
    }
    pub(crate) fn fail(
        check: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            verdict: Verdict::Fail,
            ..Self::warn(check, subject, message, fix)
        }
    }
}

/// What `validate` reports, as `-o json|yaml` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidateReport {
    pub checks: Vec<Check>,
    pub passed: usize,
    pub warnings: usize,
    pub failures: usize,
}

impl ValidateReport {
    pub fn new(checks: Vec<Check>) -> Self {
        let count = |v| checks.iter().filter(|c| c.verdict == v).count();
        Self {
            passed: count(Verdict::Pass),
            warnings: count(Verdict::Warn),
            failures: count(Verdict::Fail),
            checks,
        }
    }
}

/// One line per check, then the counts.
pub fn render(r: &ValidateReport) -> String {
    let mut out = String::new();
    for c in &r.checks {
        let verdict = match c.verdict {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        out.push_str(&format!("{verdict}  {}: {}", c.subject, c.message));
        if let Some(fix) = &c.fix {
            out.push_str(&format!(" — {fix}"));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "\n{} passed, {} warnings, {} failed\n",
        r.passed, r.warnings, r.failures
    ));
    out
}
