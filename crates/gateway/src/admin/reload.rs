//! `POST /reload`: what SIGHUP does, with the outcome as the answer: the
//! settings applied, those that need a restart, or why the new config was
//! refused (the running one is then kept).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::AdminState;
use crate::reload::{ReloadError, Reloaded};

#[derive(serde::Serialize)]
struct Outcome {
    ok: bool,
    #[serde(flatten)]
    reloaded: Option<Reloaded>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub async fn reload(State(s): State<Arc<AdminState>>) -> Response {
    let config = s.config.clone();
    // Reading files (the config, password files) blocks.
    let result = tokio::task::spawn_blocking(move || crate::reload::reload_and_log(&config)).await;
    match result {
        Ok(Ok(reloaded)) => Json(Outcome {
            ok: true,
            reloaded: Some(reloaded),
            error: None,
        })
        .into_response(),
        Ok(Err(e)) => {
            let status = match e {
                ReloadError::NoSource => StatusCode::CONFLICT,
                ReloadError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let outcome = Outcome {
                ok: false,
                reloaded: None,
                error: Some(e.to_string()),
            };
            (status, Json(outcome)).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(Outcome {
                ok: false,
                reloaded: None,
                error: Some(format!("the reload did not finish: {e}")),
            }),
        )
            .into_response(),
    }
}
