//! Injected trouble, per service: latency, 429s, 5xx and dropped connections.
//!
//! Real services misbehave; the product must ride it out. Each service (Okta,
//! Graph, Entra) has its own settings, and every request to it draws from one
//! seeded RNG, so a run with the same seed and the same request order sees the
//! same faults. Injected responses look like the real service's: an Okta 429
//! carries `X-Rate-Limit-*` and `E0000047`, a Graph 429 a fractional
//! `Retry-After` and Graph's error body. A dropped connection is closed with no
//! response at all (the server loop in `app` does that when it sees
//! [`DropConnection`]). Faults never touch `/sim/*`.
//!
//! When a fault strikes: a 429 always comes *before* the service acts (that
//! is what a rate limit is). A 5xx or a dropped connection also comes before
//! it acts by default, so an injected failure on a bulk request loads
//! nothing and does not count towards the session's 50. With `after_acting`
//! the service handles the request first (a bulk load is applied and counts)
//! and only the answer is lost, as when a proxy fails after Okta processed a
//! request. Either way the client cannot tell which happened, which is the
//! point: it must count such a request as possibly sent.
//!
//! Control: `GET /sim/faults` shows the settings and what was injected;
//! `PUT`/`POST /sim/faults` with `{"okta": {...}, "graph": {...}, "entra": {...},
//! "seed": 7}` replaces the settings of each service named (others keep
//! theirs); `DELETE /sim/faults` turns every fault off.

use std::sync::Mutex;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::app::Shared;
use crate::okta::OktaError;

/// The services faults can be aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Okta,
    Graph,
    Entra,
}

/// One service's faults. Rates are probabilities per request; they may add up
/// to at most 1 (one draw decides: drop, else 429, else 5xx, else serve).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSpec {
    /// Added to every request.
    pub latency_ms: u64,
    /// Up to this much more, uniformly.
    pub jitter_ms: u64,
    pub rate_429: f64,
    pub rate_5xx: f64,
    pub rate_drop: f64,
    /// 5xx and dropped connections strike after the request was handled
    /// (its effects stay) instead of before.
    pub after_acting: bool,
}

impl FaultSpec {
    fn check(&self, service: &str) -> Result<(), String> {
        for (name, rate) in [("rate_429", self.rate_429), ("rate_5xx", self.rate_5xx), ("rate_drop", self.rate_drop)] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{service}.{name} is {rate}; rates are probabilities between 0 and 1"));
            }
        }
        let total = self.rate_429 + self.rate_5xx + self.rate_drop;
        if total > 1.0 + 1e-9 {
            return Err(format!("{service}: rate_429 + rate_5xx + rate_drop is {total}; they may add up to at most 1"));
        }
        Ok(())
    }
}

/// What was injected into one service so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Injected {
    /// Requests that got added latency.
    pub delayed: u64,
    pub rate_429: u64,
    pub rate_5xx: u64,
    pub dropped: u64,
    /// 5xx and drops that struck after the request was handled.
    pub after_acting: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PerService<T> {
    pub okta: T,
    pub graph: T,
    pub entra: T,
}

impl<T> PerService<T> {
    fn get_mut(&mut self, s: Service) -> &mut T {
        match s {
            Service::Okta => &mut self.okta,
            Service::Graph => &mut self.graph,
            Service::Entra => &mut self.entra,
        }
    }
}

/// The body of `PUT`/`POST /sim/faults`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultUpdate {
    pub okta: Option<FaultSpec>,
    pub graph: Option<FaultSpec>,
    pub entra: Option<FaultSpec>,
    /// Restarts the RNG, for a reproducible sequence of faults.
    pub seed: Option<u64>,
}

/// The body of `GET /sim/faults`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultsView {
    pub okta: FaultSpec,
    pub graph: FaultSpec,
    pub entra: FaultSpec,
    pub injected: PerService<Injected>,
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Serve,
    TooManyRequests,
    ServerError,
    Drop,
}

#[derive(Debug)]
struct Inner {
    specs: PerService<FaultSpec>,
    injected: PerService<Injected>,
    rng: ChaCha8Rng,
}

/// The fault settings and counters, shared by every request.
#[derive(Debug)]
pub struct Faults {
    seed: u64,
    inner: Mutex<Inner>,
}

