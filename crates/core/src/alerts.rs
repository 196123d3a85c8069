//! Alerts: what someone should be told about, decided from the events
//! stream and the parked queue, and the webhook bodies that tell them.
//!
//! Four things alert, each at most once per key:
//! - a run failed (`RunFailed`; key: the run, however many `RunFailed` it records);
//! - a guard tripped (`GuardTripped`; key: the run);
//! - a message was parked (seen in the parked queue, since parking by the
//!   broker's delivery limit records no event; key: the message id, when it
//!   was parked and whether it is a replayed copy);
//! - a sync recovered: the first run to complete after a failed one (key:
//!   the completing run). Dry runs neither fail a sync nor recover it.
//!
//! [`AlertFold`] is pure: the driver (`workers::alerts`) feeds it what it
//! reads and posts what comes out. Events older than the fold's `since` only
//! update its state (which sync's last run failed), so a driver that starts
//! reading from the first retained event does not re-send a week of alerts.
//! Each alert has a deterministic [`Alert::id`], so that a receiver can
//! drop the duplicates a restarted driver may send.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::ConfigError;
use crate::ids::{RunId, SyncName};
use crate::messages::{EventKind, RunEvent};
use crate::secret::SecretRef;

/// Which body the webhook gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertFormat {
    /// A flat JSON object (`id`, `type`, `sync`, `run_id`, `summary`, …).
    Json,
    /// A Slack incoming-webhook body: `text` plus one `section` block.
    Slack,
}

/// What can alert; the names are those of `[syncs.<name>.alerts] events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertKind {
    RunFailed,
    GuardTripped,
    MessageParked,
    RunRecovered,
}

impl AlertKind {
    pub const ALL: [AlertKind; 4] = [Self::RunFailed, Self::GuardTripped, Self::MessageParked, Self::RunRecovered];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunFailed => "run_failed",
            Self::GuardTripped => "guard_tripped",
            Self::MessageParked => "message_parked",
            Self::RunRecovered => "run_recovered",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// `[syncs.<name>.alerts]`: present means the sync has a webhook.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// The webhook URL is a credential (a Slack URL is its own secret), so
    /// it is read like any secret: `webhook_url_env` (default
    /// `XAAS_SYNC_<NAME>_ALERT_WEBHOOK`) or `webhook_url_file`.
    pub webhook: SecretRef,
    pub format: AlertFormat,
    pub events: BTreeSet<AlertKind>,
    /// Plain http to a host other than loopback.
    pub allow_insecure_http: bool,
}

impl AlertsConfig {
    pub fn wants(&self, alert: &Alert) -> bool {
        self.events.contains(&alert.kind())
    }
}

/// Checks a webhook URL read from its secret. Errors name `setting` and
/// never show the URL: its path is often the credential.
pub fn webhook_url(setting: &str, raw: &str, allow_insecure_http: bool) -> Result<url::Url, ConfigError> {
    let invalid = |problem: String| ConfigError::Invalid { setting: setting.to_string(), problem };
    let url = url::Url::parse(raw.trim())
        .map_err(|e| invalid(format!("the webhook URL it holds is not a valid URL ({e}); it is not shown")))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" if url.has_host() => Ok(url),
        "http" if url.has_host() && (loopback || allow_insecure_http) => Ok(url),
        "http" if url.has_host() => Err(invalid(
            "the webhook URL it holds uses http to a non-loopback host; use https, or set \
             allow_insecure_http = true in the alerts table for a test network"
                .into(),
        )),
        _ => Err(invalid("the webhook URL it holds must be an https:// URL (it is not shown)".into())),
    }
}

/// One thing to tell a sync's webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alert {
    RunFailed { sync: SyncName, run: RunId, reason: String, at: OffsetDateTime },
    GuardTripped { sync: SyncName, run: RunId, guard: String, detail: String, at: OffsetDateTime },
    MessageParked { sync: SyncName, parked: ParkedNote },
    RunRecovered { sync: SyncName, run: RunId, after: RunId, at: OffsetDateTime },
}

