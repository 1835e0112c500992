//! A real browser for tests: headless Chromium driven through chromedriver
//! (WebDriver), checked by the DOM — element ids, text, attributes — not by
//! pixels. For tests of anything belay serves over HTTP (the web app, a
//! dashboard). Feature `browser` of `belay-lab`, as a dev-dependency:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use belay_lab::testing::browser::{Driver, Missing};
//! let driver = match Driver::start().await {
//!     Ok(d) => d,
//!     Err(e) if e.is::<Missing>() => { eprintln!("skipped: {e}"); return Ok(()) }
//!     Err(e) => return Err(e),
//! };
//! let page = driver.session().await?;              // one headless Chromium
//! page.goto("http://127.0.0.1:8080/").await?;
//! assert_eq!(page.attr("#served-by", "data-role").await?.as_deref(), Some("replica"));
//! page.close().await?;
//! driver.stop()?;                                  // also on drop, panics included
//! # Ok(()) }
//! ```
//!
//! [`Driver::start`] runs `chromedriver` on a free loopback port, in its own
//! process group, tied to the test (`PR_SET_PDEATHSIG`); every Chromium it
//! starts is in that group and uses a profile in the driver's temp dir.
//! [`Driver::stop`] (or dropping the driver) ends the sessions, kills the
//! group, reaps chromedriver and waits until no process of that profile is
//! left. Chromium runs with `--headless=new --no-sandbox --disable-gpu
//! --disable-dev-shm-usage`: tests run as root, without a display, and
//! `/dev/shm` may be small in containers.
//!
//! Programs: `chromedriver` and `chromium` (or `chromium-browser`,
//! `google-chrome`) on `PATH`, or `BELAY_CHROMEDRIVER` / `BELAY_CHROMIUM`.
//! `scripts/setup --for-tests` installs Debian's `chromium` and
//! `chromium-driver`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use fantoccini::{Client, ClientBuilder, Locator};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// How long chromedriver may take to answer its `/status`.
const DRIVER_START: Duration = Duration::from_secs(20);
/// How long a page load may take before WebDriver gives up on it.
const PAGE_LOAD: Duration = Duration::from_secs(60);

/// A program the browser tests need is not installed: skip, saying so.
#[derive(Debug, thiserror::Error)]
#[error("{what} is not installed ({looked}); install it with `scripts/setup --for-tests` (Debian: apt-get install chromium chromium-driver)")]
pub struct Missing {
    pub what: &'static str,
    pub looked: String,
}

/// A running chromedriver; sessions are browsers it started.
pub struct Driver {
    child: Option<Child>,
    port: u16,
    chromium: PathBuf,
    dir: tempfile::TempDir,
    sessions: std::sync::atomic::AtomicUsize,
}

/// One browser (one WebDriver session): a headless Chromium with its own
/// profile.
pub struct Session {
    client: Client,
}

/// Where a program is: `env` if set, else the first of `names` on `PATH`.
fn find(env: &str, names: &[&str], what: &'static str) -> Result<PathBuf, Missing> {
    if let Some(p) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Missing {
                what,
                looked: format!("{env}={} does not exist", p.display()),
            })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(Missing {
        what,
        looked: format!("no {} on PATH, {env} unset", names.join(" or ")),
    })
}

