//! Reads on a streaming replica (`DATABASE_READ_URL`), never at the cost of a caller not seeing
//! their own write.
//!
//! The rule is a read fence: a read may run on the replica once the replica has replayed the
//! primary's WAL up to where it stood after the read began. Whatever the caller committed before
//! asking (on any instance) is below that position, so the replica shows it. The position is
//! asked of the primary once per few milliseconds, by whichever request comes first, and shared
//! with the requests that arrived while that was under way; the replica's replayed position is
//! asked the same way. A replica a little behind is waited for, the whole decision taking at
//! most [`ROUTE_BUDGET`]; one
//! further behind, paused, lagging past `DATABASE_READ_MAX_LAG_MS` or unreachable is skipped at
//! once, and the read runs on the primary.
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prometheus_client::metrics::{counter::Counter, family::Family};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use serde::Serialize;

use super::Database;
use crate::metrics::ServedLabels;

/// How long a read waits for the replica to replay up to its fence before it goes to the
/// primary: about what a streaming replica on a local network trails by under load.
const FENCE_WAIT: Duration = Duration::from_millis(25);
/// The most a read spends deciding where to run, position reads included: a replica (or a
/// primary) slow to tell its position sends the read to the primary rather than holding it, and
/// the reads queued behind a slow position read give up with it.
const ROUTE_BUDGET: Duration = Duration::from_millis(50);
/// How long the watch waits for either server's answer before it calls the replica down.
const WATCH_ANSWER: Duration = Duration::from_millis(500);
/// Between two looks at the replica's replayed position while a read waits.
const REPLAY_POLL: Duration = Duration::from_millis(2);
/// How often the replica's state and lag are measured.
pub const WATCH_EVERY: Duration = Duration::from_millis(100);
/// How far back the primary's positions are remembered, to turn a replayed position into lag.
const LAG_HISTORY: Duration = Duration::from_secs(30);

/// What the replica is doing, as last measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ReplicaState {
    /// Not measured yet: reads go to the primary until it is.
    Starting,
    /// Replaying, within `DATABASE_READ_MAX_LAG_MS`: reads may go to it.
    Streaming,
    /// Replay paused (`pg_wal_replay_pause()`): what it shows grows no newer.
    Paused,
    /// Further behind than `DATABASE_READ_MAX_LAG_MS`.
    Lagging,
    /// Not answering.
    Down,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaReport {
    pub state: ReplicaState,
    /// How long ago the primary stood where the replica has replayed to (0: caught up).
    pub lag_ms: Option<u64>,
}

/// What the instance knows of its replica, shared by every pool that reads through it.
pub struct ReplicaWatch {
    max_lag: Duration,
    fence: SharedReading,
    replay: SharedReading,
    status: Mutex<Status>,
}

struct Status {
    state: ReplicaState,
    lag: Option<Duration>,
    /// The primary's positions, newest last, with when they were read.
    history: VecDeque<(Instant, i64)>,
}