/// What the parked queue says about one message, as the driver lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedNote {
    pub message_id: Option<String>,
    pub queue: Option<String>,
    /// `x-parked-reason`, or the broker's (`delivery_limit`).
    pub reason: String,
    pub error: Option<String>,
    /// `x-parked-at` (absent when the broker parked it).
    pub parked_at: Option<String>,
    /// `x-replayed-at`: a replayed copy parked again is parked anew.
    pub replayed_at: Option<String>,
    /// The sync it belongs to, when its body or its queue says.
    pub sync: Option<SyncName>,
    pub run: Option<RunId>,
}

impl ParkedNote {
    /// Tells one parking of a message from another.
    pub fn key(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.message_id.as_deref().unwrap_or("-"),
            self.parked_at.as_deref().unwrap_or("-"),
            self.replayed_at.as_deref().unwrap_or("-"),
            self.reason
        )
    }

    fn parked_at(&self) -> Option<OffsetDateTime> {
        self.parked_at.as_deref().and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
    }
}

/// The sync a parked message belongs to: the `sync` of its JSON body, else
/// the sync of its batches queue (`<prefix>.batches.<sync>`).
pub fn parked_sync(body: &[u8], queue: Option<&str>, batches_prefix: &str) -> (Option<SyncName>, Option<RunId>) {
    #[derive(serde::Deserialize)]
    struct Probe {
        sync: Option<String>,
        run_id: Option<String>,
    }
    let probe = serde_json::from_slice::<Probe>(body).ok();
    let run = probe.as_ref().and_then(|p| p.run_id.as_deref()).and_then(|r| RunId::parse(r).ok());
    let from_body = probe.and_then(|p| p.sync).and_then(|s| SyncName::parse(s).ok());
    let from_queue = || queue.and_then(|q| q.strip_prefix(batches_prefix)).and_then(|s| SyncName::parse(s).ok());
    (from_body.or_else(from_queue), run)
}

impl Alert {
    pub fn kind(&self) -> AlertKind {
        match self {
            Self::RunFailed { .. } => AlertKind::RunFailed,
            Self::GuardTripped { .. } => AlertKind::GuardTripped,
            Self::MessageParked { .. } => AlertKind::MessageParked,
            Self::RunRecovered { .. } => AlertKind::RunRecovered,
        }
    }

    pub fn sync(&self) -> &SyncName {
        match self {
            Self::RunFailed { sync, .. }
            | Self::GuardTripped { sync, .. }
            | Self::MessageParked { sync, .. }
            | Self::RunRecovered { sync, .. } => sync,
        }
    }

    /// Deterministic: the same alert always has the same id.
    pub fn id(&self) -> String {
        let kind = self.kind().as_str();
        match self {
            Self::RunFailed { sync, run, .. } | Self::GuardTripped { sync, run, .. } => format!("{kind}:{sync}:{run}"),
            Self::RunRecovered { sync, run, .. } => format!("{kind}:{sync}:{run}"),
            Self::MessageParked { sync, parked } => format!("{kind}:{sync}:{}", parked.key()),
        }
    }

    /// One line for a person.
    pub fn summary(&self) -> String {
        match self {
            Self::RunFailed { sync, run, reason, .. } => format!("xaas-sync {sync}: run {run} failed: {reason}"),
            Self::GuardTripped { sync, run, guard, detail, .. } => {
                format!("xaas-sync {sync}: a guard tripped in run {run} ({detail}): {guard}")
            }
            Self::MessageParked { sync, parked } => format!(
                "xaas-sync {sync}: a message was parked from {} ({}{}); see `xaas parked list`",
                parked.queue.as_deref().unwrap_or("an unknown queue"),
                parked.reason,
                parked.error.as_deref().map(|e| format!(": {}", clip(e))).unwrap_or_default(),
            ),
            Self::RunRecovered { sync, run, after, .. } => {
                format!("xaas-sync {sync}: recovered, run {run} completed after run {after} had failed")
            }
        }
    }

