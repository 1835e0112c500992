//! newsroom: the web server the seed note ends with — "a web server that
//! uses Redis" — built the way a read-heavy site is, on Redis through the
//! belay gateway and nothing else. `belay app` runs it; `belay up --app`
//! starts it next to the lab's gateway.
//!
//! What it shows:
//! - every page says which Redis node served it (`BELAY WHERE`, pipelined
//!   right behind the page's read; footer and `X-Served-By` header), so
//!   reads coming from replicas — and still coming while the master is
//!   paused — can be seen;
//! - publishing a story writes it and reads it back on one connection, so
//!   the gateway's read-your-writes makes the read-back find it although
//!   reads go to replicas;
//! - a story published during a failover is held by the gateway, then
//!   written to the new master: the page comes late, not as an error.
//!
//! Modules, one concept each: [`cli`] (settings), `store` (the app's data
//! in Redis and its connections), `pool` (a connection per publication),
//! `served` (the node a reply came from),
//! `views` (view counts, batched off the page's path), `pages` (HTML),
//! `web` (routes), `clock` (dates without a time-zone database).

pub mod cli;
mod clock;
mod pages;
mod pool;
mod served;
mod store;
mod views;
mod web;

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};

pub use cli::AppArgs;

/// Runs the app until SIGINT or SIGTERM: checks the gateway answers (and
/// takes the password) before listening, so a wrong `--gateway` or password
/// is an error at start, not a page of errors later.
pub async fn run(args: AppArgs) -> Result<()> {
    let settings = args.settings()?;
    let store = store::Store::connect(&settings).await?;
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", settings.listen))?;
    let local = listener.local_addr()?;
    let views = views::Views::start(store.clone(), settings.view_flush);
    let app = Arc::new(web::App {
        store,
        views: views.clone(),
        gateway: settings.gateway.clone(),
    });
    tracing::info!(
        "newsroom listening on http://{local}/ — Redis through the belay gateway at {}",
        settings.gateway
    );
    let mut sigint = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    axum::serve(listener, web::router(app))
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = sigint.recv() => {}
                _ = sigterm.recv() => {}
            }
        })
        .await
        .context("serving HTTP")?;
    views.flush_now().await;
    Ok(())
}
