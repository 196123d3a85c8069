//! The console's routes: thin handlers that read the run index, the
//! broker or the configuration, fill a page, and answer. Every action is a
//! POST that `auth` must allow first.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use xaas_broker::{Broker, BrokerError, Replay};
use xaas_core::config::Config;
use xaas_core::roster::Roster;
use xaas_core::{Mode, RunId, SyncName, SyncRequest};
use xaas_workers::scheduler::Schedule;

use crate::auth::{self, Access, Denied, Presented};
use crate::pages::*;
use crate::tail::LiveIndex;
use crate::timeline;
use crate::views;

/// Progress streams send at most this often; a busy run's events come
/// much faster than anyone can read them.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// The runs list refreshes at most this often.
const CHANGES_EVERY: Duration = Duration::from_secs(1);
/// Runs shown per sync on the runs page.
const RUNS_PER_SYNC: usize = 25;
/// Parked messages listed (a listing moves every body through the console).
const PARKED_LIMIT: usize = 100;
/// A roster read is reused this long, unless a run of the sync ended since.
const ROSTER_TTL: Duration = Duration::from_secs(60);
/// A roster read that takes longer shows as unavailable.
const ROSTER_READ_LIMIT: Duration = Duration::from_secs(10);
/// The timeline's width in pixels.
const TIMELINE_WIDTH: f64 = 1200.0;

/// What every handler shares.
pub(crate) struct Inner {
    pub live: Arc<LiveIndex>,
    pub broker: Broker,
    pub config: Config,
    pub access: Access,
    pub shutdown: CancellationToken,
    rosters: tokio::sync::Mutex<HashMap<SyncName, RosterSeen>>,
}

struct RosterSeen {
    text: String,
    ended_runs: usize,
    at: Instant,
}

type App = Arc<Inner>;

pub(crate) fn router(
    live: Arc<LiveIndex>,
    broker: Broker,
    config: Config,
    access: Access,
    shutdown: CancellationToken,
) -> Router {
    let app = Arc::new(Inner { live, broker, config, access, shutdown, rosters: Default::default() });
    Router::new()
        .route("/", get(runs_page))
        .route("/runs/table", get(runs_table))
        .route("/events", get(changes))
        .route("/runs/{run}", get(run_page))
        .route("/runs/{run}/progress", get(run_progress))
        .route("/runs/{run}/timeline", get(run_timeline))
        .route("/parked", get(parked_page))
        .route("/parked/{position}", get(parked_one))
        .route("/parked/replay", post(parked_replay))
        .route("/parked/purge", post(parked_purge))
        .route("/syncs", get(syncs_page))
        .route("/syncs/{sync}/enqueue", post(enqueue))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/static/console.js", get(script))
        .route("/static/console.css", get(style))
        .fallback(not_found)
        .layer(axum::middleware::map_response(protect))
        .with_state(app)
}

/// Headers on every answer: scripts and styles only from the console
/// itself (an injected inline script would not run even if escaping ever
/// failed), no framing, no caching of pages that show live data.
async fn protect(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    res
}

/// Why a page could not be shown, as an answer with a page that says so.
pub(crate) enum PageError {
    NotFound(String),
    Denied(Denied),
    BadRequest(String),
    Broker(BrokerError),
    Render(askama::Error),
}

impl From<askama::Error> for PageError {
    fn from(e: askama::Error) -> Self {
        Self::Render(e)
    }
}

impl From<BrokerError> for PageError {
    fn from(e: BrokerError) -> Self {
        Self::Broker(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, heading, text) = match self {
            Self::NotFound(what) => (StatusCode::NOT_FOUND, "Not found".to_string(), what),
            Self::Denied(d) => {
                let status = StatusCode::from_u16(d.status()).unwrap_or(StatusCode::FORBIDDEN);
                (status, "Not allowed".to_string(), d.to_string())
            }
            Self::BadRequest(why) => (StatusCode::BAD_REQUEST, "Bad request".to_string(), why),
            Self::Broker(e) => (StatusCode::SERVICE_UNAVAILABLE, "RabbitMQ did not answer".to_string(), e.to_string()),
            Self::Render(e) => {
                tracing::error!(error = %e, "console: a page failed to render");
                (StatusCode::INTERNAL_SERVER_ERROR, "Page error".to_string(), "the page could not be rendered".into())
            }
        };
        let page = MessagePage { viewer: Viewer::default(), heading, text, back: "/".into() };
        let mut res = match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, "error").into_response(),
        };
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

type Page = Result<Response, PageError>;

