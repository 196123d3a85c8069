//! How a run report reads in a terminal: the numbers of Okta's Import
//! Monitoring, then each rejected user with its reason.

use std::fmt::Write;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use xaas_core::RunId;
use xaas_core::report::{Plan, RunReport, RunState};

/// The report as plain text, one fact per line.
pub fn report_text(r: &RunReport) -> String {
    let mut out = String::new();
    let mode = r.options.as_ref().map(|o| o.mode.to_string()).unwrap_or_else(|| "?".into());
    let dry = if r.options.as_ref().is_some_and(|o| o.dry_run) { " (dry run)" } else { "" };
    let state = match &r.state {
        RunState::Running => "RUNNING".to_string(),
        RunState::Completed => "COMPLETED".to_string(),
        RunState::Failed { reason } => format!("FAILED: {reason}"),
        RunState::Merged { into } => format!("MERGED into run {into}, which serves this request"),
    };
    let _ = writeln!(out, "Run {} of sync {:?}, mode {mode}{dry}: {state}", r.run_id, r.sync.as_str());
    let pages = match r.total_pages {
        Some(t) => format!("{} of {t}", r.pages_fetched),
        None => r.pages_fetched.to_string(),
    };
    let lines = [
        ("Pages read", pages),
        ("Users read", r.users_read.to_string()),
        ("Removed in source", r.removed_read.to_string()),
        ("Filtered out", r.filtered_out.to_string()),
        ("Rejected", r.rejected.len().to_string()),
        ("Refused by Okta", r.refused_by_okta.len().to_string()),
        ("Unchanged", r.unchanged.to_string()),
        ("Upserted", r.upserted.to_string()),
        ("Deactivated", r.deactivated.to_string()),
        ("Bulk requests", r.bulk_requests.to_string()),
        ("Sessions used", r.sessions.len().to_string()),
        ("Time in cooldown", format!("{:.1}s", r.cooldown_seconds)),
        ("Retries", r.retries.to_string()),
        ("Duration", r.duration().map(|d| format!("{:.1}s", d.as_seconds_f64())).unwrap_or_else(|| "-".into())),
    ];
    for (k, v) in lines {
        let _ = writeln!(out, "  {k:<18} {v}");
    }
    let notes = [
        ("Queued behind run", r.queued_behind.as_ref().map(ToString::to_string)),
        ("Merged into run", r.merged_into.as_ref().map(ToString::to_string)),
        ("Full resync", r.full_resync.clone()),
        ("Guard tripped", r.guard_tripped.clone()),
        ("Override", r.mass_deactivation_allowed.then(|| "--allow-mass-deactivation was given".to_string())),
        ("Guard overridden", r.guard_overridden.clone()),
    ];
    for (k, v) in notes {
        if let Some(v) = v {
            let _ = writeln!(out, "  {k:<18} {v}");
        }
    }
    if let Some(plan) = &r.plan {
        let _ = writeln!(
            out,
            "  Plan               {} create, {} update, {} deactivate, {} unchanged (xaas status {} --plan)",
            plan.create, plan.update, plan.deactivate, plan.unchanged, r.run_id
        );
    }
    for s in &r.sessions {
        let status = s.status.map(|st| st.as_str().to_string()).unwrap_or_else(|| "pending".into());
        let _ = writeln!(out, "  Session {}: {} requests, {} profiles, {status}", s.id, s.requests, s.profiles);
    }
    for (title, list) in [("Rejected", &r.rejected), ("Refused by Okta", &r.refused_by_okta)] {
        for rej in list {
            let who = rej.external_id.as_deref().unwrap_or("(no id)");
            let _ = writeln!(out, "  {title}: {who}: {}", rej.reason);
        }
    }
    out
}

/// A run's plan, one user a line: changes first, unchanged users last.
pub fn plan_text(run: &RunId, p: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Plan of run {run}: {} create, {} update, {} deactivate, {} unchanged",
        p.create, p.update, p.deactivate, p.unchanged
    );
    for u in &p.users {
        if u.changed.is_empty() {
            let _ = writeln!(out, "  {:<10} {}", u.action.as_str(), u.external_id);
        } else {
            let _ = writeln!(out, "  {:<10} {}  ({})", u.action.as_str(), u.external_id, u.changed.join(", "));
        }
    }
    out
}

/// A moment for people: RFC 3339 to the second, and how long ago it was
/// (`2026-12-03T07:51:56Z (3 min ago)`).
pub fn moment(at: OffsetDateTime, now: OffsetDateTime) -> String {
    let utc = at.to_offset(time::UtcOffset::UTC).replace_nanosecond(0).unwrap_or(at);
    let stamp = utc.format(&Rfc3339).unwrap_or_else(|_| utc.to_string());
    let secs = (now - at).whole_seconds();
    let ago = match secs {
        ..=9 => "just now".to_string(),
        10..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=172_799 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    };
    format!("{stamp} ({ago})")
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn moments_read_as_rfc3339_and_an_age() {
        let at = datetime!(2026-12-03 7:51:56.574397899 UTC);
        let shown = |later: time::Duration| moment(at, at + later);
        assert_eq!(shown(time::Duration::seconds(3)), "2026-12-03T07:51:56Z (just now)");
        assert_eq!(shown(time::Duration::seconds(42)), "2026-12-03T07:51:56Z (42 s ago)");
        assert_eq!(shown(time::Duration::minutes(3)), "2026-12-03T07:51:56Z (3 min ago)");
        assert_eq!(shown(time::Duration::hours(5)), "2026-12-03T07:51:56Z (5 h ago)");
        assert_eq!(shown(time::Duration::days(9)), "2026-12-03T07:51:56Z (9 days ago)");
        // A clock a little behind the broker's is not "in the future".
        assert_eq!(shown(time::Duration::seconds(-2)), "2026-12-03T07:51:56Z (just now)");
        let paris = datetime!(2026-12-03 8:51:56 +1);
        assert_eq!(moment(paris, paris), "2026-12-03T07:51:56Z (just now)");
    }
}
