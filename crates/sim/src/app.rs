//! The sandbox as one server: shared state, the router that puts every
//! service behind its own fault layer, and the accept loop.
//!
//! The accept loop is hyper's rather than `axum::serve` because a dropped
//! connection (an injected fault) must close the socket with no response at
//! all, which only a service that can fail can express.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::post;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tower::ServiceExt;

use crate::SimConfig;
use crate::clock::{Clock, Moment};
use crate::faults::{self, DropConnection, Faults, Service};
use crate::okta::{self, OktaState, oauth::AssertionKey};
use crate::ratelimit::RateLimiter;

/// Everything the sandbox knows, shared by all requests.
///
/// Each part has its own `std::sync::Mutex`; locks are held for the few
/// lines that read or change state, never across an `.await`.
pub struct AppState {
    pub cfg: SimConfig,
    /// The clock Okta and Graph read; tests may pin it.
    pub clock: Clock,
    pub okta: Mutex<OktaState>,
    pub directory: Mutex<crate::directory::Directory>,
    pub entra: Mutex<crate::entra::Tokens>,
    pub faults: Faults,
    /// Okta's bucket for the Identity Sources API.
    pub okta_rate: RateLimiter,
    /// Okta's separate bucket for `/oauth2/v1/token`.
    pub okta_token_rate: RateLimiter,
    /// Verifies client assertions, when `--okta-public-key` is given.
    pub okta_key: Option<AssertionKey>,
    /// Wakes the import processor when a session changed.
    pub(crate) import_wakeup: Notify,
}

pub type Shared = Arc<AppState>;

/// Locks a part of the state. A panic while holding a lock cannot leave the
/// sandbox's plain data half-written in a way that matters more than staying
/// up, so a poisoned lock is simply taken over.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AppState {
    /// Builds the state from flags; fails when the Okta public key cannot be read.
    pub fn new(cfg: SimConfig) -> std::io::Result<Self> {
        check_durations(&cfg)?;
        let okta_key = cfg.okta_public_key.as_deref().map(AssertionKey::load).transpose()?;
        Ok(Self {
            clock: Clock::start(),
            okta: Mutex::new(OktaState::new(&cfg)),
            directory: Mutex::new(crate::directory::Directory::default()),
            entra: Mutex::new(crate::entra::Tokens::default()),
            faults: Faults::new(cfg.rng_seed),
            okta_rate: RateLimiter::with_window(cfg.rate_limit_per_minute, cfg.rate_limit_window),
            okta_token_rate: RateLimiter::with_window(cfg.rate_limit_per_minute, cfg.rate_limit_window),
            okta_key,
            import_wakeup: Notify::new(),
            cfg,
        })
    }

    /// The Okta state, brought up to `now` (expiries, completed imports).
    pub fn okta_at(&self, now: Moment) -> MutexGuard<'_, OktaState> {
        let mut okta = lock(&self.okta);
        okta.advance(now);
        okta
    }

    pub(crate) fn wake_import_processor(&self) {
        self.import_wakeup.notify_one();
    }

    /// Back to a fresh start: no Okta sessions or users, an empty directory,
    /// no faults, a fresh rate-limit window.
    pub fn reset(&self) {
        lock(&self.okta).reset();
        lock(&self.directory).reset();
        self.faults.reset();
        self.okta_rate.reset();
        self.okta_token_rate.reset();
        self.wake_import_processor();
    }
}

/// The sandbox adds these durations to clock readings; beyond this they
/// would overflow, and no test needs a sandbox that waits a decade.
const LONGEST: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn check_durations(cfg: &SimConfig) -> std::io::Result<()> {
    for (flag, d) in [
        ("--cooldown", cfg.cooldown),
        ("--import-duration", cfg.import_duration),
        ("--session-idle-expiry", cfg.session_idle_expiry),
        ("--token-ttl", cfg.token_ttl),
        ("--rate-limit-window", cfg.rate_limit_window),
    ] {
        if d > LONGEST {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{flag} {} is too long; use at most 10 years", humantime::format_duration(d)),
            ));
        }
    }
    Ok(())
}

/// Every route: each service behind its own fault layer, `/sim/*` behind none.
pub fn router(state: Shared) -> Router {
    let faulty = |routes: Router<Shared>, service: Service| {
        routes.layer(middleware::from_fn_with_state((state.clone(), service), faults::inject))
    };
    let admin = Router::new()
        .route("/sim/reset", post(reset))
        .merge(okta::admin::routes())
        .merge(faults::routes())
        .merge(crate::admin_directory::routes());
    Router::new()
        .merge(faulty(okta::routes(&state), Service::Okta))
        .merge(faulty(crate::graph::routes(), Service::Graph))
        .merge(faulty(crate::entra::routes(), Service::Entra))
        .merge(admin)
        .with_state(state)
}

/// `POST /sim/reset`.
async fn reset(State(state): State<Shared>) -> StatusCode {
    state.reset();
    tracing::info!("sandbox reset");
    StatusCode::NO_CONTENT
}

/// A sandbox running in the background (tests, `xaas sim`).
pub struct RunningSim {
    pub addr: SocketAddr,
    pub state: Shared,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    processor: JoinHandle<()>,
}

impl RunningSim {
    /// `http://127.0.0.1:port`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets in-flight requests finish (up to 5 s), and returns.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        let _ = (&mut self.server).await;
        let _ = (&mut self.processor).await;
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        // A sandbox dropped without `stop` (a failed test) must not linger.
        let _ = self.shutdown.send(true);
    }
}

/// Binds `cfg.listen`, seeds the directory, starts the import processor and
/// serves in the background.
pub async fn spawn(cfg: SimConfig) -> std::io::Result<RunningSim> {
    let state = Arc::new(AppState::new(cfg)?);
    {
        let mut directory = lock(&state.directory);
        crate::seed::seed_from_config(&state.cfg, &mut directory)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    }
    let listener = TcpListener::bind(state.cfg.listen).await?;
    let addr = listener.local_addr()?;
    let (shutdown, stopping) = watch::channel(false);
    let server = tokio::spawn(accept_loop(listener, router(state.clone()), stopping.clone()));
    let processor = tokio::spawn(okta::import::run(state.clone(), stopping));
    Ok(RunningSim { addr, state, shutdown, server, processor })
}

/// Runs the sandbox until Ctrl-C or SIGTERM.
pub async fn serve(cfg: SimConfig) -> std::io::Result<()> {
    let sim = spawn(cfg).await?;
    let c = &sim.state.cfg;
    println!("xaas sim listening on {}", sim.base_url());
    println!(
        "okta identity source {} (cooldown {}, import {}, idle expiry {}, {} requests/min); entra tenant {}",
        c.identity_source_id,
        humantime::format_duration(c.cooldown),
        humantime::format_duration(c.import_duration),
        humantime::format_duration(c.session_idle_expiry),
        c.rate_limit_per_minute,
        c.graph_tenant,
    );
    shutdown_signal().await;
    tracing::info!("stopping the sandbox");
    sim.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// The error that makes hyper close a connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
struct Dropped;

async fn accept_loop(listener: TcpListener, app: Router, mut stopping: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, don't spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopping.changed() => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let app = app.clone();
            async move {
                let response = match app.oneshot(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                if response.extensions().get::<DropConnection>().is_some() {
                    return Err(Dropped);
                }
                Ok::<_, Dropped>(response)
            }
        });
        let builder = auto::Builder::new(TokioExecutor::new());
        let connection =
            graceful.watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await.is_err() {
        tracing::warn!("some connections were still open after 5 s; closing them");
    }
}