fn html(t: &impl Template) -> Page {
    Ok(Html(t.render()?).into_response())
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn session_id(headers: &HeaderMap) -> Option<&str> {
    header_str(headers, header::COOKIE).and_then(|c| auth::cookie(c, auth::SESSION_COOKIE))
}

fn viewer(app: &App, headers: &HeaderMap) -> Viewer {
    let csrf = session_id(headers).and_then(|id| app.access.csrf(id, Instant::now()));
    Viewer { actions: app.access.enabled(), csrf }
}

/// Lets the request act, or says why not. Called before its form is read.
fn authorize(app: &App, headers: &HeaderMap, csrf: Option<&str>) -> Result<(), PageError> {
    let presented = Presented {
        authorization: header_str(headers, header::AUTHORIZATION),
        session: session_id(headers),
        csrf,
        cross_origin: auth::is_cross_origin(
            header_str(headers, header::ORIGIN),
            header_str(headers, "sec-fetch-site"),
            header_str(headers, header::HOST),
        ),
    };
    app.access.authorize(&presented, Instant::now()).map_err(PageError::Denied)
}

/// The form fields every action may carry.
#[derive(Debug, Default, Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    all: Option<String>,
    #[serde(default)]
    position: Option<usize>,
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    mode: Option<Mode>,
    #[serde(default)]
    dry_run: Option<String>,
}

/// Authorizes an action, then reads its form. The body is read as a form
/// whatever its content type: the CSRF token, not the type, is the guard.
fn action_form(app: &App, headers: &HeaderMap, body: &Bytes) -> Result<ActionForm, PageError> {
    let parsed = serde_urlencoded::from_bytes::<ActionForm>(body);
    let csrf = parsed.as_ref().ok().and_then(|f| f.csrf.as_deref());
    authorize(app, headers, csrf)?;
    parsed.map_err(|e| PageError::BadRequest(format!("the form cannot be read: {e}")))
}

fn parse_run(run: &str) -> Result<RunId, PageError> {
    RunId::parse(run).map_err(|_| PageError::NotFound("no run has this id".into()))
}

fn sync_blocks(app: &App, now: OffsetDateTime) -> Vec<SyncBlock> {
    app.live.read(|index| {
        index
            .syncs(RUNS_PER_SYNC)
            .into_iter()
            .map(|s| SyncBlock {
                sync: s.sync.to_string(),
                total: s.total,
                runs: s.runs.iter().map(|r| RunLine::new(r, now)).collect(),
                last_success: s.last_success.as_ref().map(|r| RunLine::new(r, now)),
            })
            .collect()
    })
}

async fn runs_page(State(app): State<App>, headers: HeaderMap) -> Page {
    html(&RunsPage { viewer: viewer(&app, &headers), syncs: sync_blocks(&app, OffsetDateTime::now_utc()) })
}

async fn runs_table(State(app): State<App>) -> Page {
    html(&RunsTable { syncs: sync_blocks(&app, OffsetDateTime::now_utc()) })
}

/// `changed` whenever any run moved, at most once per `CHANGES_EVERY`.
async fn changes(State(app): State<App>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = app.live.subscribe();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        let version = *rx.borrow_and_update();
        tokio::time::sleep(CHANGES_EVERY).await;
        Some((Ok(Event::default().event("changed").data(version.to_string())), rx))
    });
    Sse::new(stream.take_until(app.shutdown.clone().cancelled_owned())).keep_alive(KeepAlive::default())
}

#[derive(Debug, Default, Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

fn chart(app: &App, run: &RunId, now: OffsetDateTime) -> timeline::Chart {
    app.live.read(|index| match index.timeline(run) {
        Some(t) => timeline::layout(t, now, TIMELINE_WIDTH),
        None => timeline::layout(&Default::default(), now, TIMELINE_WIDTH),
    })
}

async fn run_page(
    State(app): State<App>,
    Path(run): Path<String>,
    Query(search): Query<SearchQuery>,
    headers: HeaderMap,
) -> Page {
    let run = parse_run(&run)?;
    let now = OffsetDateTime::now_utc();
    let (report, plan) = app.live.read(|index| (index.report(&run), index.plan(&run)));
    let chart = chart(&app, &run, now);
    html(&RunPage::new(viewer(&app, &headers), run.to_string(), report, plan, chart, search.q, now))
}

async fn run_timeline(State(app): State<App>, Path(run): Path<String>) -> Page {
    let run = parse_run(&run)?;
    html(&TimelineFragment { chart: chart(&app, &run, OffsetDateTime::now_utc()) })
}

