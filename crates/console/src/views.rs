//! What the pages show, computed from reports and configuration: state
//! badges, the Import Monitoring counts, the progress estimate, search, and
//! a sync's settings with its secrets left out. Pure, so that it is tested
//! without a server; the templates only lay it out (and escape it).

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use xaas_core::config::{SyncConfig, TargetAuth};
use xaas_core::report::{RunReport, RunState};

/// What a secret is shown as.
pub const REDACTED: &str = "(secret, not shown)";

/// A run's state as a badge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateView {
    /// `RUNNING`, `COMPLETED`, `FAILED` or `MERGED`, as Okta spells states.
    pub label: &'static str,
    /// CSS class of the badge.
    pub class: &'static str,
    /// Why it failed, or which run it was merged into.
    pub detail: Option<String>,
}

pub fn state_view(state: &RunState) -> StateView {
    match state {
        RunState::Running => StateView { label: "RUNNING", class: "running", detail: None },
        RunState::Completed => StateView { label: "COMPLETED", class: "completed", detail: None },
        RunState::Failed { reason } => StateView { label: "FAILED", class: "failed", detail: Some(reason.clone()) },
        RunState::Merged { into } => {
            StateView { label: "MERGED", class: "merged", detail: Some(format!("served by run {into}")) }
        }
    }
}

/// An instant as RFC 3339 in UTC, to the second.
pub fn when(t: Option<OffsetDateTime>) -> String {
    t.map(|t| t.to_offset(time::UtcOffset::UTC).replace_nanosecond(0).unwrap_or(t))
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "-".into())
}

/// How long the run took, or has been going.
pub fn took(r: &RunReport, now: OffsetDateTime) -> String {
    match (r.started_at, r.finished_at) {
        (Some(s), Some(f)) => crate::timeline::clock((f - s).as_seconds_f64()),
        (Some(s), None) => format!("{} so far", crate::timeline::clock((now - s).as_seconds_f64())),
        _ => "-".into(),
    }
}

/// How far a run has got, as a share of the users it has to handle.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    /// 0 to 100; 100 only once the run is over.
    pub percent: f64,
    pub label: String,
}

/// Half reading, half handling: the share of the pages read, and the share
/// of the users read that are done with (every user ends filtered out,
/// rejected, refused, unchanged, upserted or, in deactivate mode,
/// deactivated). Graph does not say how many pages there are, so until the
/// last page is read one more page is assumed. Held under 100 until the run
/// is over: Okta may still be importing.
pub fn progress(r: &RunReport) -> Progress {
    let handled = u64::from(r.filtered_out)
        + r.rejected.len() as u64
        + r.refused_by_okta.len() as u64
        + u64::from(r.unchanged)
        + u64::from(r.upserted)
        + u64::from(r.deactivated);
    let read = u64::from(r.users_read);
    let pages = u64::from(r.pages_fetched);
    let (pages_expected, users_expected) = match r.total_pages {
        Some(total) => (u64::from(total).max(pages), read),
        None if pages == 0 => (1, 0),
        None => (pages + 1, read + read.div_ceil(pages)),
    };
    let share = |done: u64, of: u64| if of == 0 { 0.0 } else { (done as f64 / of as f64).min(1.0) };
    let percent = if r.state.is_over() {
        100.0
    } else {
        (50.0 * share(pages, pages_expected) + 50.0 * share(handled, users_expected)).min(99.0)
    };
    let total_pages = r.total_pages.map_or_else(|| "?".to_string(), |t| t.to_string());
    let label = format!("{handled} of {read} users read handled · page {} of {total_pages}", r.pages_fetched);
    Progress { percent: (percent * 10.0).round() / 10.0, label }
}

/// One number of Okta's Import Monitoring (and a few of the pipeline's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Count {
    /// Stable name: the live updates find the number by it.
    pub key: &'static str,
    pub label: &'static str,
    pub value: String,
}

