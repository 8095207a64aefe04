//! A counter of committed changes to runs and their epoch rows, advanced by the
//! live hub for every notification it receives (and by this server's own
//! writes). Read caches remember the count they were filled at and are used only
//! while it has not moved, and only while the hub is listening: notifications
//! that arrive while it is not are lost, so nothing it counts can be trusted then.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct ChangeClock {
    count: AtomicU64,
    listening: AtomicBool,
}

impl ChangeClock {
    /// The current count, or None while changes could go unnoticed (no
    /// LISTEN connection: before the hub starts, or while it reconnects).
    pub fn now(&self) -> Option<u64> {
        // Read `listening` first: a reconnect sets it after advancing the
        // count, so a caller that sees it true also sees that advance.
        self.listening
            .load(Ordering::Acquire)
            .then(|| self.count.load(Ordering::Acquire))
    }

    /// Something changed: every count read before this call is stale.
    pub fn tick(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    /// The hub's LISTEN connection came up (true) or went away (false).
    /// Either way what was counted before may be missing changes.
    pub fn set_listening(&self, listening: bool) {
        self.tick();
        self.listening.store(listening, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_until_listening_and_every_change_moves_the_count() {
        let clock = ChangeClock::default();
        assert_eq!(clock.now(), None);
        clock.set_listening(true);
        let a = clock.now().expect("listening");
        clock.tick();
        let b = clock.now().expect("listening");
        assert_ne!(a, b);
        clock.set_listening(false);
        assert_eq!(clock.now(), None);
        clock.set_listening(true);
        assert_ne!(
            clock.now(),
            Some(b),
            "a reconnect invalidates what came before"
        );
    }
}
