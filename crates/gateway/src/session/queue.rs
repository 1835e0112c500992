//! The session's ordered reply queue: one slot per reply the client is
//! owed (per batch of commands sent together), in the order it sent them.
//! Replies are written strictly in this order, however the commands fanned
//! out to master and replicas.
//!
//! The queue also owns the two facts the client loop steers by: how many
//! slots wait for their turn at the head (once one does, every later
//! command waits too, which is what keeps a session's commands in order
//! across a failover hold, a retry or a change of connection), and whether
//! to stop reading the client (after QUIT, or a SUBSCRIBE that turns the
//! session into a pipe).

use std::collections::VecDeque;
use std::sync::Arc;

use belay_resp::Request;
use bytes::Bytes;
use tokio::sync::oneshot;

use super::job::Job;
use super::state::Lane;
use crate::backend::{NodePool, ReplyResult};

/// One reply the client is owed.
pub enum Slot {
    /// The reply is known.
    Ready(Bytes),
    /// Sent as one batch; the replies of all its commands arrive on `rx`.
    Sent {
        rx: oneshot::Receiver<ReplyResult>,
        /// The node they went to.
        pool: Arc<NodePool>,
        /// The master lane they went on, if they went to the master.
        lane: Option<Lane>,
        jobs: Vec<Job>,
        /// Some reply must be looked at even if none is an error.
        inspect: bool,
        /// When it was written, if its round trip is measured.
        sent_at: Option<tokio::time::Instant>,
    },
    /// Routed but not sendable yet: waits for a master, or for its turn.
    Held(Job),
    /// Parsed but not handled yet, because something before it waits.
    Queued(Request),
    /// A subscribe command: the session becomes a pipe to a subscription
    /// connection once every earlier reply is written.
    Subscribe(Request),
    /// Close once everything before it is written (after `QUIT`'s `+OK`,
    /// or a protocol error).
    Close,
}

impl Slot {
    /// Waits for its turn at the head before anything can happen to it.
    fn waits_for_head(&self) -> bool {
        matches!(self, Slot::Held(_) | Slot::Queued(_) | Slot::Subscribe(_))
    }

    /// The client is not read past it.
    fn ends_reading(&self) -> bool {
        matches!(self, Slot::Close | Slot::Subscribe(_))
    }

    /// Commands it stands for (a batch stands for all of its own).
    fn commands(&self) -> usize {
        match self {
            Slot::Sent { jobs, .. } => jobs.len().max(1),
            _ => 1,
        }
    }
}

#[derive(Default)]
pub struct ReplyQueue {
    slots: VecDeque<Slot>,
    /// Slots that wait for their turn at the head.
    waiting: usize,
    /// Commands in the queue (batches count each of theirs), for the
    /// pipeline limit.
    commands: usize,
    /// A QUIT or SUBSCRIBE is queued: read no more from the client.
    stop_reading: bool,
}

impl ReplyQueue {
    pub fn push_back(&mut self, slot: Slot) {
        self.note(&slot);
        self.slots.push_back(slot);
    }

    /// Puts a slot back at the head (the head's replacement).
    pub fn push_front(&mut self, slot: Slot) {
        self.note(&slot);
        self.slots.push_front(slot);
    }

    fn note(&mut self, slot: &Slot) {
        self.waiting += slot.waits_for_head() as usize;
        self.stop_reading |= slot.ends_reading();
        self.commands += slot.commands();
    }

    pub fn pop_front(&mut self) -> Option<Slot> {
        let slot = self.slots.pop_front()?;
        self.waiting -= slot.waits_for_head() as usize;
        self.commands -= slot.commands();
        Some(slot)
    }

    pub fn front(&self) -> Option<&Slot> {
        self.slots.front()
    }

    /// The head's reply receiver, if the head is a sent batch.
    pub fn head_receiver(&mut self) -> Option<&mut oneshot::Receiver<ReplyResult>> {
        match self.slots.front_mut() {
            Some(Slot::Sent { rx, .. }) => Some(rx),
            _ => None,
        }
    }

    /// Takes every slot out, leaving the queue empty (to put back with
    /// [`ReplyQueue::append`] once slots before them are queued).
    pub fn take_all(&mut self) -> ReplyQueue {
        let stop_reading = self.stop_reading;
        let mut taken = std::mem::take(self);
        self.stop_reading = stop_reading;
        taken.stop_reading = false;
        taken
    }

    /// Puts `later` back behind what is queued now.
    pub fn append(&mut self, mut later: ReplyQueue) {
        while let Some(slot) = later.pop_front() {
            self.push_back(slot);
        }
    }

    /// Something waits for its turn: later commands must wait too.
    pub fn has_waiting(&self) -> bool {
        self.waiting > 0
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Commands queued, batches counted by their commands.
    pub fn commands(&self) -> usize {
        self.commands
    }

    pub fn stops_reading(&self) -> bool {
        self.stop_reading
    }

    /// Reading may go on (after a subscription ended).
    pub fn resume_reading(&mut self) {
        self.stop_reading = self.slots.iter().any(Slot::ends_reading);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Request {
        Request::from_args(s.split(' '))
    }

    #[test]
    fn the_queue_keeps_its_own_books() {
        let mut q = ReplyQueue::default();
        q.push_back(Slot::Ready(Bytes::from_static(b"+OK\r\n")));
        assert!(!q.has_waiting());
        q.push_back(Slot::Queued(req("GET k")));
        assert!(q.has_waiting());
        q.push_back(Slot::Close);
        assert!(q.stops_reading());
        assert_eq!(q.commands(), 3);
        assert!(matches!(q.pop_front(), Some(Slot::Ready(_))));
        let Some(Slot::Queued(r)) = q.pop_front() else {
            panic!("the queued request is next")
        };
        assert!(!q.has_waiting());
        // Handled at the head, it comes back as the head's replacement.
        q.push_front(Slot::Queued(r));
        assert!(q.has_waiting());
        assert!(matches!(q.front(), Some(Slot::Queued(_))));
        q.pop_front();
        q.pop_front();
        assert!(q.is_empty());
        assert_eq!(q.commands(), 0);
        q.resume_reading();
        assert!(!q.stops_reading());
    }
}