impl Faults {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            inner: Mutex::new(Inner {
                specs: PerService::default(),
                injected: PerService::default(),
                rng: ChaCha8Rng::seed_from_u64(seed),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// No faults, counters at zero, the RNG back at its starting seed.
    pub fn reset(&self) {
        *self.lock() = Inner {
            specs: PerService::default(),
            injected: PerService::default(),
            rng: ChaCha8Rng::seed_from_u64(self.seed),
        };
    }

    pub fn update(&self, update: &FaultUpdate) -> Result<(), String> {
        for (name, spec) in [("okta", &update.okta), ("graph", &update.graph), ("entra", &update.entra)] {
            if let Some(spec) = spec {
                spec.check(name)?;
            }
        }
        let mut inner = self.lock();
        for (service, spec) in
            [(Service::Okta, update.okta), (Service::Graph, update.graph), (Service::Entra, update.entra)]
        {
            if let Some(spec) = spec {
                *inner.specs.get_mut(service) = spec;
            }
        }
        if let Some(seed) = update.seed {
            inner.rng = ChaCha8Rng::seed_from_u64(seed);
        }
        Ok(())
    }

    pub fn view(&self) -> FaultsView {
        let inner = self.lock();
        FaultsView {
            okta: inner.specs.okta,
            graph: inner.specs.graph,
            entra: inner.specs.entra,
            injected: inner.injected,
        }
    }

    /// Draws the fate of one request to `service`: how long to wait, then what to do.
    pub fn draw(&self, service: Service) -> (Duration, Verdict) {
        let (delay, verdict, _) = self.draw_timed(service);
        (delay, verdict)
    }

    /// As [`Faults::draw`], and whether a 5xx or drop strikes after the
    /// request was handled.
    pub fn draw_timed(&self, service: Service) -> (Duration, Verdict, bool) {
        let mut inner = self.lock();
        let spec = *inner.specs.get_mut(service);
        let jitter = if spec.jitter_ms > 0 { inner.rng.random_range(0..=spec.jitter_ms) } else { 0 };
        let delay = Duration::from_millis(spec.latency_ms.saturating_add(jitter));
        let roll: f64 = inner.rng.random();
        let verdict = if roll < spec.rate_drop {
            Verdict::Drop
        } else if roll < spec.rate_drop + spec.rate_429 {
            Verdict::TooManyRequests
        } else if roll < spec.rate_drop + spec.rate_429 + spec.rate_5xx {
            Verdict::ServerError
        } else {
            Verdict::Serve
        };
        let counts = inner.injected.get_mut(service);
        counts.delayed += u64::from(!delay.is_zero());
        match verdict {
            Verdict::Serve => {}
            Verdict::TooManyRequests => counts.rate_429 += 1,
            Verdict::ServerError => counts.rate_5xx += 1,
            Verdict::Drop => counts.dropped += 1,
        }
        let after = spec.after_acting && matches!(verdict, Verdict::ServerError | Verdict::Drop);
        counts.after_acting += u64::from(after);
        (delay, verdict, after)
    }
}

/// Put on a response to make the server close the connection instead of
/// sending it.
#[derive(Debug, Clone, Copy)]
pub struct DropConnection;

/// The middleware in front of each service's routes.
pub async fn inject(State((state, service)): State<(Shared, Service)>, req: Request, next: Next) -> Response {
    // A service's router may carry its own `/sim/...` controls; those are never faulted.
    if req.uri().path().starts_with("/sim/") {
        return next.run(req).await;
    }
    let (delay, verdict, after_acting) = state.faults.draw_timed(service);
    let req_ids = crate::graph::RequestIds::from_headers(req.headers());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if after_acting {
        // The service acts; its answer is then lost.
        let _served = next.run(req).await;
        return match verdict {
            Verdict::Drop => dropped(),
            _ => server_error(&state, service, req_ids),
        };
    }
    match verdict {
        Verdict::Serve => next.run(req).await,
        Verdict::Drop => dropped(),
        Verdict::TooManyRequests => too_many_requests(&state, service),
        Verdict::ServerError => server_error(&state, service, req_ids),
    }
}

/// A response the server loop turns into a closed connection.
fn dropped() -> Response {
    let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
    response.extensions_mut().insert(DropConnection);
    response
}

fn too_many_requests(state: &Shared, service: Service) -> Response {
    match service {
        Service::Okta => okta_injected(state, OktaError::rate_limited(), true),
        // The throttling sample of Graph's docs, with its extra innerError fields.
        Service::Graph => {
            let body = serde_json::json!({"error": {
                "code": "TooManyRequests",
                "message": "Please retry again later.",
                "innerError": {
                    "code": "429",
                    "date": crate::graph::inner_error_date(),
                    "message": "Please retry after",
                    "request-id": uuid::Uuid::new_v4().to_string(),
                    "status": "429",
                },
            }});
            with_retry_after((StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response())
        }
        // The sandbox's approximation of a throttled Entra token endpoint.
        Service::Entra => with_retry_after(entra_error(
            StatusCode::TOO_MANY_REQUESTS,
            90055,
            "The request was throttled. Retry after the Retry-After period.",
        )),
    }
}

/// An injected Okta answer: Okta's body and, as on every Okta answer, the
/// `X-Rate-Limit-*` headers (with nothing remaining on a 429).
fn okta_injected(state: &Shared, error: OktaError, exhausted: bool) -> Response {
    let mut standing = state.okta_rate.peek(Instant::now());
    if exhausted {
        standing.remaining = 0;
    }
    let mut response = error.into_response();
    standing.apply(response.headers_mut());
    // An injected fault is not the sandbox refusing by Okta's rules.
    response.extensions_mut().remove::<crate::okta::error::Refusal>();
    response
}

fn server_error(state: &Shared, service: Service, ids: crate::graph::RequestIds) -> Response {
    match service {
        Service::Okta => okta_injected(state, OktaError::internal(), false),
        Service::Graph => with_retry_after(
            crate::graph::GraphError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "serviceNotAvailable",
                "Service is temporarily unavailable. Please retry later.",
            )
            .into_response(&ids),
        ),
        Service::Entra => {
            entra_error(StatusCode::SERVICE_UNAVAILABLE, 90033, "A transient error has occurred. Please try again.")
        }
    }
}

/// Entra's token error, as the token endpoint itself writes it.
fn entra_error(status: StatusCode, code: u32, text: &str) -> Response {
    crate::entra::TokenError::new(status, "temporarily_unavailable", code, text)
        .into_response(uuid::Uuid::new_v4().to_string())
}

/// Graph sends fractional seconds (e.g. `0.2`); so does the sandbox.
fn with_retry_after(mut response: Response) -> Response {
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("0.2"));
    response
}

/// `/sim/faults`.
pub fn routes() -> Router<Shared> {
    Router::new().route("/sim/faults", get(show).put(set).post(set).delete(clear))
}

async fn show(State(state): State<Shared>) -> Json<FaultsView> {
    Json(state.faults.view())
}

async fn set(State(state): State<Shared>, Json(update): Json<FaultUpdate>) -> Response {
    match state.faults.update(&update) {
        Ok(()) => Json(state.faults.view()).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Json(serde_json::json!({"error": e}))).into_response(),
    }
}

