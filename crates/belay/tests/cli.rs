//! `belay up` / `status` / `down` as a user runs them: the real binary,
//! real redis-server and redis-sentinel processes, free ports, a temp state
//! dir. Every test guards its processes: the `Cli` child is killed on drop
//! and anything still running under the temp dir is SIGKILLed (see
//! `Sandbox`), so a failing test leaves no orphan.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use belay_lab::testing::{kill_processes_under, pid_alive, processes_under};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const PASSWORD: &str = "cli-test-pw";

/// A temp state dir and a block of free ports; on drop, kills whatever
/// still runs in it.
struct Sandbox {
    dir: tempfile::TempDir,
    port: u16,
}

impl Sandbox {
    fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
            port: belay_lab::reserve_block(8),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("lab")
    }

    /// `belay <sub>` with this sandbox's dir, ports and fast timers.
    fn belay(&self, sub: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_belay"));
        cmd.arg(sub).arg("--dir").arg(self.state_dir());
        for (k, _) in std::env::vars() {
            if k.starts_with("BELAY_") {
                cmd.env_remove(k);
            }
        }
        if sub == "up" {
            let p = self.port;
            cmd.args(["--port", &p.to_string()])
                .args(["--sentinel-port", &(p + 3).to_string()])
                .args(["--gateway-port", &(p + 6).to_string()])
                .args(["--password", PASSWORD])
                .args(["--down-after-ms", "1000", "--failover-timeout-ms", "4000"])
                .args(["--ready-timeout", "45"]);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn recorded_pids(&self) -> Vec<u32> {
        let text = std::fs::read_to_string(self.state_dir().join("lab.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["processes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["pid"].as_u64().map(|x| x as u32))
            .collect()
    }

    fn assert_no_orphans(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !processes_under(self.dir.path()).is_empty() {
            assert!(
                Instant::now() < deadline,
                "left behind: {:?}",
                processes_under(self.dir.path())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        kill_processes_under(self.dir.path());
    }
}

/// A running `belay` whose stderr lines are collected by a thread; killed
/// on drop.
struct Cli {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Cli {
    fn spawn(mut cmd: Command) -> Cli {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Cli {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for an output line containing `needle`.
    fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line containing {needle:?} within {timeout:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Waits for exit; returns the exit code and all output.
    fn wait(&mut self, timeout: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "belay did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // The reader threads end at EOF.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        (status.code(), self.seen.join("\n"))
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(mut cmd: Command) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn up_detach_status_down() {
    let sb = Sandbox::new();
    let mut up = sb.belay("up");
    up.arg("--detach");
    let (code, out, err) = run(up);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let gw = sb.port + 6;
    assert!(out.contains("belay lab is ready"), "{out}");
    assert!(
        out.contains(&format!("redis-cli -p {gw} -a {PASSWORD}")),
        "{out}"
    );
    assert!(out.contains("belay down --dir"), "{out}");
    let pids = sb.recorded_pids();
    assert_eq!(pids.len(), 7, "3 data nodes, 3 Sentinels, the gateway");
    assert!(pids.iter().all(|&p| pid_alive(p)));

    let (code, out, err) = run(sb.belay("status"));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(&format!(
            "healthy: 1 master (127.0.0.1:{}), 2 linked replicas, 3/3 Sentinels agreeing",
            sb.port
        )),
        "{out}"
    );
    assert!(out.contains("answers PING"), "{out}");

    // A secret loosened by hand is called out, with the fix; restored, it is not.
    {
        use std::os::unix::fs::PermissionsExt;
        let chmod = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        let state = sb.state_dir();
        let s1 = state.join("sentinel-1");
        let conf = s1.join("sentinel.conf");
        chmod(sb.dir.path(), 0o755);
        chmod(&state, 0o755);
        chmod(&s1, 0o755);
        chmod(&conf, 0o644);
        let (code, out, _) = run(sb.belay("status"));
        assert_eq!(code, Some(1), "{out}");
        let canon = std::fs::canonicalize(&s1).unwrap();
        assert!(
            out.contains(&format!("{}/sentinel.conf holds", canon.display())),
            "{out}"
        );
        assert!(out.contains("requirepass"), "{out}");
        assert!(
            out.contains(&format!("chmod 700 {};", canon.display())),
            "{out}"
        );
        assert!(out.contains("chmod 600"), "{out}");
        chmod(&s1, 0o700);
        chmod(&state, 0o700);
        let (code, out, _) = run(sb.belay("status"));
        assert_eq!(code, Some(0), "{out}");
        assert!(!out.contains("can read it"), "{out}");
    }

    let mut json = sb.belay("status");
    json.arg("--json");
    let (code, out, _) = run(json);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["masters"], 1);
    assert_eq!(v["linked_replicas"], 2);
    assert_eq!(v["sentinels_agreeing"], 3);
    assert_eq!(v["healthy"], true);

    // Without the state dir, from the Sentinels alone.
    let mut by_sentinel = Command::new(env!("CARGO_BIN_EXE_belay"));
    by_sentinel
        .args(["status", "--password", PASSWORD])
        .args(["--sentinel", &format!("127.0.0.1:{}", sb.port + 3)])
        .args(["--sentinel", &format!("127.0.0.1:{}", sb.port + 4)]);
    let (code, out, err) = run(by_sentinel);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("2 linked replicas"), "{out}");

    let mut again = sb.belay("up");
    again.arg("--detach");
    let (code, _, err) = run(again);
    assert_eq!(code, Some(1));
    assert!(err.contains("a lab is already running"), "{err}");
    assert!(
        pids.iter().all(|&p| pid_alive(p)),
        "a refused `up` must not touch the lab"
    );

    let (code, out, err) = run(sb.belay("down"));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("is down"), "{out}");
    for pid in pids {
        assert!(!pid_alive(pid), "pid {pid} survived `belay down`");
    }
    assert!(!sb.state_dir().join("lab.json").exists());
    sb.assert_no_orphans();

    let (code, _, err) = run(sb.belay("status"));
    assert_eq!(code, Some(1));
    assert!(err.contains("no lab in"), "{err}");
}

#[test]
fn up_with_the_app_prints_its_url_status_shows_it_and_down_stops_it_first() {
    let sb = Sandbox::new();
    let app_port = sb.port + 7;
    let mut up = sb.belay("up");
    up.args(["--detach", "--app", "--app-port", &app_port.to_string()]);
    let (code, out, err) = run(up);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let url = format!("http://127.0.0.1:{app_port}/");
    assert!(out.contains(&format!("web app:   {url}")), "{out}");
    assert_eq!(sb.recorded_pids().len(), 8, "the app is in lab.json");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let page = rt
        .block_on(belay_lab::http::get(
            &format!("127.0.0.1:{app_port}"),
            "/",
            Duration::from_secs(10),
        ))
        .unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.header("x-served-by")
            .is_some_and(|s| s.ends_with(" replica")),
        "{:?}",
        page.headers
    );

    let (code, out, _) = run(sb.belay("status"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("WEB APP"), "{out}");
    assert!(out.contains(&format!("{url}  pid")), "{out}");
    assert!(out.contains("answers HTTP; ok: the gateway at"), "{out}");
    let mut json = sb.belay("status");
    json.arg("--json");
    let (_, out, _) = run(json);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["app"]["http_status"], 200, "{out}");

    let (code, out, err) = run(sb.belay("down"));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.lines()
            .next()
            .unwrap_or("")
            .starts_with("stopped app (pid"),
        "the app stops first:\n{out}"
    );
    sb.assert_no_orphans();

    let mut no_gateway = sb.belay("up");
    no_gateway.args(["--app", "--no-gateway"]);
    let (code, _, err) = run(no_gateway);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn foreground_up_stops_everything_on_ctrl_c() {
    let sb = Sandbox::new();
    let mut up = sb.belay("up");
    up.arg("--no-gateway");
    let mut cli = Cli::spawn(up);
    cli.wait_for_line("stop:      Ctrl-C", Duration::from_secs(60));
    let pids = sb.recorded_pids();
    assert_eq!(pids.len(), 6);
    cli.signal(Signal::SIGINT);
    let (code, out) = cli.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("stopped 6 processes"), "{out}");
    for pid in pids {
        assert!(!pid_alive(pid), "pid {pid} survived Ctrl-C");
    }
    assert!(!sb.state_dir().join("lab.json").exists());
    sb.assert_no_orphans();
}

#[test]
fn ctrl_c_during_start_up_leaves_no_orphan() {
    let sb = Sandbox::new();
    // Sentinels that never answer keep `up` waiting.
    let sleeper = script(sb.dir.path(), "silent-sentinel", "exec sleep 600");
    let mut up = sb.belay("up");
    up.arg("--no-gateway").arg("--redis-sentinel").arg(&sleeper);
    let mut cli = Cli::spawn(up);
    cli.wait_for_line("waiting for: sentinel-1", Duration::from_secs(60));
    assert!(!processes_under(sb.dir.path()).is_empty());
    cli.signal(Signal::SIGINT);
    let (code, out) = cli.wait(Duration::from_secs(30));
    assert_eq!(code, Some(130), "{out}");
    assert!(out.contains("interrupted during start-up"), "{out}");
    sb.assert_no_orphans();
    assert!(!sb.state_dir().join("lab.json").exists());
}

#[test]
fn missing_redis_binary_says_what_to_install() {
    let sb = Sandbox::new();
    let mut up = sb.belay("up");
    up.args(["--redis-server", "/nonexistent/redis-server"]);
    let (code, _, err) = run(up);
    assert_eq!(code, Some(1));
    assert!(err.contains("/nonexistent/redis-server"), "{err}");
    assert!(
        err.contains("apt-get install redis-server redis-sentinel"),
        "{err}"
    );
    assert!(err.contains("--redis-server PATH"), "{err}");

    let mut up = sb.belay("up");
    up.args(["--redis-sentinel", "no-such-redis-sentinel-binary"]);
    let (code, _, err) = run(up);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("no executable `no-such-redis-sentinel-binary` on PATH"),
        "{err}"
    );
    assert!(err.contains("--redis-sentinel PATH"), "{err}");
    sb.assert_no_orphans();
}

#[test]
fn busy_port_is_named_with_the_flag_to_move() {
    let sb = Sandbox::new();
    let _taken = std::net::TcpListener::bind(("127.0.0.1", sb.port + 1)).unwrap();
    let (code, _, err) = run(sb.belay("up"));
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "port {} on 127.0.0.1 (for redis-2) is already in use",
            sb.port + 1
        )),
        "{err}"
    );
    assert!(err.contains("--port"), "{err}");
    assert!(err.contains("Nothing was started"), "{err}");
    assert!(!sb.state_dir().join("lab.json").exists());
    sb.assert_no_orphans();
}

