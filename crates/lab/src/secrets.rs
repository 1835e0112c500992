//! Keeping the lab's secrets to its owner, and noticing when they are not.
//!
//! The password is in `<dir>/password` and in every config file
//! (`requirepass`, `masterauth`, `sentinel auth-pass`, `sentinel
//! sentinel-pass`). File modes alone cannot keep those private: Sentinel
//! rewrites its config on start and Redis rewrites a data node's on
//! `CONFIG REWRITE` (Sentinel sends one at every failover), and both write
//! the new file as 0644. So the lab's directories are 0700: a file other
//! users may read is still out of their reach when a directory on the way
//! does not let them through. [`exposed`] checks exactly that, for
//! `belay status`.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Creates `dir` (and missing parents) as 0700, or tightens an existing
/// one to 0700 (a lab started by an older belay left them 0755).
///
/// A shared directory (sticky bit, like `/tmp`) or one owned by another
/// user is left as it is: it is not the lab's to close, and the lab's
/// secrets stay private through the 0700 directories and the 0600 password
/// file inside it.
pub fn private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let meta = fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let mode = meta.permissions().mode();
    let shared = mode & 0o1000 != 0 || Some(meta.uid()) != effective_uid();
    if mode & 0o077 != 0 && !shared {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o7700)).with_context(|| {
            format!(
                "making {} private (chmod 700): it holds config files with the lab's password",
                dir.display()
            )
        })?;
    }
    Ok(())
}

/// This process's effective uid, from `/proc/self/status` (the lab already
/// relies on `/proc`).
fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Writes a file only its owner may read: the password file, and config
/// files (they hold the password; Sentinel and `CONFIG REWRITE` rewrite
/// them, as 0644, which is why their directories are private too).
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // `mode` applies only on creation: tighten an existing file too.
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// A password kept in a file: its first line (the gateway reads its
/// password files the same way).
pub fn read_secret_file(path: &Path) -> Result<String> {
    Ok(belay_client::read_password_file(path)?)
}

/// A file holding a secret that users other than its owner can read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exposure {
    pub file: PathBuf,
    /// What it holds: `requirepass`, `masterauth`, `sentinel auth-pass`,
    /// `sentinel sentinel-pass`, `user ... >password`, or `the password`.
    pub holds: Vec<&'static str>,
    /// Its permission bits (`0o644`).
    pub mode: u32,
    /// Readable by every local user (else: by members of its group).
    pub by_everyone: bool,
}

impl Exposure {
    /// The problem line `belay status` prints: which file, why, the fix.
    pub fn problem(&self) -> String {
        let dir = self.file.parent().unwrap_or(Path::new("/"));
        let who = if self.by_everyone {
            "every local user"
        } else {
            "the members of its group"
        };
        let rewritten = if self.holds.contains(&PASSWORD_FILE) {
            ""
        } else {
            " (Redis and Sentinel rewrite their config files as 0644: the private directory is what lasts)"
        };
        format!(
            "{} holds {} and {who} can read it (mode {:04o}, and every directory above lets them through): \
             chmod 700 {}; chmod 600 {}{rewritten}",
            self.file.display(),
            self.holds.join(", "),
            self.mode,
            shell_word(&dir.display().to_string()),
            shell_word(&self.file.display().to_string()),
        )
    }
}

/// What the password file holds, in [`Exposure::holds`].
const PASSWORD_FILE: &str = "the password";

/// Files of the state dir `dir` that hold a secret and that other users can
/// read in effect: the file's mode grants them read *and* every directory
/// from `/` down to it grants them passage. Looks at `<dir>/password` and
/// at the `*.conf` files in `dir` and in its sub-directories (one per
/// process), whose lines say whether they hold a secret. Files that cannot
/// be read are skipped.
pub fn exposed(dir: &Path) -> Vec<Exposure> {
    let Ok(dir) = fs::canonicalize(dir) else {
        return Vec::new();
    };
    let mut candidates = vec![dir.join("password")];
    let mut dirs = vec![dir.clone()];
    if let Ok(entries) = fs::read_dir(&dir) {
        dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    for d in dirs {
        if let Ok(entries) = fs::read_dir(&d) {
            candidates.extend(
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "conf")),
            );
        }
    }
    candidates.sort();
    candidates
        .into_iter()
        .filter_map(|file| {
            let holds = if file.file_name().is_some_and(|n| n == "password") {
                vec![PASSWORD_FILE]
            } else {
                secrets_in(&fs::read_to_string(&file).ok()?)
            };
            if holds.is_empty() {
                return None;
            }
            let (mode, by_everyone) = readable_by_others(&file)?;
            Some(Exposure {
                file,
                holds,
                mode,
                by_everyone,
            })
        })
        .collect()
}

