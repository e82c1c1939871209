//! Time: the API server's clock only.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;

/// Time resolution of what the API server tells of its clock: the `Date` header and
/// `managedFields[].time` are whole seconds, truncated.
pub(super) const SECOND: SignedDuration = SignedDuration::from_secs(1);

/// The API server's time of the last write that changed the Lease's `spec.renewTime`: the
/// `time` of the managedFields entry that owns that field (whole seconds). `None` when no
/// entry owns it.
pub fn renewal_written(lease: &Lease) -> Option<Timestamp> {
    lease
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:spec")?.get("f:renewTime"))
                .is_some()
        })
        .filter_map(|m| m.time.as_ref().map(|t| t.0))
        .max()
}

/// How long ago the Lease was last renewed, on the API server's clock (`now` is its `Date`),
/// to within a second either way (both times are whole seconds, truncated); and whether
/// that is measured on the server's clock (else on the renewer's `renewTime`, for a Lease
/// whose managedFields say nothing).
pub fn renewal_age(lease: &Lease, now: Timestamp) -> Option<(SignedDuration, bool)> {
    if let Some(written) = renewal_written(lease) {
        return Some((now.duration_since(written).max(SignedDuration::ZERO), true));
    }
    let renewed = lease.spec.as_ref()?.renew_time.as_ref()?.0;
    Some((now.duration_since(renewed).max(SignedDuration::ZERO), false))
}

/// Whether an age measured by [`renewal_age`] is surely past `limit`: by more than the
/// second it may be off.
pub fn surely_past(age: SignedDuration, limit: SignedDuration) -> bool {
    age - SECOND > limit
}

/// The renewer's clock against the API server's, from one renewal: `renewTime` (the
/// renewer's clock, just before it wrote) against the server's time of that write (whole
/// seconds). `Some(d)`: ahead by at least `d` (negative: behind by about `-d`); `None`:
/// within the second the server's time resolves.
pub fn clock_offset(lease: &Lease) -> Option<SignedDuration> {
    let written = renewal_written(lease)?;
    let renewed = lease.spec.as_ref()?.renew_time.as_ref()?.0;
    let ahead = renewed.duration_since(written + SECOND);
    let behind = written.duration_since(renewed);
    if ahead > SignedDuration::ZERO {
        Some(ahead)
    } else if behind > SignedDuration::ZERO {
        Some(-behind)
    } else {
        None
    }
}

/// An age measured by [`renewal_age`], as people read it.
pub(super) fn ago(age: SignedDuration) -> String {
    if age < SECOND {
        "less than a second ago".into()
    } else {
        format!("{} ago", human_age(age))
    }
}

pub(super) fn secs(d: SignedDuration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// An HTTP `Date` (`Fri, 04 Dec 2026 16:40:17 GMT`).
pub fn parse_http_date(date: &str) -> Result<Timestamp, String> {
    jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(date)
        .map_err(|e| format!("reading the Date {date:?}: {e}"))
}

/// `d` as people read it: `850ms`, `12s`, `4m`, `3h`, `2d`.
pub fn human_age(d: SignedDuration) -> String {
    let ms = d.as_millis().max(0);
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..120_000 => format!("{}s", ms / 1_000),
        120_000..7_200_000 => format!("{}m", ms / 60_000),
        7_200_000..172_800_000 => format!("{}h", ms / 3_600_000),
        _ => format!("{}d", ms / 86_400_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_people_say_them() {
        let s = jiff::SignedDuration::from_millis;
        assert_eq!(human_age(s(850)), "850ms");
        assert_eq!(human_age(s(12_400)), "12s");
        assert_eq!(human_age(s(4 * 60_000)), "4m");
        assert_eq!(human_age(s(3 * 3_600_000)), "3h");
        assert_eq!(human_age(s(50 * 3_600_000)), "2d");
        assert_eq!(
            human_age(s(-5)),
            "0ms",
            "a clock ahead is not a negative age"
        );
    }
}
