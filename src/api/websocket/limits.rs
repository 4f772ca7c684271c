//! The caps on what one instance holds: sockets and subscriptions, each taken as a [`Slot`]
//! and given back when the slot is dropped.
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use crate::config::LiveSettings;

/// Sockets and subscriptions this instance holds, against the configured caps.
#[derive(Default)]
pub struct LiveLimits {
    sockets: AtomicUsize,
    subscriptions: AtomicUsize,
}

impl LiveLimits {
    pub fn sockets(&self) -> usize {
        self.sockets.load(Ordering::Relaxed)
    }

    pub fn subscriptions(&self) -> usize {
        self.subscriptions.load(Ordering::Relaxed)
    }

    fn take(counter: &AtomicUsize, cap: usize) -> bool {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < cap).then_some(held + 1)
            })
            .is_ok()
    }
}

/// One unit of a cap, given back when dropped.
pub struct Slot {
    limits: Arc<LiveLimits>,
    subscription: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let counter = if self.subscription {
            &self.limits.subscriptions
        } else {
            &self.limits.sockets
        };
        counter.fetch_sub(1, Ordering::AcqRel);
    }
}

impl LiveLimits {
    pub fn slot(self: &Arc<Self>, live: &LiveSettings, subscription: bool) -> Option<Slot> {
        let taken = if subscription {
            Self::take(&self.subscriptions, live.max_subscriptions.get())
        } else {
            Self::take(&self.sockets, live.max_connections.get())
        };
        taken.then(|| Slot {
            limits: self.clone(),
            subscription,
        })
    }
}