/// The secret-bearing directives in a redis.conf / sentinel.conf text.
fn secrets_in(text: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    for line in text.lines() {
        let words: Vec<String> = line
            .split_whitespace()
            .take(2)
            .map(str::to_ascii_lowercase)
            .collect();
        let found = match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["requirepass", _] => "requirepass",
            ["masterauth", _] => "masterauth",
            ["sentinel", "auth-pass"] => "sentinel auth-pass",
            ["sentinel", "sentinel-pass"] => "sentinel sentinel-pass",
            ["user", _] if line.contains(" >") => "user ... >password",
            _ => continue,
        };
        if !out.contains(&found) {
            out.push(found);
        }
    }
    out
}

/// `Some((mode, by_everyone))` when users other than the owner can read
/// `file`: its mode lets group or others read, and each directory above it
/// lets that same class through (`x`). For the group, a directory of another
/// group counts through its "others" bits.
fn readable_by_others(file: &Path) -> Option<(u32, bool)> {
    let meta = fs::metadata(file).ok()?;
    let mode = meta.permissions().mode() & 0o7777;
    let mut others = mode & 0o004 != 0;
    let mut group = mode & 0o040 != 0;
    for dir in file.ancestors().skip(1) {
        if !(others || group) {
            return None;
        }
        let d = fs::metadata(dir).ok()?;
        let dmode = d.permissions().mode();
        others &= dmode & 0o001 != 0;
        let group_bit = if d.gid() == meta.gid() { 0o010 } else { 0o001 };
        group &= dmode & group_bit != 0;
    }
    (others || group).then_some((mode, others))
}

/// A path as a shell word (quoted when it needs it).
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn private_dir_creates_and_tightens() {
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("a/b");
        private_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        let old = root.path().join("old");
        fs::create_dir(&old).unwrap();
        chmod(&old, 0o755);
        private_dir(&old).unwrap();
        assert_eq!(mode(&old), 0o700);
        // A shared (sticky) directory is not the lab's to close.
        let shared = root.path().join("shared");
        fs::create_dir(&shared).unwrap();
        chmod(&shared, 0o1777);
        private_dir(&shared).unwrap();
        assert_eq!(mode(&shared), 0o1777);
    }

    #[test]
    fn finds_the_secret_directives() {
        let conf = "port 1\nrequirepass \"x\"\nmasterauth x\n# requirepass y\n\
                    sentinel auth-pass m x\nSENTINEL sentinel-pass x\nsentinel monitor m h 1 2\n\
                    user alice on >pw ~* +@all\n";
        assert_eq!(
            secrets_in(conf),
            vec![
                "requirepass",
                "masterauth",
                "sentinel auth-pass",
                "sentinel sentinel-pass",
                "user ... >password"
            ]
        );
        assert!(secrets_in("port 1\nsentinel monitor m h 1 2\n").is_empty());
    }

    #[test]
    fn a_readable_file_counts_only_when_the_directories_let_others_through() {
        let root = tempfile::tempdir().unwrap();
        chmod(root.path(), 0o755);
        let state = root.path().join("lab");
        let node = state.join("redis-1");
        private_dir(&node).unwrap();
        let conf = node.join("redis.conf");
        fs::write(&conf, "port 1\nrequirepass x\n").unwrap();
        fs::write(node.join("plain.conf"), "port 1\n").unwrap();
        write_private(&state.join("password"), "x\n").unwrap();
        chmod(&conf, 0o644);
        chmod(&node.join("plain.conf"), 0o644);
        // 0644 in a 0700 dir: out of reach.
        assert!(exposed(&state).is_empty());

        chmod(&state, 0o755);
        chmod(&node, 0o755);
        let found = exposed(&state);
        assert_eq!(found.len(), 1, "{found:?}");
        let e = &found[0];
        assert_eq!(e.file, fs::canonicalize(&conf).unwrap());
        assert!(e.by_everyone);
        assert_eq!(e.holds, vec!["requirepass"]);
        let line = e.problem();
        assert!(line.contains("redis.conf holds requirepass"), "{line}");
        assert!(line.contains("mode 0644"), "{line}");
        assert!(
            line.contains(&format!(
                "chmod 700 {}",
                fs::canonicalize(&node).unwrap().display()
            )),
            "{line}"
        );
        assert!(line.contains("chmod 600"), "{line}");

        // Group-only: the directories must let the group through.
        chmod(&conf, 0o640);
        chmod(&node, 0o750);
        let found = exposed(&state);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(!found[0].by_everyone);
        chmod(&node, 0o701);
        assert!(exposed(&state).is_empty(), "the group cannot pass 0701");

        chmod(&node, 0o700);
        chmod(&state.join("password"), 0o644);
        let found = exposed(&state);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].problem().contains("holds the password"));

        chmod(&state, 0o700);
        assert!(exposed(&state).is_empty());
    }

    #[test]
    fn secret_file_is_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        fs::write(&f, "s3cret\nignored\n").unwrap();
        assert_eq!(read_secret_file(&f).unwrap(), "s3cret");
        fs::write(&f, "\n").unwrap();
        let err = read_secret_file(&f).unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
        let err = read_secret_file(&dir.path().join("none"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read the password file"), "{err}");
    }
}
