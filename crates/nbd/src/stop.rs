//! Stopping an export that is being served: its accept loops end and every open connection is
//! shut down, so that the last reference to the backend (and the disk's lock) goes with them.
//!
//! Invariant: once [`Stop::begin`] has run, no new connection is registered (an accept that wins
//! the race is closed at once), so waiting for the registry to empty ends every connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How a registered connection is shut down (a `shutdown(2)` of its socket).
type Closer = Box<dyn Fn() + Send>;

/// The stop switch of one export, shared by its accept loops and connection threads.
#[derive(Default)]
pub struct Stop {
    stopped: AtomicBool,
    next: AtomicU64,
    conns: Mutex<HashMap<u64, Closer>>,
    gone: Condvar,
}

impl Stop {
    /// Whether [`Stop::begin`] has run: an accept loop returns when it sees this.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Records an open connection and how to shut it down; `None` once stopping has begun
    /// (the caller closes the connection instead of serving it).
    pub(crate) fn register(&self, close: Closer) -> Option<u64> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_stopped() {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        conns.insert(id, close);
        Some(id)
    }

    /// A connection's thread is done.
    pub(crate) fn unregister(&self, id: u64) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.remove(&id);
        self.gone.notify_all();
    }

    /// Refuses new connections and shuts down the open ones (a request being served finishes;
    /// its connection's thread then ends).
    pub fn begin(&self) {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        self.stopped.store(true, Ordering::SeqCst);
        for close in conns.values() {
            close();
        }
    }

    /// Waits until every connection's thread has ended; false if some are still open after
    /// `limit` (a backend request that does not return).
    pub fn wait(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        while !conns.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            conns = self
                .gone
                .wait_timeout(conns, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}
