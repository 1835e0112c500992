//! The web app: does it answer HTTP, and does it reach the gateway (its
//! `/healthz` says, in its own words).

use std::time::Duration;

use serde::Serialize;

use super::Target;

/// How long the app may take to answer `/healthz` (it pings the gateway).
const TIMEOUT: Duration = Duration::from_millis(3000);

/// The app's answer to `GET /healthz`.
#[derive(Clone, Debug, Serialize)]
pub struct AppStatus {
    pub addr: String,
    /// `http://host:port/`.
    pub url: String,
    pub pid: Option<u32>,
    /// It answered HTTP at all.
    pub reachable: bool,
    /// The status code of `/healthz` (200: it reaches the gateway).
    pub http_status: Option<u16>,
    /// The first line of its answer, or why there was none.
    pub says: String,
}

/// Asks the app for `/healthz`.
pub(super) async fn ask(t: &Target) -> AppStatus {
    let (reachable, http_status, says) = match crate::http::get(&t.addr, "/healthz", TIMEOUT).await
    {
        Ok(a) => (
            true,
            Some(a.status),
            a.body.lines().next().unwrap_or("").to_string(),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            (false, None, "refuses connections (is it running?)".into())
        }
        Err(e) => (false, None, e.to_string()),
    };
    AppStatus {
        addr: t.addr.clone(),
        url: format!("http://{}/", t.addr),
        pid: t.pid,
        reachable,
        http_status,
        says,
    }
}