impl ReplicaWatch {
    pub fn new(max_lag: Duration) -> Arc<Self> {
        Arc::new(Self {
            max_lag,
            fence: SharedReading::default(),
            replay: SharedReading::default(),
            status: Mutex::new(Status {
                state: ReplicaState::Starting,
                lag: None,
                history: VecDeque::new(),
            }),
        })
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn report(&self) -> ReplicaReport {
        let status = self.status();
        ReplicaReport {
            state: status.state,
            lag_ms: status
                .lag
                .map(|lag| u64::try_from(lag.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    fn mark_down(&self) {
        let mut status = self.status();
        status.state = ReplicaState::Down;
        status.lag = None;
    }

    /// Measures the replica once: its state, its replayed position, its lag behind `primary`.
    pub async fn watch_once(&self, primary: &Database, replica: &Database) {
        let position = tokio::time::timeout(WATCH_ANSWER, primary_position(primary)).await;
        let standby = tokio::time::timeout(WATCH_ANSWER, replica_position(replica)).await;
        let now = Instant::now();
        let mut status = self.status();
        if let Ok(Ok(position)) = position {
            status.history.push_back((now, position));
            while status
                .history
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > LAG_HISTORY)
            {
                status.history.pop_front();
            }
        }
        let Ok(Ok(Some(standby))) = standby else {
            status.state = ReplicaState::Down;
            status.lag = None;
            return;
        };
        // The first remembered position the replica has not reached: it was the primary's that
        // long ago, so the replica shows the primary as it was at least that long ago.
        let lag = status
            .history
            .iter()
            .find(|(_, position)| *position > standby.replayed)
            .map_or(Duration::ZERO, |(at, _)| now.duration_since(*at));
        status.lag = Some(lag);
        status.state = if standby.paused {
            ReplicaState::Paused
        } else if lag > self.max_lag {
            ReplicaState::Lagging
        } else {
            ReplicaState::Streaming
        };
    }

    /// Whether a read that began at `asked` may run on `replica`: it is streaming and has
    /// replayed up to the primary's position read after `asked`, or does within [`FENCE_WAIT`].
    /// The replica's position is asked afresh each time, never remembered: a standby that
    /// restarts comes back at its last restartpoint, behind where it had replayed before.
    async fn caught_up_since(
        &self,
        asked: Instant,
        primary: &Database,
        replica: &Database,
    ) -> bool {
        if self.status().state != ReplicaState::Streaming {
            return false;
        }
        if cfg!(feature = "danger-no-read-fence") {
            return true;
        }
        let Ok(fence) = self
            .fence
            .read_since(asked, || primary_position(primary))
            .await
        else {
            return false;
        };
        let deadline = asked + FENCE_WAIT;
        let mut since = asked;
        loop {
            let replayed = self
                .replay
                .read_since(since, || async {
                    match replica_position(replica).await {
                        Ok(Some(standby)) => Ok(standby.replayed),
                        Ok(None) => Err(DbErr::Custom("not a standby".into())),
                        Err(error) => Err(error),
                    }
                })
                .await;
            match replayed {
                Ok(replayed) if replayed >= fence => return true,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "replica unreachable; reading from the primary");
                    self.mark_down();
                    return false;
                }
            }
            if Instant::now() + REPLAY_POLL >= deadline {
                return false;
            }
            tokio::time::sleep(REPLAY_POLL).await;
            since = Instant::now();
        }
    }
}

/// One position read at a time, shared: a caller that needs one read after `since` waits for
/// the reading under way and takes the next, unless one began after `since` already.
#[derive(Default)]
struct SharedReading {
    last: tokio::sync::Mutex<Option<(Instant, i64)>>,
}

impl SharedReading {
    async fn read_since<Reading>(
        &self,
        since: Instant,
        read: impl FnOnce() -> Reading,
    ) -> Result<i64, DbErr>
    where
        Reading: Future<Output = Result<i64, DbErr>>,
    {
        let mut last = self.last.lock().await;
        if let Some((began, position)) = *last
            && began >= since
        {
            return Ok(position);
        }
        let began = Instant::now();
        let position = read().await?;
        *last = Some((began, position));
        Ok(position)
    }
}

/// Where lag-tolerant reads run: the replica when it has caught up with the caller, else the
/// primary. Without `DATABASE_READ_URL`, the primary, at no cost.
#[derive(Clone)]
pub struct Reads {
    primary: Database,
    replica: Option<(Database, Arc<ReplicaWatch>)>,
    served: Family<ServedLabels, Counter>,
}

impl Reads {
    pub fn new(
        primary: Database,
        replica: Option<(Database, Arc<ReplicaWatch>)>,
        served: Family<ServedLabels, Counter>,
    ) -> Self {
        Self {
            primary,
            replica,
            served,
        }
    }

    /// The same routing over other connections (a background reader's own).
    pub fn over(&self, primary: Database, replica: Option<Database>) -> Self {
        Self {
            primary,
            replica: replica.zip(self.replica.as_ref().map(|(_, watch)| watch.clone())),
            served: self.served.clone(),
        }
    }

    pub fn watch(&self) -> Option<&Arc<ReplicaWatch>> {
        self.replica.as_ref().map(|(_, watch)| watch)
    }

    /// The connection for a read that may show other people's changes a moment late but must
    /// show the caller's own: call it when the read begins.
    pub async fn lag_tolerant(&self) -> &Database {
        let asked = Instant::now();
        let on_replica = match &self.replica {
            Some((replica, watch)) => tokio::time::timeout_at(
                (asked + ROUTE_BUDGET).into(),
                watch.caught_up_since(asked, &self.primary, replica),
            )
            .await
            .unwrap_or(false),
            None => false,
        };
        let (served_by, database) = match (&self.replica, on_replica) {
            (Some((replica, _)), true) => ("replica", replica),
            _ => ("primary", &self.primary),
        };
        if self.replica.is_some() {
            self.served.get_or_create(&ServedLabels { served_by }).inc();
        }
        database
    }
}

async fn primary_position(primary: &Database) -> Result<i64, DbErr> {
    let row = primary
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            // The insert position, not the write position: it is past every commit record the
            // caller may have been answered for, whatever `synchronous_commit` says.
            "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8 AS position",
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("no WAL position".into()))?;
    row.try_get("", "position")
}

struct Standby {
    replayed: i64,
    paused: bool,
}

/// The replica's replayed position and whether replay is paused; `None` when it is not a standby.
async fn replica_position(replica: &Database) -> Result<Option<Standby>, DbErr> {
    let row = replica
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT pg_is_in_recovery() AS standby, \
             (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8 AS replayed, \
             CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END AS paused",
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("no replay position".into()))?;
    // A standby promoted since still reports the last position it replayed.
    if !row.try_get::<bool>("", "standby")? {
        return Ok(None);
    }
    let replayed: Option<i64> = row.try_get("", "replayed")?;
    let paused: Option<bool> = row.try_get("", "paused")?;
    Ok(replayed.map(|replayed| Standby {
        replayed,
        paused: paused.unwrap_or(false),
    }))
}

/// Whether `replica` answers as a standby: `Some(false)` for a server that is not one (a
/// configuration to refuse), `None` when it cannot be asked now.
pub async fn is_standby(replica: &Database) -> Option<bool> {
    replica_position(replica)
        .await
        .ok()
        .map(|standby| standby.is_some())
}