#[test]
fn child_exiting_at_start_is_named_with_its_log() {
    let sb = Sandbox::new();
    // A bad config directive: redis-server refuses to start.
    let mut up = sb.belay("up");
    up.args(["--no-gateway", "--x-redis-config", "no-such-directive 1"]);
    let (code, _, err) = run(up);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("exited during start-up (exit code 1)"),
        "{err}"
    );
    assert!(
        err.contains("no-such-directive"),
        "the log tail is shown: {err}"
    );
    assert!(err.contains("everything else was stopped"), "{err}");
    sb.assert_no_orphans();

    // A "redis-server" that prints something and exits.
    let broken = script(
        sb.dir.path(),
        "broken-redis",
        "echo 'boom: cannot start'; exit 3",
    );
    let mut up = sb.belay("up");
    up.arg("--no-gateway").arg("--redis-server").arg(&broken);
    let (code, _, err) = run(up);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("exited during start-up (exit code 3)"),
        "{err}"
    );
    assert!(err.contains("boom: cannot start"), "{err}");
    assert!(!sb.state_dir().join("lab.json").exists());
    sb.assert_no_orphans();
}

#[test]
fn down_without_a_lab_is_harmless() {
    let sb = Sandbox::new();
    let (code, out, _) = run(sb.belay("down"));
    assert_eq!(code, Some(0));
    assert!(out.contains("nothing to stop"), "{out}");
}

