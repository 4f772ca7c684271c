//! The scenarios, by name. Each returns a [`Verdict`]; the suite checks the books after each.
pub mod bank;
pub mod broker_cluster;
pub mod event_stream;
pub mod late_commit;
pub mod live_subscribers;
pub mod live_updates;
pub mod notifications_replay;
pub mod own_stand;
pub mod pooled;
pub mod postgres_restart;
pub mod races;
pub mod replica;

use crate::{
    harness::{Harness, Verdict},
    instances::SpawnedInstance,
    nats::NatsServer,
};
use bank::BankOptions;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    OverBudgetPair,
    OverBudgetBurst,
    DoubleCompletion,
    CompletionsVsRequest,
    IdempotentRetries,
    MinuteBank,
    EventStream,
    NotificationsReplay,
    LiveUpdates,
    /// Restarts the PostgreSQL cluster, which other users (the tests' databases) share: run only
    /// by name.
    PostgresRestart,
    /// Behind a PgBouncer of its own, in transaction mode. By name only, as the two below: each
    /// deploys a stand of its own (a database, servers, two instances).
    Pooled,
    /// On a three-node NATS cluster of its own.
    BrokerCluster,
    /// Reading from a streaming standby of a primary, both its own.
    Replica,
}

/// What a scenario needs beyond instances that answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Nothing,
    /// Instances and a broker the harness started itself (`--spawn`), to kill and restart them.
    SpawnedInstancesAndBroker,
}

impl Scenario {
    /// What `--scenario all` runs, in order.
    pub const ALL: [Self; 9] = [
        Self::OverBudgetPair,
        Self::OverBudgetBurst,
        Self::DoubleCompletion,
        Self::CompletionsVsRequest,
        Self::IdempotentRetries,
        Self::MinuteBank,
        Self::EventStream,
        Self::NotificationsReplay,
        Self::LiveUpdates,
    ];
    /// Run only when named.
    pub const BY_NAME_ONLY: [Self; 4] = [
        Self::PostgresRestart,
        Self::Pooled,
        Self::BrokerCluster,
        Self::Replica,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::OverBudgetPair => "over-budget-pair",
            Self::OverBudgetBurst => "over-budget-burst",
            Self::DoubleCompletion => "double-completion",
            Self::CompletionsVsRequest => "completions-vs-request",
            Self::IdempotentRetries => "idempotent-retries",
            Self::MinuteBank => "minute-bank",
            Self::EventStream => "event-stream",
            Self::NotificationsReplay => "notifications-replay",
            Self::LiveUpdates => "live-updates",
            Self::PostgresRestart => "postgres-restart",
            Self::Pooled => "pooled",
            Self::BrokerCluster => "broker-cluster",
            Self::Replica => "replica",
        }
    }

    pub fn named(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .chain(Self::BY_NAME_ONLY)
            .find(|scenario| scenario.name() == name)
    }

    pub const fn needs(self) -> Needs {
        match self {
            Self::EventStream
            | Self::PostgresRestart
            | Self::Pooled
            | Self::BrokerCluster
            | Self::Replica => Needs::SpawnedInstancesAndBroker,
            _ => Needs::Nothing,
        }
    }

    pub async fn run(
        self,
        harness: &Harness,
        instances: Option<&mut Vec<SpawnedInstance>>,
        nats: Option<&mut NatsServer>,
        bank: &BankOptions,
    ) -> Verdict {
        match self {
            Self::OverBudgetPair => races::over_budget_pair(harness).await,
            Self::OverBudgetBurst => races::over_budget_burst(harness).await,
            Self::DoubleCompletion => races::double_completion(harness).await,
            Self::CompletionsVsRequest => races::completions_racing_a_request(harness).await,
            Self::IdempotentRetries => races::idempotent_retries(harness).await,
            Self::MinuteBank => bank::minute_bank(harness, instances, bank).await,
            Self::EventStream => match (instances, nats) {
                (Some(instances), Some(nats)) => {
                    event_stream::event_stream(harness, instances, nats, bank).await
                }
                _ => Err(NEEDS_SPAWN.into()),
            },
            Self::NotificationsReplay => {
                notifications_replay::notifications_replay(harness, nats.as_deref(), bank).await
            }
            Self::LiveUpdates => live_updates::live_updates(harness, instances, bank).await,
            Self::Pooled => pooled::pooled(harness, binary_of(instances).as_deref(), bank).await,
            Self::BrokerCluster => {
                broker_cluster::broker_cluster(harness, binary_of(instances).as_deref(), bank).await
            }
            Self::Replica => replica::replica(harness, binary_of(instances).as_deref(), bank).await,
            Self::PostgresRestart => {
                let binary = binary_of(instances);
                postgres_restart::postgres_restart(
                    harness,
                    binary.as_deref(),
                    nats.as_deref(),
                    bank,
                )
                .await
            }
        }
    }
}

/// The binary the harness spawned its instances from, which a scenario's own stand runs too.
fn binary_of(instances: Option<&mut Vec<SpawnedInstance>>) -> Option<std::path::PathBuf> {
    instances
        .as_deref()
        .and_then(|instances| instances.first())
        .map(|instance| instance.binary().to_path_buf())
}

pub const NEEDS_SPAWN: &str = "needs instances and a broker the harness started itself (--spawn)";

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
