//! How a starting lab tells the outside what it is doing. The library only
//! reports; the CLI draws a spinner on a terminal or prints plain lines,
//! tests usually pass [`NoProgress`].

/// Receives start-up progress. Both methods have empty defaults.
pub trait Progress: Send + Sync {
    /// A discrete step happened ("started redis-1 (pid 123) on 127.0.0.1:6379").
    fn step(&self, _message: &str) {}
    /// Still waiting; `pending` says for what ("redis-2: link down; sentinel-1:
    /// knows 1/2 replicas"). Called on every readiness poll, so implementations
    /// should only redraw or print when it changed.
    fn waiting(&self, _pending: &str) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
