//! Batch loading for nested fields, so a page of visits costs a fixed number of queries (one for
//! all tasks, one for all users), not one per row.
use std::collections::HashMap;

use crate::db::{Database, replica::Reads};
use async_graphql::dataloader::Loader;

use super::context::ApiError;
use crate::{
    domain::{Minutes, UserId, VisitId},
    identity::{self, entities::user},
    ledger,
    visits::{
        self,
        entities::{task, visit},
    },
};

pub struct DbLoader {
    pub db: Database,
    /// For other users' public fields, which a replica that has caught up may serve.
    pub reads: Reads,
    /// Fixed when the request (or the socket's operation) starts, so every visit it reads agrees
    /// on what has expired.
    pub deadlines: visits::Deadlines,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserKey(pub UserId);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VisitKey(pub VisitId);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TasksKey(pub VisitId);

/// A user's balance of minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BalanceKey(pub UserId);

/// A member's outstanding minutes (requested and accepted visits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OutstandingKey(pub UserId);

impl Loader<UserKey> for DbLoader {
    type Value = user::Model;
    type Error = ApiError;

    async fn load(&self, keys: &[UserKey]) -> Result<HashMap<UserKey, Self::Value>, Self::Error> {
        let db = self.reads.lag_tolerant().await;
        let users = identity::find_users(db, keys.iter().map(|key| key.0.into()).collect()).await?;
        Ok(users
            .into_iter()
            .map(|user| (UserKey(UserId(user.id)), user))
            .collect())
    }
}

impl Loader<VisitKey> for DbLoader {
    type Value = visit::Model;
    type Error = ApiError;

    async fn load(&self, keys: &[VisitKey]) -> Result<HashMap<VisitKey, Self::Value>, Self::Error> {
        let found = visits::find_visits(
            &self.db,
            keys.iter().map(|key| key.0.into()).collect(),
            &self.deadlines,
        )
        .await?;
        Ok(found
            .into_iter()
            .map(|visit| (VisitKey(visit.id), visit))
            .collect())
    }
}

impl Loader<TasksKey> for DbLoader {
    type Value = Vec<task::Model>;
    type Error = ApiError;

    async fn load(&self, keys: &[TasksKey]) -> Result<HashMap<TasksKey, Self::Value>, Self::Error> {
        let tasks =
            visits::tasks_of(&self.db, keys.iter().map(|key| key.0.into()).collect()).await?;
        let mut by_visit: HashMap<TasksKey, Vec<task::Model>> =
            keys.iter().map(|key| (*key, Vec::new())).collect();
        for task in tasks {
            by_visit
                .entry(TasksKey(VisitId(task.visit_id)))
                .or_default()
                .push(task);
        }
        Ok(by_visit)
    }
}

impl Loader<BalanceKey> for DbLoader {
    type Value = Minutes;
    type Error = ApiError;

    async fn load(
        &self,
        keys: &[BalanceKey],
    ) -> Result<HashMap<BalanceKey, Self::Value>, Self::Error> {
        let balances =
            ledger::balances_of(&self.db, keys.iter().map(|key| key.0).collect()).await?;
        Ok(balances
            .into_iter()
            .map(|(user, minutes)| (BalanceKey(user), minutes))
            .collect())
    }
}

impl Loader<OutstandingKey> for DbLoader {
    type Value = Minutes;
    type Error = ApiError;

    async fn load(
        &self,
        keys: &[OutstandingKey],
    ) -> Result<HashMap<OutstandingKey, Self::Value>, Self::Error> {
        let outstanding = visits::outstanding_minutes_of(
            &self.db,
            keys.iter().map(|key| key.0).collect(),
            &self.deadlines,
        )
        .await?;
        // Members without outstanding visits have no row: they hold zero minutes.
        Ok(keys
            .iter()
            .map(|key| (*key, outstanding.get(&key.0).copied().unwrap_or_default()))
            .collect())
    }
}

/// The request's batch loader (every request gets one: see `request_data::attach`).
pub fn loader<'a>(
    ctx: &async_graphql::Context<'a>,
) -> &'a async_graphql::dataloader::DataLoader<DbLoader> {
    ctx.data_unchecked::<async_graphql::dataloader::DataLoader<DbLoader>>()
}