    /// The webhook body in `format`.
    pub fn body(&self, format: AlertFormat) -> Value {
        match format {
            AlertFormat::Json => self.json(),
            AlertFormat::Slack => {
                let text = slack_escape(&self.summary());
                json!({
                    "text": text,
                    "blocks": [{ "type": "section", "text": { "type": "mrkdwn", "text": text } }],
                })
            }
        }
    }

    fn json(&self) -> Value {
        let at = |t: &OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
        let mut v = json!({
            "id": self.id(),
            "type": self.kind().as_str(),
            "sync": self.sync().as_str(),
            "summary": self.summary(),
        });
        let fields = match self {
            Self::RunFailed { run, reason, at: t, .. } => json!({ "run_id": run, "reason": reason, "at": at(t) }),
            Self::GuardTripped { run, guard, detail, at: t, .. } => {
                json!({ "run_id": run, "guard": guard, "detail": detail, "at": at(t) })
            }
            Self::MessageParked { parked, .. } => json!({
                "run_id": parked.run,
                "queue": parked.queue,
                "reason": parked.reason,
                "error": parked.error.as_deref().map(clip),
                "message_id": parked.message_id,
                "at": parked.parked_at,
            }),
            Self::RunRecovered { run, after, at: t, .. } => json!({ "run_id": run, "after": after, "at": at(t) }),
        };
        if let (Value::Object(v), Value::Object(f)) = (&mut v, fields) {
            v.extend(f);
        }
        v
    }
}

