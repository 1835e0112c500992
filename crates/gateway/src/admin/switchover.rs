//! `POST /switchover`: the planned master change of `belay switchover`,
//! run by the gateway with its own view of the deployment (its Sentinels,
//! master name and credentials), so an operator or a deploy script needs
//! only the admin endpoint.
//!
//! The body must be JSON (`{}` or `{"to": "host:port"}`): a browser sends
//! that to another origin only after a CORS preflight this endpoint never
//! answers, so a web page cannot make a visitor's browser start one. One
//! switchover at a time; another request meanwhile gets 409.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use belay_client::switchover::Switchover;
use serde::{Deserialize, Serialize};

use super::AdminState;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverRequest {
    /// The replica to promote; Sentinel's choice when absent.
    #[serde(default)]
    pub to: Option<String>,
}

#[derive(Debug, Serialize)]
struct Outcome {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_master: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_master: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    writes_paused_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_master_demoted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Each step as it happened.
    steps: Vec<String>,
}

impl Outcome {
    fn failed(error: String, steps: Vec<String>) -> Outcome {
        Outcome {
            ok: false,
            old_master: None,
            new_master: None,
            writes_paused_ms: None,
            old_master_demoted: None,
            error: Some(error),
            steps,
        }
    }
}

/// Clears `running` however the request ends (also if the client goes
/// away and the handler is dropped half-way).
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

pub async fn switchover(
    State(s): State<Arc<AdminState>>,
    Json(req): Json<SwitchoverRequest>,
) -> Response {
    if s.switchover_running.swap(true, Ordering::AcqRel) {
        return (
            StatusCode::CONFLICT,
            Json(Outcome::failed(
                "a switchover is already running".into(),
                Vec::new(),
            )),
        )
            .into_response();
    }
    let _running = Running(&s.switchover_running);
    // The deployment as the gateway knows it now (a reload may have
    // changed the Sentinels or the passwords).
    let cfg = s.config.load();
    let mut plan = Switchover::new(&cfg.master_name, cfg.sentinels.clone());
    plan.tls = cfg.backend_tls_client.clone();
    plan.sentinel_auth = cfg.sentinel_auth();
    plan.node_auth = cfg.node_auth();
    plan.to = req.to;
    let steps = Mutex::new(Vec::new());
    let tell = |step: &str| {
        tracing::info!("switchover: {step}");
        if let Ok(mut s) = steps.lock() {
            s.push(step.to_string());
        }
    };
    let result = plan.run(&tell).await;
    let steps = steps.into_inner().unwrap_or_default();
    match result {
        Ok(r) => Json(Outcome {
            ok: true,
            old_master: Some(r.old_master),
            new_master: Some(r.new_master),
            writes_paused_ms: Some(r.writes_paused.as_millis() as u64),
            old_master_demoted: Some(r.old_master_demoted),
            error: None,
            steps,
        })
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "switchover failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(Outcome::failed(e.to_string(), steps)),
            )
                .into_response()
        }
    }
}
