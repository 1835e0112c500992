//! newsroom in a real browser (headless Chromium through chromedriver, see
//! `belay_lab::testing::browser`), on a real lab, checked by the DOM: a
//! story written in the form is there on its page and on the front page;
//! with the master paused, a second browser keeps loading pages — every one
//! renders, from a node other than the paused master — while the first
//! publishes another story, which the gateway holds until the failover and
//! which then appears; both stories are there after the old master rejoins.
//!
//! Skipped, saying why, only when chromedriver or Chromium is not installed
//! (`scripts/setup --for-tests` installs them).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use belay_client::Connection;
use belay_lab::testing::app_lab_spec;
use belay_lab::testing::browser::{Driver, Missing, Session};
use belay_lab::{Lab, NoProgress};

/// What a reader's page showed.
#[derive(Debug)]
#[allow(dead_code)] // `url` is for the failure message
struct Seen {
    url: String,
    node: Option<String>,
    role: Option<String>,
    error: Option<String>,
    took: Duration,
    done: Instant,
}

/// Loads `url` and reads where it came from; a page without the footer, or
/// an error page, is recorded as such.
async fn load(page: &Session, url: &str) -> Seen {
    let started = Instant::now();
    let seen = async {
        page.goto(url).await?;
        let error = if page.exists("#error").await? {
            Some(page.text("body").await?)
        } else {
            None
        };
        let (node, role) = if page.exists("#served-by").await? {
            (
                page.attr("#served-by", "data-node").await?,
                page.attr("#served-by", "data-role").await?,
            )
        } else {
            (None, None)
        };
        Ok::<_, anyhow::Error>((node, role, error))
    }
    .await;
    let (node, role, error) = match seen {
        Ok(s) => s,
        Err(e) => (None, None, Some(format!("{e:#}"))),
    };
    Seen {
        url: url.to_string(),
        node,
        role,
        error,
        took: started.elapsed(),
        done: Instant::now(),
    }
}

/// Writes a story in the form (already loaded) and publishes it: the page
/// that comes back, and how long it took to come.
async fn publish(page: &Session, title: &str, body: &str) -> Result<(Duration, Instant)> {
    page.fill("input[name=title]", title).await?;
    page.fill("textarea[name=body]", body).await?;
    let started = Instant::now();
    page.click("#publish").await?;
    page.wait_for("#published", Duration::from_secs(40)).await?;
    Ok((started.elapsed(), Instant::now()))
}