/// `progress` events with the run's numbers (`views::Live`): one at once,
/// then one per change, at most every `PROGRESS_EVERY`; the stream ends
/// after the run's last. The bar never moves back: until the last page is
/// read the total is an estimate, and a bigger page can lower the share.
async fn run_progress(State(app): State<App>, Path(run): Path<String>) -> Result<Response, PageError> {
    let run = parse_run(&run)?;
    let follower = Follower { app: app.clone(), run, rx: app.live.subscribe(), sent: None, peak: 0.0, over: false };
    let stream = futures::stream::unfold(follower, |mut f| async move {
        let event = f.next().await?;
        Some((Ok::<_, Infallible>(event), f))
    });
    let stream = stream.take_until(app.shutdown.clone().cancelled_owned());
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// One progress stream's state.
struct Follower {
    app: App,
    run: RunId,
    rx: tokio::sync::watch::Receiver<u64>,
    /// The run's version last sent.
    sent: Option<Option<u64>>,
    peak: f64,
    over: bool,
}

impl Follower {
    async fn next(&mut self) -> Option<Event> {
        if self.over {
            return None;
        }
        if let Some(sent) = self.sent {
            tokio::time::sleep(PROGRESS_EVERY).await;
            while self.app.live.read(|i| i.run_version(&self.run)) == sent {
                self.rx.changed().await.ok()?;
            }
        }
        let (version, report) = self.app.live.read(|i| (i.run_version(&self.run), i.report(&self.run)));
        let mut live = views::live(report.as_ref(), OffsetDateTime::now_utc());
        self.peak = self.peak.max(live.progress.percent);
        live.progress.percent = self.peak;
        self.sent = Some(version);
        self.over = live.over;
        let data = serde_json::to_string(&live).unwrap_or_default();
        Some(Event::default().event("progress").data(data))
    }
}

async fn parked_page(State(app): State<App>, headers: HeaderMap) -> Page {
    parked_with(&app, &headers, None).await
}

async fn parked_with(app: &App, headers: &HeaderMap, done: Option<String>) -> Page {
    let list = app.broker.parked_list(PARKED_LIMIT + 1).await?;
    let more = list.len() > PARKED_LIMIT;
    let messages = list.iter().take(PARKED_LIMIT).map(ParkedLine::from).collect();
    html(&ParkedPage { viewer: viewer(app, headers), done, messages, more })
}

async fn parked_one(State(app): State<App>, Path(position): Path<usize>, headers: HeaderMap) -> Page {
    let m = app
        .broker
        .parked_get(position)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("no parked message at position {position}")))?;
    let text = String::from_utf8_lossy(&m.body);
    let body: String = text.chars().take(BODY_LIMIT).collect();
    let body_cut = body.len() < text.len();
    html(&ParkedOnePage {
        viewer: viewer(&app, &headers),
        m: ParkedLine::from(&m),
        body,
        body_bytes: m.body.len(),
        body_cut,
    })
}

