//! The routes. HTML for people, a little JSON for scripts (`bench/app-drill`
//! loads pages and publishes through it):
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the newest stories |
//! | `GET /stories/new` | the form |
//! | `POST /stories` | publish (form), answer with the story as read back |
//! | `GET /stories` | the newest stories (where a browser is after publishing) |
//! | `GET /stories/{id}` | a story (counts a view) |
//! | `GET /api/stories` | the newest stories as JSON |
//! | `POST /api/stories` | publish (JSON `{"title", "body", "id"?}`) |
//! | `GET /api/stories/{id}` | a story as JSON (counts no view) |
//! | `GET /healthz` | 200 when the gateway answers `PING` |
//!
//! Every answer that read Redis names the node that served it in an
//! `X-Served-By` header (`<host:port> master|replica`, the gateway's words).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Json, Router};
use serde::Deserialize;

use crate::pages::{self, Origin};
use crate::served::Node;
use crate::store::{self, Draft, Failure, Store};
use crate::views::Views;

/// Stories on the front page.
const FRONT_PAGE: usize = 30;
const MAX_TITLE: usize = 200;
const MAX_BODY: usize = 20_000;

/// What every handler shares.
pub struct App {
    pub store: Store,
    pub views: Views,
    pub gateway: String,
}

type Shared = State<Arc<App>>;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(front))
        .route("/stories/new", get(new_form))
        // GET too: the address a browser shows after publishing.
        .route("/stories", get(front).post(publish_form))
        .route("/stories/{id}", get(story))
        .route("/api/stories", get(api_front).post(api_publish))
        .route("/api/stories/{id}", get(api_story))
        .route("/healthz", get(healthz))
        .fallback(nowhere)
        .with_state(app)
}

/// A response with the headers every page gets.
fn respond(status: StatusCode, by: Option<&Node>, kind: &'static str, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(v) = by.and_then(|n| HeaderValue::from_str(&n.header()).ok()) {
        h.insert("x-served-by", v);
    }
    r
}

fn html(status: StatusCode, by: Option<&Node>, body: String) -> Response {
    respond(status, by, "text/html; charset=utf-8", body)
}

fn json(status: StatusCode, by: Option<&Node>, value: serde_json::Value) -> Response {
    respond(status, by, "application/json", value.to_string())
}

/// The status and headline for a failure.
fn status_of(f: &Failure) -> (StatusCode, &'static str) {
    match f {
        Failure::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Redis cannot be reached right now",
        ),
        Failure::Refused(_) => (StatusCode::BAD_GATEWAY, "Redis refused"),
        Failure::Broken(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Something is wrong"),
    }
}

fn error_page(app: &App, f: &Failure) -> Response {
    let (status, headline) = status_of(f);
    tracing::warn!("{status}: {f}");
    let origin = Origin {
        by: None,
        took: None,
        gateway: &app.gateway,
    };
    html(
        status,
        None,
        pages::error(headline, &f.to_string(), &origin),
    )
}

fn error_json(f: &Failure) -> Response {
    let (status, _) = status_of(f);
    tracing::warn!("{status}: {f}");
    json(status, None, serde_json::json!({ "error": f.to_string() }))
}

async fn front(State(app): Shared) -> Response {
    match app.store.front_page(FRONT_PAGE).await {
        Ok(s) => {
            let origin = Origin {
                by: s.by.as_ref(),
                took: Some(s.took),
                gateway: &app.gateway,
            };
            html(
                StatusCode::OK,
                s.by.as_ref(),
                pages::front(&s.value, &origin),
            )
        }
        Err(f) => error_page(&app, &f),
    }
}

async fn story(State(app): Shared, Path(id): Path<String>) -> Response {
    if !store::valid_id(&id) {
        return nowhere_page(&app);
    }
    match app.store.story(&id).await {
        Ok(s) => {
            let origin = Origin {
                by: s.by.as_ref(),
                took: Some(s.took),
                gateway: &app.gateway,
            };
            match &s.value {
                Some(story) => {
                    app.views.count(&id);
                    html(
                        StatusCode::OK,
                        s.by.as_ref(),
                        pages::story(story, None, &origin),
                    )
                }
                None => html(
                    StatusCode::NOT_FOUND,
                    s.by.as_ref(),
                    pages::not_found(&id, &origin),
                ),
            }
        }
        Err(f) => error_page(&app, &f),
    }
}

async fn new_form(State(app): Shared) -> Response {
    let page = pages::form(&store::new_id(), "", "", None, &app.gateway);
    html(StatusCode::OK, None, page)
}

/// A story as sent: from the form or as JSON. Missing fields are empty, so
/// that the answer says what is missing.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DraftIn {
    id: Option<String>,
    title: String,
    body: String,
}