async fn writes_held(lab: &Lab) -> bool {
    let Some(gw) = lab.gateway_addr() else {
        return false;
    };
    let asked = async {
        let mut c = Connection::connect(&gw, Some(&lab.auth()), Duration::from_secs(1)).await?;
        c.call_ok(&["BELAY", "TOPOLOGY"]).await
    }
    .await;
    asked
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["writes_held"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_and_a_writer_in_a_browser_through_a_paused_master() {
    let started = Instant::now();
    let driver = match Driver::start().await {
        Ok(d) => d,
        Err(e) if e.is::<Missing>() => {
            eprintln!("SKIPPED the browser test: {e}");
            return;
        }
        Err(e) => panic!("{e:#}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let belay = Path::new(env!("CARGO_BIN_EXE_belay"));
    let mut lab = Lab::start(app_lab_spec(dir.path(), belay), &NoProgress)
        .await
        .unwrap();
    let url = lab.app_url().unwrap();
    let writer = driver.session().await.unwrap();
    let reader = driver.session().await.unwrap();

    // Write a story; it is on its page, read back on the connection that
    // wrote it, and on the front page.
    writer.goto(&format!("{url}stories/new")).await.unwrap();
    publish(&writer, "A story before the pause", "Written in a browser.")
        .await
        .unwrap();
    assert_eq!(
        writer.text("#story-title").await.unwrap(),
        "A story before the pause"
    );
    assert_eq!(
        writer
            .attr("#published", "data-created")
            .await
            .unwrap()
            .as_deref(),
        Some("true")
    );
    let first_id = writer
        .attr("#story", "data-id")
        .await
        .unwrap()
        .expect("the story names its id");
    reader.goto(&url).await.unwrap();
    let headlines = reader.texts("#headlines li.headline a").await.unwrap();
    assert_eq!(headlines, vec!["A story before the pause"], "front page");
    assert_eq!(
        reader
            .attr("#served-by", "data-role")
            .await
            .unwrap()
            .as_deref(),
        Some("replica")
    );

    // The writer has the form open; then the master is paused.
    writer.goto(&format!("{url}stories/new")).await.unwrap();
    let old = lab.current_master().await.unwrap();
    let old_name = lab.process_by_addr(&old).unwrap().name().to_string();
    lab.pause(&old_name).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !writes_held(&lab).await {
        assert!(Instant::now() < deadline, "the gateway never held writes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // While writes are held: the writer publishes; the reader keeps loading.
    let story_url = format!("{url}stories/{first_id}");
    let publishing = publish(
        &writer,
        "A story written during the failover",
        "Held by the gateway, then written to the new master.",
    );
    let reading = async {
        let mut seen = Vec::new();
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until || seen.len() < 6 {
            let target = if seen.len() % 2 == 0 {
                &url
            } else {
                &story_url
            };
            seen.push(load(&reader, target).await);
        }
        seen
    };
    let (published, mut seen) = tokio::join!(publishing, reading);
    let (waited, appeared) = published.unwrap();
    // Pages kept coming while the story waited for the new master (a page
    // behind the held write would have waited with it).
    let meanwhile = seen.iter().filter(|s| s.done < appeared).count();
    assert!(
        meanwhile >= 2,
        "only {meanwhile} page(s) rendered while the publication was held ({waited:?}): {seen:#?}"
    );
    assert_eq!(
        writer.text("#story-title").await.unwrap(),
        "A story written during the failover"
    );
    let new = lab
        .wait_for_failover(&old, Duration::from_secs(30))
        .await
        .unwrap();
    // A little longer, past the failover.
    for target in [&url, &story_url] {
        seen.push(load(&reader, target).await);
    }

    let bad: Vec<&Seen> = seen
        .iter()
        .filter(|s| {
            s.error.is_some()
                || s.node.as_deref().is_none_or(|n| n.is_empty() || n == old)
                || !matches!(s.role.as_deref(), Some("replica" | "master"))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "pages that did not render, or came from the paused master {old}: {bad:#?}"
    );
    let from_replicas = seen
        .iter()
        .filter(|s| s.role.as_deref() == Some("replica"))
        .count();
    let slowest = seen.iter().map(|s| s.took).max().unwrap_or_default();

    // The old master rejoins; both stories are on the front page.
    lab.resume(&old_name).unwrap();
    lab.wait_until_replica_of(&old_name, &new, Duration::from_secs(30))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        reader.goto(&url).await.unwrap();
        let headlines = reader.texts("#headlines li.headline a").await.unwrap();
        if headlines
            == [
                "A story written during the failover",
                "A story before the pause",
            ]
        {
            break;
        }
        assert!(Instant::now() < deadline, "front page shows {headlines:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reader
        .click("#headlines li.headline:first-child a")
        .await
        .unwrap();
    assert_eq!(
        reader.text("#story-title").await.unwrap(),
        "A story written during the failover"
    );
    reader.goto(&story_url).await.unwrap();
    assert_eq!(
        reader.text("#story-title").await.unwrap(),
        "A story before the pause"
    );

    eprintln!(
        "browser: {} page loads while the master was paused and after, all rendered \
         ({from_replicas} from replicas, none from the paused master; {meanwhile} while the \
         publication was held), slowest {slowest:?}; \
         the story published while writes were held appeared after {waited:?}; \
         the whole test took {:?}",
        seen.len(),
        started.elapsed()
    );
    writer.close().await.unwrap();
    reader.close().await.unwrap();
    driver.stop().unwrap();
    lab.stop(Duration::from_secs(10)).await.unwrap();
}