/// `belay status --sentinel` against a deployment belay did not configure —
/// the seed note's layout, built by hand ([`SeedDeployment`]): data nodes
/// with `requirepass` + `masterauth`, one Sentinel with `sentinel
/// auth-pass` and no password of its own. The deployment kills and reaps
/// its processes when dropped.
#[test]
fn status_reads_the_seed_notes_deployment() {
    use belay_lab::{SeedDeployment, SeedSpec};
    let dir = tempfile::tempdir().unwrap();
    // Current-thread: the children are tied to this (the test's) thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seed = rt
        .block_on(SeedDeployment::start(
            &dir.path().join("seed"),
            SeedSpec {
                password: "seed-pw".into(),
                ..SeedSpec::default()
            },
        ))
        .expect("the seed deployment starts");
    let sentinel = seed.sentinel_addrs()[0].clone();
    let status = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_belay"));
        for (k, _) in std::env::vars() {
            if k.starts_with("BELAY_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(["status", "--sentinel", &sentinel]).args(extra);
        run(cmd)
    };

    let (code, out, err) = status(&["--password", "seed-pw"]);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(&format!(
            "healthy: 1 master ({}), 1 linked replica, 1/1 Sentinels agreeing",
            seed.master_addr()
        )),
        "{out}"
    );
    assert!(out.contains(&seed.replica_addrs()[0]), "{out}");
    assert!(out.contains(&sentinel), "{out}");
    assert!(!out.contains("PROBLEMS"), "{out}");

    let file = dir.path().join("pw");
    std::fs::write(&file, "seed-pw\n").unwrap();
    let (code, out, _) = status(&["--password-file", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");

    // A wrong password: the node's own words, on the node's line.
    let (code, out, _) = status(&["--password", "wrong"]);
    assert_eq!(code, Some(1), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains(&format!("node {} ", seed.master_addr())))
        .unwrap_or_else(|| panic!("no line about the master:\n{out}"));
    assert!(line.contains("rejected AUTH"), "{line}");
    assert!(
        line.contains("WRONGPASS invalid username-password pair"),
        "{line}"
    );

    // A Sentinel password for a Sentinel that has none: its own words, and the fix.
    let (code, out, _) = status(&["--password", "seed-pw", "--sentinel-password", "x"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("called without any password configured"),
        "{out}"
    );
    assert!(out.contains("leave out --sentinel-password"), "{out}");

    let (code, _, err) = status(&["--sentinel-username", "u"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--sentinel-username needs a password"),
        "{err}"
    );
    drop(seed);
    assert!(processes_under(dir.path()).is_empty());
}

/// `INFO server` of `addr` (a data node or a Sentinel of a sandbox lab).
fn info_server(addr: &str) -> belay_client::Info {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = belay_client::Connection::connect(
            addr,
            Some(&belay_client::Auth::password(PASSWORD)),
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        c.info("server").await.expect("INFO server")
    })
}

/// The lab's `programs` in lab.json.
fn recorded_programs(sb: &Sandbox) -> serde_json::Value {
    let text = std::fs::read_to_string(sb.state_dir().join("lab.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["spec"]["programs"].clone()
}

/// A `PATH` like this process's without the directories that hold any of
/// `hide`, plus `extra` first.
fn path_without(hide: &[&str], extra: &Path) -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kept = std::env::split_paths(&path).filter(|d| !hide.iter().any(|h| d.join(h).exists()));
    std::env::join_paths(std::iter::once(extra.to_path_buf()).chain(kept)).unwrap()
}

fn valkey_server() -> PathBuf {
    belay_lab::process::find_on_path(Path::new("valkey-server"))
        .expect("valkey-server on PATH: run scripts/setup --valkey")
}

#[test]
fn up_with_the_valkey_server_status_and_down() {
    let sb = Sandbox::new();
    let mut up = sb.belay("up");
    up.args(["--server", "valkey", "--detach"]);
    let (code, out, err) = run(up);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    // Chosen although redis-server is on PATH too (CI installs both).
    assert!(out.contains("server:    "), "{out}");
    assert!(out.contains("valkey-server"), "{out}");
    let master = format!("127.0.0.1:{}", sb.port);
    let sentinel = format!("127.0.0.1:{}", sb.port + 3);
    for addr in [&master, &sentinel] {
        let info = info_server(addr);
        assert_eq!(info.get("server_name"), Some("valkey"), "{addr}: {info:?}");
    }
    assert_eq!(
        info_server(&sentinel).get("server_mode"),
        Some("sentinel"),
        "the Sentinels are Valkey's, in Sentinel mode (Valkey says server_mode, Redis redis_mode)"
    );

    let (code, out, err) = run(sb.belay("status"));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(&format!(
            "healthy: 1 master ({master}), 2 linked replicas, 3/3 Sentinels agreeing"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("answers PING; writes to {master}")),
        "the gateway found the Valkey master: {out}"
    );

    let pids = sb.recorded_pids();
    let (code, out, err) = run(sb.belay("down"));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    for pid in pids {
        assert!(!pid_alive(pid), "pid {pid} survived `belay down`");
    }
    sb.assert_no_orphans();
}

/// Without redis-server on PATH, `auto` runs Valkey; without a
/// valkey-sentinel program, the Sentinels are `valkey-server --sentinel`.
#[test]
fn auto_runs_valkey_without_redis_and_its_sentinels_in_server_mode() {
    let sb = Sandbox::new();
    let bin = sb.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(valkey_server(), bin.join("valkey-server")).unwrap();
    let mut up = sb.belay("up");
    up.args(["--detach", "--no-gateway"]).env(
        "PATH",
        path_without(&["redis-server", "valkey-sentinel"], &bin),
    );
    let (code, out, err) = run(up);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let server = bin.join("valkey-server");
    assert_eq!(
        recorded_programs(&sb),
        serde_json::json!({
            "server": server,
            "sentinel": {"server-mode": server},
        })
    );
    assert!(
        out.contains(&format!("(Sentinels: {} --sentinel)", server.display())),
        "{out}"
    );
    let sentinel = format!("127.0.0.1:{}", sb.port + 3);
    let info = info_server(&sentinel);
    assert_eq!(info.get("server_name"), Some("valkey"), "{info:?}");
    assert_eq!(info.get("server_mode"), Some("sentinel"), "{info:?}");

    let (code, out, _) = run(sb.belay("status"));
    assert_eq!(code, Some(0), "{out}");
    let (code, out, err) = run(sb.belay("down"));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    sb.assert_no_orphans();
}

/// `belay up --zones a,b,c --gateway-zone c --read-from zone-replica`: the
/// table shows each node's zone, the gateway knows them (`BELAY TOPOLOGY`,
/// `belay status`), and its reads go to the replica of its zone (redis-3).
#[test]
fn up_with_zones_gives_the_gateway_each_nodes_zone() {
    let sb = Sandbox::new();
    let mut up = sb.belay("up");
    up.args(["--detach", "--zones", "a,b,c", "--gateway-zone", "c"])
        .args(["--read-from", "zone-replica"]);
    let (code, out, err) = run(up);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let line_of = |name: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in\n{out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert!(out.contains("ZONE"), "{out}");
    for (name, zone) in [
        ("redis-1", "a"),
        ("redis-2", "b"),
        ("redis-3", "c"),
        ("gateway", "c"),
    ] {
        assert_eq!(line_of(name)[2], zone, "{name} in\n{out}");
    }
    let home = format!("127.0.0.1:{}", sb.port + 2);
    let gateway = format!("127.0.0.1:{}", sb.port + 6);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = belay_client::Connection::connect(
            &gateway,
            Some(&belay_client::Auth::password(PASSWORD)),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let topo: serde_json::Value = serde_json::from_str(
            &c.call_ok(&["BELAY", "TOPOLOGY"])
                .await
                .unwrap()
                .to_text()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(topo["gateway_zone"], "c", "{topo}");
        assert_eq!(topo["master_zone"], "a", "{topo}");
        for i in 0..50 {
            c.send(&["GET", "k"]).await.unwrap();
            c.send(&["BELAY", "WHERE"]).await.unwrap();
            c.read_value().await.unwrap();
            let at = c.read_value().await.unwrap().to_text().unwrap();
            assert_eq!(at, format!("{home} replica"), "read {i}");
        }
    });

    let (code, out, err) = run(sb.belay("status"));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("ZONE (gateway: c)"), "{out}");
    let row = out
        .lines()
        .find(|l| l.trim_start().starts_with(&home))
        .unwrap_or_else(|| panic!("no {home} row in\n{out}"));
    assert!(row.contains(" c ") && row.contains(" ms"), "{row}");

    let (code, out, err) = run(sb.belay("down"));
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    sb.assert_no_orphans();
}
