//! What the gateway has noticed about a node from its own connections, for
//! routing to act on at once (discovery's rounds confirm or clear it), and
//! how many commands it was sent (the metrics' per-node traffic).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Signs of trouble on one node, shared by its pool and connections.
#[derive(Debug, Default)]
pub struct NodeHealth {
    /// A connection owed replies and the node said nothing for the
    /// request timeout: frozen (paused, overloaded) or busy with a slow
    /// command. It gets no new commands until it speaks again; what was
    /// already sent keeps waiting for its reply.
    silent: AtomicBool,
    /// The node answered `BUSY`: a script or function is running and it
    /// refuses everything else until that ends. No new reads go there.
    busy: AtomicBool,
    /// Commands written to the node, counted once per write (not per
    /// command) by the connections' writers.
    commands: AtomicU64,
    /// The node was the master and was replaced: replies it sends from now
    /// on are not trusted as acknowledgements.
    retired: AtomicBool,
}

impl NodeHealth {
    /// May take new commands.
    pub fn is_usable(&self) -> bool {
        !self.silent.load(Ordering::Relaxed) && !self.busy.load(Ordering::Relaxed)
    }

    pub fn is_silent(&self) -> bool {
        self.silent.load(Ordering::Relaxed)
    }

    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }

    /// Records silence or its end; true when that changed.
    pub fn set_silent(&self, silent: bool) -> bool {
        self.silent.swap(silent, Ordering::Relaxed) != silent
    }

    pub fn set_retired(&self) {
        self.retired.store(true, Ordering::Release);
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// `n` more commands were written to the node.
    pub fn count_commands(&self, n: u64) {
        self.commands.fetch_add(n, Ordering::Relaxed);
    }

    /// Commands written to the node so far.
    pub fn commands(&self) -> u64 {
        self.commands.load(Ordering::Relaxed)
    }

    /// Records a `BUSY` reply or a normal answer; true when that changed.
    pub fn set_busy(&self, busy: bool) -> bool {
        self.busy.swap(busy, Ordering::Relaxed) != busy
    }
}
