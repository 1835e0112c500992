//! Keeping the lab's secrets to its owner.
//!
//! The password is in `<dir>/password` and in every config file
//! (`requirepass`, `masterauth`, `sentinel auth-pass`, `sentinel
//! sentinel-pass`). File modes alone cannot keep those private: Sentinel
//! rewrites its config on start and Redis rewrites a data node's on
//! `CONFIG REWRITE` (Sentinel sends one at every failover), and both write
//! the new file as 0644. So the lab's directories are 0700: a file other
//! users may read is still out of their reach when a directory on the way
//! does not let them through.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

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

/// A password kept in a file: its first line, without the line ending
/// (`--password-file`, a Docker or Kubernetes secret).
pub fn read_secret_file(path: &Path) -> Result<String> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read the password file {}", path.display()))?;
    let secret = text.lines().next().unwrap_or_default();
    if secret.is_empty() {
        bail!(
            "the password file {} is empty; put the password on its first line",
            path.display()
        );
    }
    Ok(secret.to_string())
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