async fn parked_replay(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Page {
    let form = action_form(&app, &headers, &body)?;
    let which = match (form.all.is_some(), form.message_id, form.position) {
        (true, _, _) => Replay::All,
        (false, Some(id), _) if !id.is_empty() => Replay::MessageId(id),
        (false, _, Some(position)) => Replay::Position(position),
        _ => return Err(PageError::BadRequest("say which message: position, message_id or all".into())),
    };
    let report = app.broker.parked_replay(which).await?;
    tracing::info!(replayed = report.replayed, skipped = report.skipped.len(), "console: parked messages replayed");
    let mut done = format!("Replayed {}.", report.replayed);
    for (id, why) in &report.skipped {
        done.push_str(&format!(" Left parked {}: {why}.", id.as_deref().unwrap_or("(no id)")));
    }
    parked_with(&app, &headers, Some(done)).await
}

async fn parked_purge(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Page {
    action_form(&app, &headers, &body)?;
    let n = app.broker.parked_purge().await?;
    tracing::info!(purged = n, "console: parked messages purged");
    parked_with(&app, &headers, Some(format!("Purged {n}."))).await
}

async fn syncs_page(State(app): State<App>, headers: HeaderMap) -> Page {
    let now = OffsetDateTime::now_utc();
    let mut syncs = Vec::new();
    for s in app.config.syncs() {
        let next_run = match s.schedule.as_deref() {
            None => "none: no schedule".to_string(),
            Some(expr) => match Schedule::parse(&s.name, s.schedule_mode, expr) {
                Ok(schedule) => match schedule.next_after(now) {
                    Some(t) => format!("{} ({} run, by the scheduler worker)", views::when(Some(t)), s.schedule_mode),
                    None => "none: the schedule has no future due time".into(),
                },
                Err(e) => e.to_string(),
            },
        };
        let (last_run, last_success) = app.live.read(|index| {
            let last = index.syncs(1).into_iter().find(|b| b.sync == s.name).and_then(|b| b.runs.into_iter().next());
            let ok = index.last_success(&s.name);
            (
                last.map(|r| (r.run_id.to_string(), views::state_view(&r.state))),
                ok.map(|r| (r.run_id.to_string(), views::when(r.finished_at))),
            )
        });
        syncs.push(SyncView {
            name: s.name.to_string(),
            next_run,
            roster: roster_size(&app, &s.name).await,
            last_run,
            last_success,
            settings: views::sync_settings(s),
        });
    }
    html(&SyncsPage { viewer: viewer(&app, &headers), syncs })
}

/// The roster's size, read again only when a run of the sync has ended
/// since the last read, or that read is older than `ROSTER_TTL`.
async fn roster_size(app: &App, sync: &SyncName) -> String {
    let ended_runs = app.live.read(|i| i.ended_runs(sync));
    let mut cache = app.rosters.lock().await;
    if let Some(seen) = cache.get(sync)
        && seen.ended_runs == ended_runs
        && seen.at.elapsed() < ROSTER_TTL
    {
        return seen.text.clone();
    }
    let text = match tokio::time::timeout(ROSTER_READ_LIMIT, app.broker.read_roster(sync)).await {
        Ok(Ok(records)) => {
            let roster = Roster::replay(sync.clone(), &records);
            if roster.is_known() {
                format!("{} users active in Okta", roster.len())
            } else {
                "unknown: no complete snapshot yet (the next completed run writes one)".into()
            }
        }
        Ok(Err(BrokerError::Unroutable { .. })) => "none yet: this sync has not uploaded anything".into(),
        Ok(Err(e)) => format!("unavailable: {e}"),
        Err(_) => format!("unavailable: the roster stream did not answer within {ROSTER_READ_LIMIT:?}"),
    };
    cache.insert(sync.clone(), RosterSeen { text: text.clone(), ended_runs, at: Instant::now() });
    text
}

async fn enqueue(State(app): State<App>, Path(sync): Path<String>, headers: HeaderMap, body: Bytes) -> Page {
    let form = action_form(&app, &headers, &body)?;
    let sync = SyncName::parse(sync).map_err(|_| PageError::NotFound("no sync has this name".into()))?;
    app.config.sync(&sync).map_err(|e| PageError::NotFound(e.to_string()))?;
    let run_id = RunId::generate();
    let request = SyncRequest {
        v: xaas_core::MESSAGE_VERSION,
        sync: sync.clone(),
        mode: form.mode.unwrap_or_default(),
        dry_run: form.dry_run.is_some_and(|v| v != "false"),
        run_id: Some(run_id.clone()),
        force: false,
        allow_mass_deactivation: false,
        users: Vec::new(),
    };
    app.broker.publish(&app.broker.names().requests(), &request).await?;
    tracing::info!(%sync, %run_id, mode = %request.mode, dry_run = request.dry_run, "console: run requested");
    Ok(Redirect::to(&format!("/runs/{run_id}")).into_response())
}

async fn login_page(State(app): State<App>, headers: HeaderMap) -> Page {
    html(&LoginPage { viewer: viewer(&app, &headers) })
}

#[derive(Debug, Default, Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

/// Needs no CSRF token: a forged login would have to know the admin token.
async fn login(State(app): State<App>, body: Bytes) -> Page {
    let form: LoginForm = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let session = app.access.login(&form.token, Instant::now()).map_err(PageError::Denied)?;
    tracing::info!("console: an admin logged in");
    let mut res = Redirect::to("/").into_response();
    let cookie = HeaderValue::from_str(&auth::session_cookie(Some(&session.id)))
        .map_err(|_| PageError::BadRequest("bad cookie".into()))?;
    res.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(res)
}

async fn logout(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Page {
    action_form(&app, &headers, &body)?;
    if let Some(id) = session_id(&headers) {
        app.access.logout(id);
    }
    let mut res = Redirect::to("/").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&auth::session_cookie(None)) {
        res.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(res)
}

async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("../static/console.js"))
}

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("../static/console.css"))
}

async fn not_found() -> PageError {
    PageError::NotFound("there is no such page".into())
}
