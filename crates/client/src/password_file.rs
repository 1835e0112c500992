//! A password kept in a file (a Docker or Kubernetes secret): its first
//! line, without the line ending. One reader for the gateway and `belay
//! status`, so both say the same thing about a missing or empty file.

use std::path::{Path, PathBuf};

/// Why a password file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
    #[error("cannot read the password file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the password file {path} is empty; put the password on its first line")]
    Empty { path: PathBuf },
}

/// The first line of `path`.
pub fn read_password_file(path: &Path) -> Result<String, PasswordFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| PasswordFileError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let secret = text.lines().next().unwrap_or_default();
    if secret.is_empty() {
        return Err(PasswordFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(secret.to_string())
}
