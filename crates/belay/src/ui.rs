//! Terminal output shared by the subcommands: start-up progress (a spinner
//! on a terminal, plain lines otherwise), error printing, tables.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use belay_lab::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// Start-up progress for the CLI: a spinner showing what is still awaited
/// when stderr is a terminal; one line per step and per change otherwise
/// (logs, CI, tests).
pub enum CliProgress {
    Spinner(ProgressBar),
    Lines(Mutex<String>),
}

impl CliProgress {
    pub fn new() -> CliProgress {
        if std::io::stderr().is_terminal() {
            let pb = ProgressBar::new_spinner();
            pb.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>3} {wide_msg}")
                    .expect("valid template"),
            );
            pb.enable_steady_tick(Duration::from_millis(100));
            pb.set_message("starting");
            CliProgress::Spinner(pb)
        } else {
            CliProgress::Lines(Mutex::new(String::new()))
        }
    }

    /// Removes the spinner (before printing the final table or an error).
    pub fn finish(&self) {
        if let CliProgress::Spinner(pb) = self {
            pb.finish_and_clear();
        }
    }
}

impl Progress for CliProgress {
    fn step(&self, message: &str) {
        match self {
            CliProgress::Spinner(pb) => pb.println(format!("  {message}")),
            CliProgress::Lines(_) => eprintln!("{message}"),
        }
    }

    fn waiting(&self, pending: &str) {
        match self {
            CliProgress::Spinner(pb) => pb.set_message(format!("waiting for: {pending}")),
            CliProgress::Lines(last) => {
                let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
                if *last != pending {
                    eprintln!("waiting for: {pending}");
                    *last = pending.to_string();
                }
            }
        }
    }
}

/// Prints an error and the chain of what it came from.
pub fn print_error(e: &anyhow::Error) {
    eprintln!("error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}

/// A path as the user would type it: relative to the working dir when inside it.
pub fn show_path(p: &Path) -> String {
    let cwd = std::env::current_dir().ok();
    match cwd.as_deref().and_then(|c| p.strip_prefix(c).ok()) {
        Some(rel) => rel.display().to_string(),
        None => p.display().to_string(),
    }
}

pub use belay_lab::text::table;

/// A table cell for what may be unknown: `-` when it is.
pub fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|x| x.to_string())
        .unwrap_or_else(|| "-".into())
}

/// A table's header row.
pub fn header(columns: &[&str]) -> Vec<String> {
    columns.iter().map(|c| c.to_string()).collect()
}

/// Quotes a word for a shell command line when it needs it.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
