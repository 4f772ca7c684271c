//! Every task an instance runs beside serving requests, started in one place so start-up reads as a
//! table of contents and shutdown stops them all.
use std::{sync::Arc, time::Duration};

use tokio::task::JoinSet;

use crate::state::AppState;

pub struct BackgroundTasks {
    tasks: JoinSet<()>,
}

impl BackgroundTasks {
    pub fn start(state: &Arc<AppState>) -> Self {
        let mut tasks = JoinSet::new();
        tasks.spawn(forget_idle_login_throttles(state.clone()));
        tasks.spawn(follow_session_revocations(state.clone()));
        Self { tasks }
    }

    pub async fn stop(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Throttle buckets of addresses that stopped trying would otherwise be kept for good.
async fn forget_idle_login_throttles(state: Arc<AppState>) {
    let mut every_minute = tokio::time::interval(Duration::from_secs(60));
    loop {
        every_minute.tick().await;
        state.identity.throttle.forget_idle();
    }
}

/// Revocations on other instances evict sessions from this one's cache.
async fn follow_session_revocations(state: Arc<AppState>) {
    state.identity.sessions.follow_revocations(&state.db).await;
}
