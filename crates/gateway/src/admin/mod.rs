//! The admin HTTP endpoint: what an operator, Prometheus and an
//! orchestrator ask the gateway, served with axum on its own address
//! (`--admin-listen`), never on the clients' port.
//!
//! - `/metrics`: Prometheus (OpenMetrics) text, see `metrics`;
//! - `/topology`: the gateway's view as JSON (what `BELAY TOPOLOGY` says);
//! - `/events`: Server-Sent Events of what the gateway sees and does (see
//!   `activity`), the recent past first;
//! - `/failovers`: the last failovers and episodes of held writes as JSON;
//! - `/healthz`: the process answers; `/readyz`: a master taking writes and
//!   the command table loaded (503 with the reason otherwise);
//! - `/`: the dashboard, a page that shows all of it live;
//! - `POST /switchover`: a planned master change (see `switchover`);
//! - `POST /reload`: read the config again, as SIGHUP does (see `reload`).
//!
//! With `--admin-password` (reloadable) every request needs it (HTTP Basic with any user
//! name, or `Authorization: Bearer <password>`); without one the endpoint
//! only listens on a loopback address.

mod dashboard;
mod reload;
mod switchover;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use futures::Stream;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

use crate::activity::{Activity, ActivityLog};
use crate::admin_log::AdminLog;
use crate::topology::Topology;

/// What the endpoint serves from.
pub struct AdminState {
    pub registry: Registry,
    pub topology: watch::Receiver<Arc<Topology>>,
    pub activity: Arc<ActivityLog>,
    pub admin_log: Arc<AdminLog>,
    /// The settings in effect (the password, what `POST /switchover`
    /// switches) and what `POST /reload` reloads.
    pub config: Arc<crate::reload::LiveConfig>,
    /// Set while a switchover runs: one at a time.
    pub switchover_running: std::sync::atomic::AtomicBool,
}

/// The routes, behind the password check.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/dashboard.js", get(dashboard::script))
        .route("/dashboard.css", get(dashboard::style))
        .route("/metrics", get(metrics))
        .route("/topology", get(topology))
        .route("/events", get(events))
        .route("/failovers", get(failovers))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/switchover", post(switchover::switchover))
        .route("/reload", post(reload::reload))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// Serves `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    let addr = listener.local_addr().ok();
    if let Err(e) = axum::serve(listener, router(state)).await {
        tracing::warn!(?addr, error = %e, "the admin endpoint stopped");
    }
}

/// Whether the admin endpoint may listen on `addr` without a password:
/// only on a loopback address, which only local users reach.
pub fn safe_without_password(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

async fn authorize(State(s): State<Arc<AdminState>>, req: Request, next: Next) -> Response {
    let cfg = s.config.load();
    match &cfg.admin_password {
        Some(password) if !presented(req.headers(), password) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"belay gateway\"")],
            "the belay admin endpoint needs its password (HTTP Basic, any user name, or Authorization: Bearer)\n",
        )
            .into_response(),
        _ => next.run(req).await,
    }
}

/// The request carries `password` (Basic with any user, or Bearer).
fn presented(headers: &HeaderMap, password: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let given = if let Some(token) = value.strip_prefix("Bearer ") {
        token.as_bytes().to_vec()
    } else if let Some(basic) = value.strip_prefix("Basic ") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim()) else {
            return false;
        };
        match decoded.iter().position(|&b| b == b':') {
            Some(i) => decoded[i + 1..].to_vec(),
            None => return false,
        }
    } else {
        return false;
    };
    constant_time_eq(&given, password.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics(State(s): State<Arc<AdminState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::render(&s.registry),
    )
        .into_response()
}

async fn topology(State(s): State<Arc<AdminState>>) -> Response {
    let topo = s.topology.borrow().clone();
    axum::Json(crate::admin_log::view(&topo, &s.admin_log)).into_response()
}

async fn failovers(State(s): State<Arc<AdminState>>) -> Response {
    axum::Json(s.activity.failovers()).into_response()
}

async fn readyz(State(s): State<Arc<AdminState>>) -> Response {
    let topo = s.topology.borrow().clone();
    if topo.is_ready() {
        let master = topo
            .master
            .as_ref()
            .map(|m| m.addr.clone())
            .unwrap_or_default();
        let replicas = topo.eligible_replicas().count();
        (
            StatusCode::OK,
            format!("ready: master {master}, {replicas} replicas serving reads\n"),
        )
            .into_response()
    } else {
        let why = if topo.master.is_none() {
            format!(
                "writes are held: {}",
                topo.write_hold
                    .map_or("no confirmed master", |h| h.describe())
            )
        } else {
            "the master's command table is not loaded yet".to_string()
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response()
    }
}

/// The recent past, then what comes, as Server-Sent Events (`event:` is the
/// kind, `data:` the JSON of an [`Activity`]).
async fn events(
    State(s): State<Arc<AdminState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (past, live) = s.activity.subscribe();
    let past = futures::stream::iter(past.into_iter().map(sse));
    let live = futures::stream::unfold(live, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(a) => sse(a),
            // A slow reader missed some: say so, and go on.
            Err(broadcast::error::RecvError::Lagged(n)) => Ok(Event::default()
                .event("gap")
                .data(format!("{{\"missed\":{n}}}"))),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((event, rx))
    });
    Sse::new(futures::StreamExt::chain(past, live))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn sse(a: Activity) -> Result<Event, Infallible> {
    Ok(Event::default()
        .event(a.kind)
        .data(serde_json::to_string(&a).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_asked_for_in_either_form() {
        let mut h = HeaderMap::new();
        assert!(!presented(&h, "pw"));
        h.insert(header::AUTHORIZATION, "Bearer pw".parse().unwrap());
        assert!(presented(&h, "pw"));
        h.insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(!presented(&h, "pw"));
        let basic = base64::engine::general_purpose::STANDARD.encode("anyone:pw");
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {basic}").parse().unwrap(),
        );
        assert!(presented(&h, "pw"));
        let wrong = base64::engine::general_purpose::STANDARD.encode("anyone:pwx");
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {wrong}").parse().unwrap(),
        );
        assert!(!presented(&h, "pw"));
        assert!(safe_without_password(&"127.0.0.1:7390".parse().unwrap()));
        assert!(!safe_without_password(&"0.0.0.0:7390".parse().unwrap()));
    }
}