pub fn counts(r: &RunReport) -> Vec<Count> {
    let c = |key, label, value: String| Count { key, label, value };
    vec![
        c("read", "Read", r.users_read.to_string()),
        c("filtered", "Filtered", r.filtered_out.to_string()),
        c("rejected", "Rejected", r.rejected.len().to_string()),
        c("refused", "Refused by Okta", r.refused_by_okta.len().to_string()),
        c("unchanged", "Unchanged", r.unchanged.to_string()),
        c("upserted", "Upserted", r.upserted.to_string()),
        c("deactivated", "Deactivated", r.deactivated.to_string()),
        c("sessions", "Sessions", r.sessions.len().to_string()),
        c("requests", "Requests", r.bulk_requests.to_string()),
        c("cooldown", "Time in cooldown", format!("{:.1}s", r.cooldown_seconds)),
        c("retries", "Retries", r.retries.to_string()),
    ]
}

/// What a progress stream sends: enough to move the bar and the numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Live {
    /// The run has events (a freshly enqueued one may not yet).
    pub seen: bool,
    pub state: &'static str,
    pub over: bool,
    /// How long it took, or has been going.
    pub took: String,
    pub progress: Progress,
    pub counts: Vec<Count>,
}

pub fn live(r: Option<&RunReport>, now: OffsetDateTime) -> Live {
    match r {
        None => Live {
            seen: false,
            state: "WAITING",
            over: false,
            took: "-".into(),
            progress: Progress { percent: 0.0, label: "waiting for the run's first event".into() },
            counts: Vec::new(),
        },
        Some(r) => Live {
            seen: true,
            state: state_view(&r.state).label,
            over: r.state.is_over(),
            took: took(r, now),
            progress: progress(r),
            counts: counts(r),
        },
    }
}

/// The items of a list that match a search, at most `limit` of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Found<T> {
    pub shown: Vec<T>,
    pub matching: usize,
    pub total: usize,
}

/// Case-insensitive substring search over the texts `fields` gives for
/// each item; an empty query matches everything.
pub fn search<T: Clone>(items: &[T], query: &str, limit: usize, fields: impl Fn(&T) -> Vec<&str>) -> Found<T> {
    let q = query.trim().to_lowercase();
    let hits: Vec<&T> = items
        .iter()
        .filter(|item| q.is_empty() || fields(item).iter().any(|f| f.to_lowercase().contains(&q)))
        .collect();
    Found { matching: hits.len(), total: items.len(), shown: hits.into_iter().take(limit).cloned().collect() }
}

