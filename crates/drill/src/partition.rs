//! A real network partition on one machine: packets between the master and
//! the other lab processes are dropped by `iptables`, while clients (which
//! connect from 127.0.0.1) still reach it — the split-brain a Sentinel
//! deployment fears.
//!
//! Why iptables on loopback addresses rather than network namespaces: the
//! lab already runs real processes on loopback; giving each its own
//! 127.0.0.X (the lab's `own_loopback_addrs`, with Redis 7's
//! `bind-source-addr` so outgoing connections leave from it too) makes
//! every packet say who sent it, so a handful of DROP rules partition
//! exactly the pairs we choose, in both directions, without moving
//! processes, building veth pairs or routing. Rules also match the ports,
//! so labs running side by side (tests) never cut each other.
//!
//! Every rule carries a comment unique to this partition
//! (`belay-drill-<pid>-<n>`), and removal deletes exactly the rules with
//! that comment: on [`Partition::heal`], on drop (failure, panic, an
//! interrupted drill whose future is dropped on Ctrl-C), and — for a drill
//! that was SIGKILLed — by [`sweep_stale`] at the next partition, which
//! removes rules whose owning pid is gone.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

/// Prefix of every rule comment the drills add.
pub const TAG_PREFIX: &str = "belay-drill-";

static NEXT: AtomicU32 = AtomicU32::new(1);

/// An active partition. Healed (rules removed) on [`Partition::heal`] or drop.
#[derive(Debug)]
pub struct Partition {
    tag: String,
    healed: bool,
}

/// One process's address: `(host, port)`.
pub type Endpoint = (String, u16);

impl Partition {
    /// Cuts `node` off from every endpoint in `others`: packets between
    /// them are dropped both ways (connections to each side's listening
    /// port, and their replies). Anything else still reaches `node`.
    pub fn isolate(node: &Endpoint, others: &[Endpoint]) -> Result<Partition> {
        Partition::isolate_group(std::slice::from_ref(node), others)
    }

    /// Cuts every node of `group` off from every endpoint in `others`; the
    /// group's nodes still reach each other (and clients reach them all).
    pub fn isolate_group(group: &[Endpoint], others: &[Endpoint]) -> Result<Partition> {
        check_iptables()?;
        sweep_stale();
        for node in group {
            for o in others {
                if o.0 == node.0 {
                    bail!(
                        "cannot partition {}:{} from {}:{}: they share the address {}. A partition \
                         needs every lab process on its own loopback address: let `belay drill` \
                         start its own lab (run it without a lab in --dir)",
                        node.0,
                        node.1,
                        o.0,
                        o.1,
                        node.0
                    );
                }
            }
        }
        let tag = format!(
            "{TAG_PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        // Built before anything is added, so a failure half-way is undone by Drop.
        let p = Partition { tag, healed: false };
        // All rules go in with one `iptables-restore --noflush`: the
        // partition starts at one instant instead of rule by rule.
        let mut batch = String::from("*filter\n");
        for ((nh, np), (oh, op)) in group
            .iter()
            .flat_map(|n| others.iter().map(move |o| (n, o)))
        {
            let np = np.to_string();
            let op = op.to_string();
            // other -> node's port, and node's replies; node -> other's port, and replies.
            for (src, dst, port_flag, port) in [
                (oh, nh, "--dport", &np),
                (nh, oh, "--sport", &np),
                (nh, oh, "--dport", &op),
                (oh, nh, "--sport", &op),
            ] {
                batch.push_str(&format!(
                    "-I OUTPUT 1 -p tcp -s {src} -d {dst} {port_flag} {port} -m comment --comment {} -j DROP\n",
                    p.tag
                ));
            }
        }
        batch.push_str("COMMIT\n");
        restore(&batch)?;
        Ok(p)
    }

    /// The comment on this partition's rules.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Removes the partition's rules.
    pub fn heal(mut self) -> Result<usize> {
        self.healed = true;
        remove_tagged(|t| t == self.tag)
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        if !self.healed {
            let tag = self.tag.clone();
            if let Err(e) = remove_tagged(|t| t == tag) {
                eprintln!(
                    "belay drill: could not remove the partition's iptables rules ({e}); remove them with: \
                     iptables -S OUTPUT | grep {tag}"
                );
            }
        }
    }
}

/// Rules (as `iptables -S` prints them) whose comment starts with the drill
/// prefix; `tag_prefix` narrows it further (`belay-drill-<pid>-`).
pub fn rules_with_tag(tag_prefix: &str) -> Vec<String> {
    list_rules()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| rule_tag(r).is_some_and(|t| t.starts_with(tag_prefix)))
        .collect()
}