/// Errors can quote a whole message body; an alert needs its start.
fn clip(s: &str) -> String {
    const MAX: usize = 300;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Slack reads `&`, `<` and `>` as markup.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The state alerts are decided from: what was already alerted, and which
/// sync's latest (non-dry) run failed.
#[derive(Debug, Clone)]
pub struct AlertFold {
    since: OffsetDateTime,
    seen: HashSet<String>,
    failed: HashMap<SyncName, RunId>,
    dry: HashSet<RunId>,
    parked_listed: bool,
}

impl AlertFold {
    /// Alerts for what happens from `since` on; what came before only
    /// sets the state.
    pub fn new(since: OffsetDateTime) -> Self {
        Self { since, seen: HashSet::new(), failed: HashMap::new(), dry: HashSet::new(), parked_listed: false }
    }

    /// The alerts `e` raises, in order; none for an event seen before.
    pub fn observe(&mut self, e: &RunEvent) -> Vec<Alert> {
        let (sync, run) = (&e.sync, &e.run_id);
        let mut out = Vec::new();
        match &e.kind {
            EventKind::RunStarted { options } | EventKind::RunQueued { options, .. } if options.dry_run => {
                self.dry.insert(run.clone());
            }
            EventKind::RunFailed { reason } => {
                if !self.dry.contains(run) {
                    self.failed.insert(sync.clone(), run.clone());
                }
                out.push(Alert::RunFailed { sync: sync.clone(), run: run.clone(), reason: reason.clone(), at: e.at });
            }
            EventKind::GuardTripped { reason, deactivations, roster } => out.push(Alert::GuardTripped {
                sync: sync.clone(),
                run: run.clone(),
                guard: reason.clone(),
                detail: format!("{deactivations} deactivations, {roster} users active in Okta"),
                at: e.at,
            }),
            EventKind::RunCompleted { .. } if !self.dry.contains(run) => {
                if let Some(after) = self.failed.remove(sync) {
                    out.push(Alert::RunRecovered { sync: sync.clone(), run: run.clone(), after, at: e.at });
                }
            }
            _ => {}
        }
        let old = e.at < self.since;
        out.retain(|a| self.seen.insert(a.id()) && !old);
        out
    }

    /// The alerts a listing of the parked queue raises: one per message not
    /// seen before, for the sync it belongs to, or for each of `syncs` when
    /// that cannot be told (an unreadable body on a shared queue). On the
    /// first listing, a message parked before `since`, or at an unknown
    /// time, is taken as already known.
    pub fn observe_parked(&mut self, listed: &[ParkedNote], syncs: &[SyncName]) -> Vec<Alert> {
        let first = !self.parked_listed;
        self.parked_listed = true;
        let mut out = Vec::new();
        for note in listed {
            if !self.seen.insert(format!("parked:{}", note.key())) {
                continue;
            }
            let old = note.parked_at().map_or(first, |t| t < self.since);
            if old {
                continue;
            }
            let targets: Vec<SyncName> = match &note.sync {
                Some(s) => vec![s.clone()],
                None => syncs.to_vec(),
            };
            out.extend(targets.into_iter().map(|sync| Alert::MessageParked { sync, parked: note.clone() }));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::RunOptions;

    fn sync() -> SyncName {
        SyncName::parse("demo").unwrap()
    }

    fn run(s: &str) -> RunId {
        RunId::parse(s).unwrap()
    }

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).unwrap()
    }

    fn ev(r: &str, secs: i64, kind: EventKind) -> RunEvent {
        RunEvent::new(run(r), sync(), at(secs), kind)
    }

    fn failed(r: &str, secs: i64) -> RunEvent {
        ev(r, secs, EventKind::RunFailed { reason: "okta said no".into() })
    }

    fn completed(r: &str, secs: i64) -> RunEvent {
        ev(r, secs, EventKind::RunCompleted { delta_link: None })
    }

    fn fold(events: &[RunEvent]) -> Vec<Alert> {
        let mut f = AlertFold::new(at(0));
        events.iter().flat_map(|e| f.observe(e)).collect()
    }

    fn kinds(alerts: &[Alert]) -> Vec<(AlertKind, String)> {
        alerts.iter().map(|a| (a.kind(), a.id())).collect()
    }

    #[test]
    fn a_trip_fails_the_run_and_the_next_completed_run_recovers_it_once() {
        let trip = ev("a", 1, EventKind::GuardTripped { reason: "too many".into(), deactivations: 30, roster: 100 });
        let events = [
            ev("a", 0, EventKind::RunStarted { options: RunOptions::default() }),
            trip,
            failed("a", 2),
            // A second RunFailed of the same run (a stage gave up too) is the same alert.
            failed("a", 3),
            completed("b", 4),
            completed("c", 5),
        ];
        let alerts = fold(&events);
        assert_eq!(
            kinds(&alerts),
            vec![
                (AlertKind::GuardTripped, "guard_tripped:demo:a".into()),
                (AlertKind::RunFailed, "run_failed:demo:a".into()),
                (AlertKind::RunRecovered, "run_recovered:demo:b".into()),
            ]
        );
        assert!(matches!(&alerts[2], Alert::RunRecovered { after, .. } if *after == run("a")));
        assert!(alerts[0].summary().contains("30 deactivations, 100 users active in Okta"), "{}", alerts[0].summary());
    }

    #[test]
    fn the_same_events_seen_twice_alert_once() {
        let events = [failed("a", 1), completed("b", 2)];
        let mut f = AlertFold::new(at(0));
        let first: Vec<Alert> = events.iter().flat_map(|e| f.observe(e)).collect();
        let again: Vec<Alert> = events.iter().flat_map(|e| f.observe(e)).collect();
        assert_eq!(first.len(), 2);
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn old_events_set_the_state_without_alerting() {
        let mut f = AlertFold::new(at(10));
        assert!(f.observe(&failed("a", 1)).is_empty(), "a failure before `since` is history");
        let recovered = f.observe(&completed("b", 11));
        assert_eq!(kinds(&recovered), vec![(AlertKind::RunRecovered, "run_recovered:demo:b".into())]);
        // A completed run with no failure before it is not news.
        assert!(fold(&[completed("a", 1)]).is_empty());
    }

    #[test]
    fn dry_runs_neither_fail_a_sync_nor_recover_it_and_syncs_are_apart() {
        let dry = RunOptions { dry_run: true, ..RunOptions::default() };
        let other = RunEvent::new(
            run("x"),
            SyncName::parse("other").unwrap(),
            at(3),
            EventKind::RunCompleted { delta_link: None },
        );
        let events = [
            ev("d", 0, EventKind::RunStarted { options: dry.clone() }),
            failed("d", 1),
            completed("b", 2),
            failed("a", 2),
            other,
            ev("e", 4, EventKind::RunStarted { options: dry }),
            completed("e", 5),
            completed("c", 6),
        ];
        let got = kinds(&fold(&events));
        assert_eq!(
            got,
            vec![
                (AlertKind::RunFailed, "run_failed:demo:d".into()),
                (AlertKind::RunFailed, "run_failed:demo:a".into()),
                (AlertKind::RunRecovered, "run_recovered:demo:c".into()),
            ]
        );
    }

    fn note(id: &str, parked_at: Option<i64>, sync: Option<&str>) -> ParkedNote {
        ParkedNote {
            message_id: Some(id.into()),
            queue: Some("xaas.requests".into()),
            reason: "undecodable".into(),
            error: Some("not valid JSON".into()),
            parked_at: parked_at.map(|s| at(s).format(&Rfc3339).unwrap()),
            replayed_at: None,
            sync: sync.map(|s| SyncName::parse(s).unwrap()),
            run: None,
        }
    }

    #[test]
    fn each_parking_alerts_once_for_its_sync_or_for_every_sync_when_unknown() {
        let syncs = [sync(), SyncName::parse("other").unwrap()];
        let mut f = AlertFold::new(at(10));
        // First listing: parked before `since` or at an unknown time is known already.
        let first = f.observe_parked(&[note("old", Some(1), Some("demo")), note("broker", None, None)], &syncs);
        assert!(first.is_empty(), "{first:?}");
        let listed =
            [note("old", Some(1), Some("demo")), note("new", Some(11), Some("demo")), note("anon", None, None)];
        let got = f.observe_parked(&listed, &syncs);
        let targets: Vec<(String, String)> = got
            .iter()
            .map(|a| match a {
                Alert::MessageParked { sync, parked } => (sync.to_string(), parked.message_id.clone().unwrap()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            targets,
            vec![("demo".into(), "new".into()), ("demo".into(), "anon".into()), ("other".into(), "anon".into())]
        );
        assert!(f.observe_parked(&listed, &syncs).is_empty(), "listed again: nothing new");
        // A replayed copy parked again is a new parking.
        let again = ParkedNote { replayed_at: Some("t".into()), ..note("new", Some(12), Some("demo")) };
        assert_eq!(f.observe_parked(&[again], &syncs).len(), 1);
    }

    #[test]
    fn parked_messages_are_attributed_by_body_then_by_batches_queue() {
        let (s, r) = parked_sync(br#"{"v":99,"sync":"demo","run_id":"r-1"}"#, Some("p.requests"), "p.batches.");
        assert_eq!((s, r), (Some(sync()), Some(run("r-1"))));
        let (s, _) = parked_sync(b"{not json", Some("p.batches.other"), "p.batches.");
        assert_eq!(s, Some(SyncName::parse("other").unwrap()));
        assert_eq!(parked_sync(b"{not json", Some("p.pages"), "p.batches."), (None, None));
    }

    #[test]
    fn bodies_in_both_formats() {
        let alert = Alert::RunFailed { sync: sync(), run: run("a"), reason: "O'Brien <script> & co".into(), at: at(0) };
        let j = alert.body(AlertFormat::Json);
        assert_eq!(j["type"], "run_failed");
        assert_eq!(j["id"], "run_failed:demo:a");
        assert_eq!(j["sync"], "demo");
        assert_eq!(j["run_id"], "a");
        assert_eq!(j["reason"], "O'Brien <script> & co");
        assert_eq!(j["at"], "2023-11-14T22:13:20Z");
        let s = alert.body(AlertFormat::Slack);
        let text = s["text"].as_str().unwrap();
        assert!(text.contains("run a failed: O'Brien &lt;script&gt; &amp; co"), "{text}");
        assert_eq!(s["blocks"][0]["text"]["text"], text);
        assert_eq!(s["blocks"][0]["type"], "section");
    }

    #[test]
    fn webhook_urls_are_checked_without_being_shown() {
        let secret = "https://hooks.slack.com/services/T000/B000/sekrit";
        assert!(webhook_url("s", secret, false).is_ok());
        assert!(webhook_url("s", "http://127.0.0.1:9/hook", false).is_ok());
        for bad in ["http://hooks.example.com/sekrit", "ftp://x/sekrit", "sekrit", "mailto:sekrit@example.com"] {
            let err = webhook_url("syncs.demo.alerts.webhook_url_env", bad, false).unwrap_err().to_string();
            assert!(err.starts_with("syncs.demo.alerts.webhook_url_env: "), "{err}");
            assert!(!err.contains("sekrit"), "{err}");
        }
        assert!(webhook_url("s", "http://hooks.example.com/x", true).is_ok());
    }

    const MINIMAL: &str = r#"
        [syncs.demo.source]
        tenant = "contoso.onmicrosoft.com"
        client_id = "app-1"
        [syncs.demo.target]
        okta_url = "https://acme.okta.com"
        identity_source_id = "0oa1234567890abcdefg"
    "#;

    fn alerts_of(extra: &str, env: &[(&str, &str)]) -> Result<Option<AlertsConfig>, String> {
        let text = format!("{MINIMAL}\n{extra}\n");
        let vars: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let config = crate::config::Config::parse(&text, &|k| vars.get(k).cloned()).map_err(|e| e.to_string())?;
        Ok(config.sync(&sync()).unwrap().alerts.clone())
    }

    #[test]
    fn the_alerts_table_is_optional_and_checked() {
        assert!(alerts_of("", &[]).unwrap().is_none(), "no table, no alerts");
        let a = alerts_of("[syncs.demo.alerts]", &[]).unwrap().expect("an empty table turns alerts on");
        assert_eq!(a.format, AlertFormat::Json);
        assert_eq!(a.events.len(), 4);
        assert_eq!(a.webhook.setting(), "syncs.demo.alerts.webhook_url_env");
        let hook = "https://hooks.slack.com/services/T0/B0/sekrit";
        let env = [("XAAS_SYNC_DEMO_ALERT_WEBHOOK", hook)];
        let url = a.webhook.resolve(&|k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()), &|_| {
            Err(std::io::ErrorKind::NotFound.into())
        });
        assert_eq!(secrecy::ExposeSecret::expose_secret(&url.unwrap()), hook);

        let a = alerts_of(
            "[syncs.demo.alerts]\nformat = \"slack\"\nevents = [\"run_failed\", \"run_recovered\"]\nwebhook_url_env = \"HOOK\"",
            &[],
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.format, AlertFormat::Slack);
        assert_eq!(a.events, [AlertKind::RunFailed, AlertKind::RunRecovered].into_iter().collect());
        let parked = Alert::MessageParked { sync: sync(), parked: note("m", None, None) };
        assert!(!a.wants(&parked));

        let err = alerts_of("[syncs.demo.alerts]\nformat = \"teams\"", &[]).unwrap_err();
        assert!(err.starts_with("syncs.demo.alerts.format: \"teams\" is not an alert format"), "{err}");
        let err = alerts_of("[syncs.demo.alerts]\nevents = [\"run_failed\", \"oops\"]", &[]).unwrap_err();
        assert!(err.contains("syncs.demo.alerts.events: \"oops\" is not an alert; use run_failed,"), "{err}");
        let err = alerts_of("[syncs.demo.alerts]\nevents = []", &[]).unwrap_err();
        assert!(err.contains("syncs.demo.alerts.events: is empty"), "{err}");
        let err = alerts_of("[syncs.demo.alerts]\nurl = \"https://x\"", &[]).unwrap_err();
        assert!(err.contains("syncs.demo.alerts.url: unknown setting"), "{err}");
        let err = alerts_of("[syncs.demo.alerts]\nformat = \"teams\"", &[("XAAS__SYNCS__DEMO__ALERTS__FORMAT", "xml")])
            .unwrap_err();
        assert!(
            err.contains("\"xml\" is not an alert format") && err.contains("XAAS__SYNCS__DEMO__ALERTS__FORMAT"),
            "{err}"
        );
    }
}