impl DraftIn {
    /// The draft, or what is wrong with it.
    fn check(&self) -> Result<Draft, String> {
        let title = self.title.trim();
        let id = match self.id.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(id) if !store::valid_id(id) => {
                return Err("the story id must be 1 to 32 of a-z, 0-9 and '-'".into())
            }
            Some(id) => id.to_string(),
            None => store::new_id(),
        };
        if title.is_empty() {
            return Err("a story needs a title".into());
        }
        if title.chars().count() > MAX_TITLE {
            return Err(format!("a title has at most {MAX_TITLE} characters"));
        }
        if title.contains(['\t', '\n', '\r']) {
            return Err("a title is one line".into());
        }
        if self.body.chars().count() > MAX_BODY {
            return Err(format!("a story has at most {MAX_BODY} characters"));
        }
        Ok(Draft {
            id,
            title: title.to_string(),
            body: self.body.replace("\r\n", "\n"),
        })
    }
}

async fn publish_form(State(app): Shared, Form(d): Form<DraftIn>) -> Response {
    let draft = match d.check() {
        Ok(draft) => draft,
        Err(why) => {
            let id =
                d.id.clone()
                    .filter(|i| store::valid_id(i))
                    .unwrap_or_else(store::new_id);
            let page = pages::form(&id, &d.title, &d.body, Some(&why), &app.gateway);
            return html(StatusCode::BAD_REQUEST, None, page);
        }
    };
    match app.store.publish(&draft).await {
        Ok(p) => {
            let by = p.read_back_from.clone();
            let origin = Origin {
                by: by.as_ref(),
                took: Some(std::time::Duration::from_millis(p.took_ms)),
                gateway: &app.gateway,
            };
            let page = pages::story(&p.story, Some(&p), &origin);
            let mut r = html(StatusCode::CREATED, by.as_ref(), page);
            if let Ok(v) = HeaderValue::from_str(&format!("/stories/{}", p.story.id)) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Err(f) => error_page(&app, &f),
    }
}

async fn api_front(State(app): Shared) -> Response {
    match app.store.front_page(FRONT_PAGE).await {
        Ok(s) => json(
            StatusCode::OK,
            s.by.as_ref(),
            serde_json::json!({
                "stories": s.value.headlines,
                "total": s.value.total,
                "served_by": s.by,
            }),
        ),
        Err(f) => error_json(&f),
    }
}

async fn api_story(State(app): Shared, Path(id): Path<String>) -> Response {
    if !store::valid_id(&id) {
        return json(
            StatusCode::NOT_FOUND,
            None,
            serde_json::json!({ "error": "no such story id" }),
        );
    }
    match app.store.story(&id).await {
        Ok(s) => {
            let status = if s.value.is_some() {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            json(
                status,
                s.by.as_ref(),
                serde_json::json!({ "story": s.value, "served_by": s.by }),
            )
        }
        Err(f) => error_json(&f),
    }
}

async fn api_publish(State(app): Shared, Json(d): Json<DraftIn>) -> Response {
    let draft = match d.check() {
        Ok(draft) => draft,
        Err(why) => {
            return json(
                StatusCode::BAD_REQUEST,
                None,
                serde_json::json!({ "error": why }),
            )
        }
    };
    match app.store.publish(&draft).await {
        Ok(p) => json(
            StatusCode::CREATED,
            p.read_back_from.as_ref(),
            serde_json::to_value(&p).unwrap_or_default(),
        ),
        Err(f) => error_json(&f),
    }
}

async fn healthz(State(app): Shared) -> Response {
    let kind = "text/plain; charset=utf-8";
    match app.store.ping().await {
        Ok(took) => respond(
            StatusCode::OK,
            None,
            kind,
            format!(
                "ok: the gateway at {} answers PING ({:.1} ms)\n",
                app.gateway,
                took.as_secs_f64() * 1000.0
            ),
        ),
        Err(f) => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            kind,
            format!("{f}\n"),
        ),
    }
}

async fn nowhere(State(app): Shared) -> Response {
    nowhere_page(&app)
}

fn nowhere_page(app: &App) -> Response {
    let origin = Origin {
        by: None,
        took: None,
        gateway: &app.gateway,
    };
    html(
        StatusCode::NOT_FOUND,
        None,
        pages::error("No such page", "There is nothing at this address.", &origin),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafts_are_checked_and_get_an_id() {
        let ok = DraftIn {
            id: None,
            title: "  Hello  ".into(),
            body: "a\r\nb".into(),
        }
        .check()
        .unwrap();
        assert_eq!(ok.title, "Hello");
        assert_eq!(ok.body, "a\nb");
        assert!(store::valid_id(&ok.id));
        let no_title = DraftIn::default().check().unwrap_err();
        assert!(no_title.contains("title"), "{no_title}");
        let bad_id = DraftIn {
            id: Some("../x".into()),
            title: "t".into(),
            body: String::new(),
        }
        .check()
        .unwrap_err();
        assert!(bad_id.contains("id"), "{bad_id}");
    }
}