async fn clear(State(state): State<Shared>) -> Json<FaultsView> {
    state.faults.reset();
    Json(state.faults.view())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rate_429: f64, rate_5xx: f64, rate_drop: f64) -> FaultSpec {
        FaultSpec { rate_429, rate_5xx, rate_drop, ..Default::default() }
    }

    #[test]
    fn rates_must_be_probabilities() {
        let faults = Faults::new(1);
        assert!(faults.update(&FaultUpdate { okta: Some(spec(1.5, 0.0, 0.0)), ..Default::default() }).is_err());
        assert!(faults.update(&FaultUpdate { graph: Some(spec(0.5, 0.5, 0.1)), ..Default::default() }).is_err());
        assert!(faults.update(&FaultUpdate { graph: Some(spec(0.5, 0.5, 0.0)), ..Default::default() }).is_ok());
    }

    #[test]
    fn the_same_seed_gives_the_same_faults_and_they_are_counted() {
        let run = || {
            let faults = Faults::new(9);
            faults.update(&FaultUpdate { okta: Some(spec(0.3, 0.3, 0.2)), ..Default::default() }).unwrap();
            let verdicts: Vec<Verdict> = (0..200).map(|_| faults.draw(Service::Okta).1).collect();
            (verdicts, faults.view().injected)
        };
        let (a, counts) = run();
        assert_eq!(a, run().0);
        let n = |v: Verdict| a.iter().filter(|x| **x == v).count() as u64;
        assert_eq!(counts.okta.rate_429, n(Verdict::TooManyRequests));
        assert_eq!(counts.okta.rate_5xx, n(Verdict::ServerError));
        assert_eq!(counts.okta.dropped, n(Verdict::Drop));
        assert!(n(Verdict::Serve) > 0 && counts.okta.dropped > 0);
        assert_eq!(counts.graph, Injected::default(), "other services untouched");
    }

    #[test]
    fn only_5xx_and_drops_strike_after_acting() {
        let faults = Faults::new(3);
        let spec = FaultSpec { after_acting: true, ..spec(0.3, 0.3, 0.3) };
        faults.update(&FaultUpdate { okta: Some(spec), ..Default::default() }).unwrap();
        let draws: Vec<(Duration, Verdict, bool)> = (0..300).map(|_| faults.draw_timed(Service::Okta)).collect();
        for (_, verdict, after) in &draws {
            assert_eq!(*after, matches!(verdict, Verdict::ServerError | Verdict::Drop), "{verdict:?}");
        }
        let view = faults.view().injected.okta;
        assert_eq!(view.after_acting, view.rate_5xx + view.dropped);
        assert!(view.after_acting > 0);
    }

    #[test]
    fn no_faults_by_default() {
        let faults = Faults::new(1);
        assert!((0..100).all(|_| faults.draw(Service::Graph) == (Duration::ZERO, Verdict::Serve)));
    }
}