/// Removes rules left by drills whose process no longer runs (one killed
/// with SIGKILL could not clean up after itself).
pub fn sweep_stale() {
    let _ = remove_tagged(|tag| {
        let pid = tag
            .strip_prefix(TAG_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok());
        match pid {
            Some(pid) => nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
            None => false,
        }
    });
}

fn check_iptables() -> Result<()> {
    let out = Command::new("iptables")
        .args(["-w", "-S", "OUTPUT"])
        .output()
        .context(
            "the partition drill needs `iptables` (it drops packets between loopback \
             addresses): install it (apt-get install iptables) and run as root",
        )?;
    if !out.status.success() {
        bail!(
            "`iptables -S OUTPUT` failed ({}): the partition drill needs root (or CAP_NET_ADMIN)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn iptables(args: &[&str]) -> Result<()> {
    let out = Command::new("iptables")
        .args(args)
        .output()
        .with_context(|| format!("running iptables {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "iptables {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Applies a batch of rules atomically, keeping every other rule.
fn restore(batch: &str) -> Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running iptables-restore (part of the iptables package)")?;
    child
        .stdin
        .take()
        .context("iptables-restore's stdin")?
        .write_all(batch.as_bytes())
        .context("writing rules to iptables-restore")?;
    let out = child
        .wait_with_output()
        .context("waiting for iptables-restore")?;
    if !out.status.success() {
        bail!(
            "iptables-restore failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn list_rules() -> Result<Vec<String>> {
    let out = Command::new("iptables")
        .args(["-w", "-S", "OUTPUT"])
        .output()
        .context("running iptables -S OUTPUT")?;
    if !out.status.success() {
        bail!(
            "iptables -S OUTPUT failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// The drill comment of a rule line, if it has one.
fn rule_tag(rule: &str) -> Option<&str> {
    let words: Vec<&str> = rule.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "--comment")?;
    let t = words.get(i + 1)?.trim_matches('"');
    t.starts_with(TAG_PREFIX).then_some(t)
}

/// Deletes every OUTPUT rule whose drill comment satisfies `pick`.
fn remove_tagged(pick: impl Fn(&str) -> bool) -> Result<usize> {
    let mut removed = 0;
    let mut failures = Vec::new();
    for rule in list_rules()? {
        let Some(tag) = rule_tag(&rule) else { continue };
        if !pick(tag) {
            continue;
        }
        let Some(spec) = rule.strip_prefix("-A OUTPUT ") else {
            continue;
        };
        let mut args = vec!["-w", "-D", "OUTPUT"];
        args.extend(spec.split_whitespace().map(|w| w.trim_matches('"')));
        match iptables(&args) {
            Ok(()) => removed += 1,
            Err(e) => failures.push(e.to_string()),
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_read_from_rule_lines() {
        let r = "-A OUTPUT -s 127.0.0.3/32 -d 127.0.0.2/32 -p tcp -m tcp --dport 7000 -m comment --comment belay-drill-42-1 -j DROP";
        assert_eq!(rule_tag(r), Some("belay-drill-42-1"));
        assert_eq!(rule_tag("-A OUTPUT -j ACCEPT"), None);
        assert_eq!(
            rule_tag("-A OUTPUT -m comment --comment other -j DROP"),
            None
        );
    }
}
