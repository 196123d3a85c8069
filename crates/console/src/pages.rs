//! The page templates (askama, compiled in, HTML-escaped) and the view
//! models they are filled from. Every value from the outside world (user
//! ids, reasons, message bodies, settings) reaches a page only through a
//! template expression, which escapes it.

use askama::Template;
use xaas_broker::ParkedMessage;
use xaas_core::Rejected;
use xaas_core::report::{Plan, RunReport};

use crate::timeline::Chart;
use crate::views::{self, Count, Found, Progress, StateView};

/// Who is looking: whether actions exist at all, and the CSRF token of the
/// viewer's session when logged in (the forms carry it).
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    pub actions: bool,
    pub csrf: Option<String>,
}

/// One run, as a line of the runs list or the head of its page.
#[derive(Debug, Clone)]
pub struct RunLine {
    pub id: String,
    pub sync: String,
    pub mode: String,
    pub dry_run: bool,
    pub state: StateView,
    pub started: String,
    pub finished: String,
    pub took: String,
    pub percent: f64,
    pub read: u32,
    pub upserted: u32,
    pub deactivated: u32,
    pub rejected: usize,
}

impl RunLine {
    pub fn new(r: &RunReport, now: time::OffsetDateTime) -> Self {
        Self {
            id: r.run_id.to_string(),
            sync: r.sync.to_string(),
            mode: r.options.as_ref().map_or_else(|| "?".into(), |o| o.mode.to_string()),
            dry_run: r.options.as_ref().is_some_and(|o| o.dry_run),
            state: views::state_view(&r.state),
            started: views::when(r.started_at),
            finished: views::when(r.finished_at),
            took: views::took(r, now),
            percent: views::progress(r).percent,
            read: r.users_read,
            upserted: r.upserted,
            deactivated: r.deactivated,
            rejected: r.rejected.len() + r.refused_by_okta.len(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncBlock {
    pub sync: String,
    pub total: usize,
    pub runs: Vec<RunLine>,
    pub last_success: Option<RunLine>,
}

#[derive(Template)]
#[template(path = "runs.html")]
pub struct RunsPage {
    pub viewer: Viewer,
    pub syncs: Vec<SyncBlock>,
}

#[derive(Template)]
#[template(path = "runs_table.html")]
pub struct RunsTable {
    pub syncs: Vec<SyncBlock>,
}

#[derive(Debug, Clone)]
pub struct SessionLine {
    pub id: String,
    pub requests: u32,
    pub profiles: u32,
    pub status: &'static str,
}

#[derive(Debug, Clone)]
pub struct PlanLine {
    pub action: &'static str,
    pub id: String,
    pub changed: String,
}

pub struct PlanView {
    pub create: u32,
    pub update: u32,
    pub deactivate: u32,
    pub unchanged: u32,
    pub users: Found<PlanLine>,
}

/// At most this many users of each list are put on a page.
pub const LIST_LIMIT: usize = 500;

#[derive(Template)]
#[template(path = "run.html")]
pub struct RunPage {
    pub viewer: Viewer,
    pub id: String,
    pub seen: bool,
    pub over: bool,
    pub run: Option<RunLine>,
    pub notes: Vec<(&'static str, String)>,
    pub progress: Progress,
    pub counts: Vec<Count>,
    pub chart: Chart,
    pub sessions: Vec<SessionLine>,
    pub q: String,
    pub rejected: Found<(String, String)>,
    pub refused: Found<(String, String)>,
    pub plan: Option<PlanView>,
}

fn pairs(list: &[Rejected]) -> Vec<(String, String)> {
    list.iter().map(|r| (r.external_id.clone().unwrap_or_else(|| "(no id)".into()), r.reason.clone())).collect()
}

fn by_pair(p: &(String, String)) -> Vec<&str> {
    vec![p.0.as_str(), p.1.as_str()]
}

impl RunPage {
    pub fn new(
        viewer: Viewer,
        id: String,
        report: Option<RunReport>,
        plan: Option<Plan>,
        chart: Chart,
        q: String,
        now: time::OffsetDateTime,
    ) -> Self {
        let empty = || Found { shown: Vec::new(), matching: 0, total: 0 };
        let Some(r) = report else {
            return Self {
                viewer,
                id,
                seen: false,
                over: false,
                run: None,
                notes: Vec::new(),
                progress: views::live(None, now).progress,
                counts: Vec::new(),
                chart,
                sessions: Vec::new(),
                q,
                rejected: empty(),
                refused: empty(),
                plan: None,
            };
        };
        let notes = [
            ("Queued behind run", r.queued_behind.as_ref().map(ToString::to_string)),
            ("Full resync", r.full_resync.clone()),
            ("Guard tripped", r.guard_tripped.clone()),
            ("Override", r.mass_deactivation_allowed.then(|| "--allow-mass-deactivation was given".to_string())),
            ("Guard overridden", r.guard_overridden.clone()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
        let sessions = r
            .sessions
            .iter()
            .map(|s| SessionLine {
                id: s.id.clone(),
                requests: s.requests,
                profiles: s.profiles,
                status: s.status.map_or("pending", |st| st.as_str()),
            })
            .collect();
        let plan = plan.map(|p| {
            let lines: Vec<PlanLine> = p
                .users
                .iter()
                .map(|u| PlanLine {
                    action: u.action.as_str(),
                    id: u.external_id.to_string(),
                    changed: u.changed.join(", "),
                })
                .collect();
            PlanView {
                create: p.create,
                update: p.update,
                deactivate: p.deactivate,
                unchanged: p.unchanged,
                users: views::search(&lines, &q, LIST_LIMIT, |l| vec![l.id.as_str(), l.action, l.changed.as_str()]),
            }
        });
        Self {
            viewer,
            id,
            seen: true,
            over: r.state.is_over(),
            run: Some(RunLine::new(&r, now)),
            notes,
            progress: views::progress(&r),
            counts: views::counts(&r),
            chart,
            sessions,
            rejected: views::search(&pairs(&r.rejected), &q, LIST_LIMIT, by_pair),
            refused: views::search(&pairs(&r.refused_by_okta), &q, LIST_LIMIT, by_pair),
            q,
            plan,
        }
    }
}

#[derive(Template)]
#[template(path = "timeline.html")]
pub struct TimelineFragment {
    pub chart: Chart,
}

/// A parked message as its row shows it.
#[derive(Debug, Clone)]
pub struct ParkedLine {
    pub position: usize,
    /// For the replay form; absent when the message has no id.
    pub id: Option<String>,
    pub message_id: String,
    pub origin: String,
    pub reason: String,
    pub error: String,
    pub parked_at: String,
    pub attempts: u32,
}

impl From<&ParkedMessage> for ParkedLine {
    fn from(m: &ParkedMessage) -> Self {
        Self {
            position: m.position,
            id: m.message_id.clone(),
            message_id: m.message_id.clone().unwrap_or_else(|| "-".into()),
            origin: m.origin_queue.clone().unwrap_or_else(|| "?".into()),
            reason: m.reason.clone(),
            error: m.error.clone().unwrap_or_default(),
            parked_at: m.parked_at.clone().unwrap_or_else(|| "-".into()),
            attempts: m.attempt,
        }
    }
}

#[derive(Template)]
#[template(path = "parked.html")]
pub struct ParkedPage {
    pub viewer: Viewer,
    pub done: Option<String>,
    pub messages: Vec<ParkedLine>,
    pub more: bool,
}

/// Characters of a parked body put on its page.
pub const BODY_LIMIT: usize = 8000;

#[derive(Template)]
#[template(path = "parked_one.html")]
pub struct ParkedOnePage {
    pub viewer: Viewer,
    pub m: ParkedLine,
    pub body: String,
    pub body_bytes: usize,
    pub body_cut: bool,
}

#[derive(Debug, Clone)]
pub struct SyncView {
    pub name: String,
    pub next_run: String,
    pub roster: String,
    pub last_run: Option<(String, StateView)>,
    pub last_success: Option<(String, String)>,
    pub settings: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "syncs.html")]
pub struct SyncsPage {
    pub viewer: Viewer,
    pub syncs: Vec<SyncView>,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub viewer: Viewer,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub viewer: Viewer,
    pub heading: String,
    pub text: String,
    pub back: String,
}