/// A sync's settings as (name, value) rows. Secrets are never read here:
/// they show as [`REDACTED`], whatever they hold.
pub fn sync_settings(s: &SyncConfig) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: String| rows.push((k.to_string(), v));
    put("schedule", s.schedule.clone().unwrap_or_else(|| "none (runs start only when requested)".into()));
    put("schedule_mode", s.schedule_mode.to_string());
    put("source.tenant", s.source.tenant.clone());
    put("source.client_id", s.source.client_id.clone());
    put("source.client_secret", REDACTED.into());
    put("source.authority_url", s.source.authority_url.clone());
    put("source.graph_url", s.source.graph_url.clone());
    put("source.page_size", s.source.page_size.to_string());
    put("source.select", s.source.select.join(", "));
    put("source.filter", s.source.filter.clone().unwrap_or_else(|| "none".into()));
    put("mapping.external_id", s.rules.mapping.external_id_field().to_string());
    let attributes: Vec<String> =
        s.rules.mapping.attributes().map(|(okta, graph)| format!("{okta} = {graph}")).collect();
    put("mapping.attributes", attributes.join(", "));
    let filter: Vec<String> = s.rules.filter.fields().map(|(field, value)| format!("{field} = {value}")).collect();
    put("filter", if filter.is_empty() { "none (every user)".into() } else { filter.join(", ") });
    put("target.okta_url", s.target.okta_url.clone());
    put("target.identity_source_id", s.target.identity_source_id.clone());
    match &s.target.auth {
        TargetAuth::ApiToken(_) => {
            put("target.auth", "api_token".into());
            put("target.token", REDACTED.into());
        }
        TargetAuth::ServiceApp { client_id, key_id, .. } => {
            put("target.auth", "service_app".into());
            put("target.client_id", client_id.clone());
            put("target.key_id", key_id.clone());
            put("target.private_key", REDACTED.into());
        }
    }
    put("limits.profiles_per_request", s.limits.profiles_per_request.to_string());
    put("limits.bytes_per_request", s.limits.bytes_per_request.to_string());
    put("limits.requests_per_session", s.limits.requests_per_session.to_string());
    put("limits.cooldown", format!("{:?}", s.limits.cooldown));
    let or_none = |v: Option<String>| v.unwrap_or_else(|| "none".into());
    put("guards.max_deactivations", or_none(s.guards.max_deactivations.map(|n| n.to_string())));
    put("guards.max_deactivations_percent", or_none(s.guards.max_deactivations_percent.map(|p| format!("{p}%"))));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use xaas_core::config::Config;
    use xaas_core::{Rejected, RunId, SyncName};

    fn report() -> RunReport {
        let events = [xaas_core::RunEvent::new(
            RunId::parse("r1").unwrap(),
            SyncName::parse("demo").unwrap(),
            OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            xaas_core::EventKind::RunStarted { options: Default::default() },
        )];
        RunReport::from_events(&RunId::parse("r1").unwrap(), &events).unwrap()
    }

    #[test]
    fn progress_is_the_share_of_users_handled_and_100_only_at_the_end() {
        let mut r = report();
        assert_eq!(progress(&r).percent, 0.0);
        // Two pages of 100 read, no end in sight: 3 pages and 300 users
        // expected, 150 handled.
        (r.pages_fetched, r.users_read, r.upserted, r.filtered_out) = (2, 200, 100, 50);
        assert_eq!(progress(&r).percent, 58.3);
        assert_eq!(progress(&r).label, "150 of 200 users read handled · page 2 of ?");
        // The last page is in: 200 users expected.
        r.total_pages = Some(2);
        assert_eq!(progress(&r).percent, 87.5);
        r.upserted = 150;
        assert_eq!(progress(&r).percent, 99.0, "held below 100 while Okta imports");
        r.state = RunState::Completed;
        assert_eq!(progress(&r).percent, 100.0);
    }

    #[test]
    fn counts_follow_import_monitoring() {
        let mut r = report();
        r.rejected = vec![Rejected { external_id: Some("x".into()), reason: "missing mail".into() }];
        r.cooldown_seconds = 12.34;
        let c = counts(&r);
        let keys: Vec<&str> = c.iter().map(|c| c.key).collect();
        assert_eq!(
            keys[..10],
            [
                "read",
                "filtered",
                "rejected",
                "refused",
                "unchanged",
                "upserted",
                "deactivated",
                "sessions",
                "requests",
                "cooldown"
            ]
        );
        assert_eq!(c[2].value, "1");
        assert_eq!(c[9].value, "12.3s");
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_065).unwrap();
        assert_eq!((live(Some(&r), now).state, live(Some(&r), now).took.as_str()), ("RUNNING", "1m05s so far"));
        assert!(!live(None, now).seen);
    }

    #[test]
    fn search_is_case_insensitive_and_bounded() {
        let items = vec!["O'Brien <script>", "obrien-2", "smith"];
        let found = search(&items, " OBRIEN", 10, |s| vec![*s]);
        assert_eq!((found.shown, found.matching, found.total), (vec!["obrien-2"], 1, 3));
        let found = search(&items, "", 2, |s| vec![*s]);
        assert_eq!((found.shown.len(), found.matching), (2, 3));
        assert_eq!(search(&items, "o'brien", 10, |s| vec![*s]).shown, vec!["O'Brien <script>"]);
    }

    #[test]
    fn settings_never_show_a_secret() {
        let toml = r#"
[syncs.demo.source]
tenant = "t"
client_id = "c"
[syncs.demo.target]
okta_url = "https://example.okta.com"
identity_source_id = "0oa1"
auth = "api_token"
"#;
        let env = |k: &str| match k {
            "XAAS_SYNC_DEMO_GRAPH_CLIENT_SECRET" => Some("graph-secret-value".to_string()),
            "XAAS_SYNC_DEMO_OKTA_TOKEN" => Some("okta-token-value".to_string()),
            _ => None,
        };
        let config = Config::parse(toml, &env).unwrap();
        let rows = sync_settings(config.syncs().next().unwrap());
        let text = format!("{rows:?}");
        assert!(!text.contains("graph-secret-value") && !text.contains("okta-token-value"), "{text}");
        let get = |k: &str| rows.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("source.client_secret"), Some(REDACTED));
        assert_eq!(get("target.token"), Some(REDACTED));
        assert_eq!(get("target.identity_source_id"), Some("0oa1"));
        assert_eq!(when(Some(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap())), "2023-11-14T22:13:20Z");
    }
}