impl Driver {
    /// Starts chromedriver and waits until it answers. Fails with
    /// [`Missing`] (test with `e.is::<Missing>()`) when chromedriver or
    /// Chromium is not installed.
    pub async fn start() -> Result<Driver> {
        let chromedriver = find("BELAY_CHROMEDRIVER", &["chromedriver"], "chromedriver")?;
        let chromium = find(
            "BELAY_CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
            "Chromium",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("belay-browser-")
            .tempdir()
            .context("making the browser's temp dir")?;
        let port = crate::ports::reserve_block(1);
        let log = std::fs::File::create(dir.path().join("chromedriver.log"))?;
        let mut cmd = Command::new(&chromedriver);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let parent = nix::unistd::getpid();
        // SAFETY: prctl and getppid are async-signal-safe syscalls.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Some(Signal::SIGKILL))?;
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::other("the test exited"));
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", chromedriver.display()))?;
        let mut driver = Driver {
            child: Some(child),
            port,
            chromium,
            dir,
            sessions: Default::default(),
        };
        let deadline = Instant::now() + DRIVER_START;
        let addr = format!("127.0.0.1:{port}");
        loop {
            if let Some(Ok(Some(status))) = driver.child.as_mut().map(|c| c.try_wait()) {
                bail!(
                    "chromedriver exited at start ({status}); its log:\n{}",
                    driver.log_tail()
                );
            }
            match crate::http::get(&addr, "/status", Duration::from_secs(2)).await {
                Ok(a) if a.status == 200 && a.body.contains("\"ready\":true") => break,
                _ if Instant::now() > deadline => bail!(
                    "chromedriver did not answer on {addr} within {DRIVER_START:?}; its log:\n{}",
                    driver.log_tail()
                ),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        Ok(driver)
    }

    /// A new headless Chromium, with a profile of its own in the driver's
    /// temp dir.
    pub async fn session(&self) -> Result<Session> {
        let n = self
            .sessions
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let profile = self.dir.path().join(format!("profile-{n}"));
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--window-size=1200,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
            "timeouts": { "pageLoad": PAGE_LOAD.as_millis() as u64, "script": 30_000 },
        });
        let caps = match caps {
            serde_json::Value::Object(m) => m,
            _ => unreachable!("an object"),
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .map_err(|e| {
                anyhow!(
                    "chromedriver could not start Chromium ({e}); its log:\n{}",
                    self.log_tail()
                )
            })?;
        Ok(Session { client })
    }

    /// The last lines of chromedriver's log.
    pub fn log_tail(&self) -> String {
        crate::process::log_tail(&self.dir.path().join("chromedriver.log"), 20)
    }

    /// Stops chromedriver and every browser it started; fails if a browser
    /// process is still there after that.
    pub fn stop(mut self) -> Result<()> {
        self.kill_all();
        let left = self.leftovers();
        if left.is_empty() {
            Ok(())
        } else {
            bail!("browser processes left behind: {left:?}")
        }
    }

    /// Live processes of this driver's browsers (their command line names
    /// its temp dir), chromedriver's own group aside.
    fn leftovers(&self) -> Vec<u32> {
        let mark = self.dir.path().to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| super::pid_alive(pid))
            .filter(|&pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&mark))
                    .unwrap_or(false)
            })
            .collect()
    }

    /// SIGTERM to chromedriver's group (it and every Chromium), SIGKILL
    /// after a grace period, chromedriver reaped; then any browser process
    /// still holding the profile (a crash handler in a session of its own)
    /// is killed too.
    fn kill_all(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = Pid::from_raw(child.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = self.leftovers();
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in left {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The driver's temp dir (profiles, chromedriver's log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.kill_all();
    }
}

impl Session {
    /// The WebDriver client, for what the helpers below do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Loads `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("loading {url}"))
    }

    /// The URL the browser shows.
    pub async fn url(&self) -> Result<String> {
        Ok(self.client.current_url().await?.to_string())
    }

    /// The visible text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> Result<String> {
        let e = self.find(css, "").await?;
        Ok(e.text().await?)
    }

    /// The visible text of every element matching `css`, in page order.
    pub async fn texts(&self, css: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for e in self.client.find_all(Locator::Css(css)).await? {
            out.push(e.text().await?);
        }
        Ok(out)
    }

    /// Attribute `name` of the first element matching `css` (`None`: the
    /// element has no such attribute).
    pub async fn attr(&self, css: &str, name: &str) -> Result<Option<String>> {
        let e = self.find(css, "").await?;
        Ok(e.attr(name).await?)
    }

    /// Whether the first element matching `css` is shown (not `hidden`,
    /// nor inside something hidden).
    pub async fn displayed(&self, css: &str) -> Result<bool> {
        let e = self.find(css, "").await?;
        Ok(e.is_displayed().await?)
    }

    /// True when an element matches `css`.
    pub async fn exists(&self, css: &str) -> Result<bool> {
        Ok(!self.client.find_all(Locator::Css(css)).await?.is_empty())
    }

    /// Replaces the value of the input or textarea matching `css`.
    pub async fn fill(&self, css: &str, value: &str) -> Result<()> {
        let e = self.find(css, "to fill").await?;
        e.clear().await?;
        e.send_keys(value).await?;
        Ok(())
    }

    /// Clicks the element matching `css` (a link or a submit button: the
    /// browser follows it).
    pub async fn click(&self, css: &str) -> Result<()> {
        let e = self.find(css, "to click").await?;
        e.click().await?;
        Ok(())
    }

    /// Waits until an element matches `css`.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Result<()> {
        let found = self
            .client
            .wait()
            .at_most(timeout)
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(_) => Ok(()),
            Err(e) => bail!(
                "waited {timeout:?} for {css} on {}: {e}",
                self.where_am_i().await
            ),
        }
    }

    /// Ends the session: Chromium quits.
    pub async fn close(self) -> Result<()> {
        self.client.close().await.context("closing the browser")
    }

    /// The first element matching `css`, or an error naming the page.
    async fn find(&self, css: &str, purpose: &str) -> Result<fantoccini::elements::Element> {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => Ok(e),
            Err(e) => bail!(
                "no {css}{} on {}: {e}",
                if purpose.is_empty() {
                    String::new()
                } else {
                    format!(" {purpose}")
                },
                self.where_am_i().await
            ),
        }
    }

    /// The current URL, for error messages.
    async fn where_am_i(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_else(|_| "the page".into())
    }
}
